"""Pinned expansions: the same seeds give the same text, on both backends and the built-in model.

``tests/data/pinned_expansions.json`` holds what the decoder produced for several requests x
sampling settings x models (the built-in model with its default known-tags-only decoding, the tiny
seeded model on llama.cpp and on transformers, and the tiny model with known-tags-only on). Any change
to the decode rules, the sampler or the loop that changes a single token fails here. When a change
is meant to change outputs, re-record on purpose and say why in the commit::

    PYTHONPATH=$PWD python3 tests/test_pinned_expansions.py --record

The figures come from llama.cpp's CPU kernels with one thread; a CPU whose kernels round
differently (another SIMD width, AMX or not) can flip a draw that sits on a boundary. The recorded
``system`` line names the CPU features the file was written on; on a machine whose llama.cpp
reports other features, the llama.cpp configurations are skipped with both lines named (the
transformers one still runs), since a difference there would say nothing about tipo's decoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "pinned_expansions.json"

REQUESTS: list[dict] = [
    {"tags": "1girl, forest", "length": "short", "output": "tags"},
    {"tags": "1girl, forest", "length": "very_short", "output": "both"},
    {"caption": "a cat sitting on a sofa", "length": "short", "output": "both"},
    {"tags": "dog, grass", "length": "long", "output": "tags", "ban": ["tree", "sky"], "ban_regex": [".*hair.*"]},
    {"caption": "A quiet harbor at dawn.", "output": "caption"},
    {"tags": "1boy, smile", "length": "very_short", "gen_meta": True, "width": 832, "height": 1216},
]
SAMPLINGS: list[dict] = [
    {"seed": 0},
    {"seed": 1},
    {"seed": 2},
    {"seed": 0, "temperature": 0},
    {"seed": 5, "temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
]
# The built-in model (known-tags-only by default), the tiny model on both backends, and with known-tags-only.
CONFIGS = ("builtin", "tiny-llama", "tiny-hf", "tiny-llama-known")


def _open(config: str, tiny):  # noqa: ANN001, ANN202
    from tipo import Expander

    if config == "builtin":
        return Expander(None, n_threads=1)
    if config == "tiny-llama":
        return Expander(tiny.gguf_f32, n_threads=1)
    if config == "tiny-hf":
        return Expander(tiny.hf_dir, backend="hf", n_threads=1)
    return Expander(tiny.gguf_f32, n_threads=1, known_tags_only=True)


def run_config(config: str, tiny) -> list[dict]:  # noqa: ANN001
    from tipo import Request, Sampling

    out = []
    with _open(config, tiny) as ex:
        for r, req in enumerate(REQUESTS):
            for s, samp in enumerate(SAMPLINGS):
                settings = dict(samp)
                if config != "builtin":
                    settings["max_new_tokens"] = 48
                res = ex.expand(Request(**req), Sampling(**settings))
                out.append({"config": config, "request": r, "sampling": s, "completion": res.completion,
                            "stop_reason": res.provenance.stop_reason,
                            "generated_tokens": res.provenance.generated_tokens, "prompt": res.prompt})
    return out


def _system() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode() if isinstance(info, bytes) else str(info)


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


@pytest.mark.parametrize("config", CONFIGS)
def test_expansions_match_the_pinned_outputs(config, pinned, tiny_model, one_torch_thread):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install 'tipo-prompt[llama]'")
    if config != "tiny-hf" and pinned["system"].strip() != _system().strip():
        pytest.skip(f"pinned on a CPU whose llama.cpp reports {pinned['system'].strip()!r}; this one reports "
                    f"{_system().strip()!r} (other kernels round differently); re-record here to compare")
    want = [case for case in pinned["cases"] if case["config"] == config]
    assert len(want) == len(REQUESTS) * len(SAMPLINGS)
    got = run_config(config, tiny_model)
    for a, b in zip(got, want, strict=True):
        assert a == b, f"{config} request {b['request']} sampling {b['sampling']}"


def main(argv: list[str]) -> int:
    import tempfile

    if argv != ["--record"]:
        print("usage: python tests/test_pinned_expansions.py --record", file=sys.stderr)
        return 2
    import torch

    from models.tiny import build_tiny

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(Path(tmp) / "tiny", seed=0)
        cases = [case for config in CONFIGS for case in run_config(config, tiny)]
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps({"system": _system(), "cases": cases}, indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    print(f"wrote {len(cases)} cases to {DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
