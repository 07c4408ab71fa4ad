"""Batched decoding: every result of expand_batch equals expanding that request alone with its seed."""

from __future__ import annotations

import json

import pytest

from tipo import Expander, Request, Sampling
from tipo.errors import ModelError, RequestError

REQUESTS = [
    Request("1girl, forest", length="very_short", output="tags"),
    Request("1boy", length="short"),
    Request("scenery, sky", output="tags", length="long", ban=("cloud",)),
    Request(caption="a cat on a windowsill", output="caption"),
    Request("solo", length="very_short", gen_meta=True),
    Request("dog, grass", caption="a dog runs", length="short"),
    Request("1girl, smile, glasses, long hair, school uniform", output="tags", length="very_short"),
]


def samplings(n: int, max_new: int) -> list[Sampling]:
    """Greedy and sampled, different budgets (so sequences leave at different steps)."""
    return [Sampling(seed=100 + i, max_new_tokens=max_new + 5 * (i % 4), temperature=0.0 if i % 3 == 0 else 0.9)
            for i in range(n)]


def same_as_alone(ex: Expander, reqs, samps, batch_size: int) -> list[str]:
    alone = [ex.expand(r, s).to_dict(timings=False) for r, s in zip(reqs, samps, strict=True)]
    together = [e.to_dict(timings=False) for e in ex.expand_batch(reqs, samps, batch_size=batch_size)]
    assert together == alone
    return [a["provenance"]["stop_reason"] for a in alone]


@pytest.fixture(scope="module")
def builtin():
    with Expander(n_threads=1) as ex:
        yield ex


def test_llama_batched_equals_alone_on_the_builtin_model(builtin):
    reqs = REQUESTS * 2
    reasons = same_as_alone(builtin, reqs, samplings(len(reqs), 32), 3)
    assert "eos" in reasons and "max_new_tokens" in reasons  # sequences leave the batch at different steps


def test_llama_f16_tiny_model_and_forced_tasks(tiny_model):
    with Expander(str(tiny_model.gguf_f16), n_threads=1) as ex:
        reqs = [Request("1girl"), Request("1boy, sky", length="long"), Request(caption="a red car"), Request("x")]
        samps = samplings(4, 24)
        same_as_alone(ex, reqs, samps, 2)
        alone = [ex.expand(r, s, task="tag_to_long").to_dict(timings=False) for r, s in zip(reqs, samps, strict=True)]
        batch = ex.expand_batch(reqs, samps, task="tag_to_long", batch_size=4)
        assert [b.to_dict(timings=False) for b in batch] == alone


def test_transformers_batched_equals_alone(tiny_model, one_torch_thread):
    with Expander(str(tiny_model.hf_dir), backend="hf") as ex:
        reqs = REQUESTS[:5]
        same_as_alone(ex, reqs, samplings(len(reqs), 12), 3)


def test_one_bad_request_does_not_stop_the_others(builtin):
    reqs = [Request("1girl", output="tags", length="very_short"), Request("1boy", output="tags", length="very_short")]
    out = dict(builtin.iter_expand_batch(reqs, [Sampling(seed=1, max_new_tokens=8)], batch_size=2))
    assert isinstance(out[1], RequestError) and "fewer entries" in str(out[1])
    assert out[0].to_dict(timings=False) == builtin.expand(reqs[0], Sampling(seed=1, max_new_tokens=8)).to_dict(
        timings=False)
    with pytest.raises(RequestError, match="batch_size"):
        builtin.expand_batch(reqs, batch_size=0)


def test_batch_engine_is_bounded_and_freed():
    with Expander(n_threads=1) as ex:
        ex.expand_batch(REQUESTS, Sampling(seed=3, max_new_tokens=16), batch_size=4)
        engine = ex._batch_engine
        assert engine is not None and engine.capacity == 4 and engine.n_ctx_seq == 256
        ex.expand_batch(REQUESTS[:2], Sampling(seed=3, max_new_tokens=16), batch_size=2)
        assert ex._batch_engine is engine  # a big enough engine is reused
    assert ex._batch_engine is None


def test_cli_batch_size_gives_the_same_file(tiny_model, tmp_path):
    from tipo.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"tags": f"tag{i}", "length": "very_short"}) + "\n" for i in range(6)))
    outs = []
    for size in (1, 4):
        out = tmp_path / f"out{size}.jsonl"
        assert main(["expand", "--batch", str(src), "--out", str(out), "--model", str(tiny_model.gguf_f16),
                     "--seed", "5", "--threads", "1", "--max-new-tokens", "10", "--batch-size", str(size)]) == 0
        outs.append([json.loads(x) for x in out.read_text().splitlines()[1:]])
    assert outs[0] == outs[1] and len(outs[0]) == 6


def test_closed_expander_refuses(tiny_model):
    ex = Expander(str(tiny_model.gguf_f16), n_threads=1)
    ex.close()
    with pytest.raises(ModelError, match="closed"):
        ex.expand_batch(["1girl"])


def test_eval_runner_batch_size_gives_the_same_outputs(tiny_model, tmp_path):
    from eval.cli import main as eval_main

    prompts = tmp_path / "p.txt"
    prompts.write_text("1girl, forest\nscenery\nsmile, long hair\n1boy\ncat\n")
    outputs = []
    for size in (1, 3):
        out = tmp_path / f"run{size}"
        code = eval_main(["run", "--prompts", str(prompts), "--methods", "tipo", "--model", str(tiny_model.gguf_f16),
                          "--threads", "1", "--max-new-tokens", "12", "--out", str(out), "--quiet",
                          "--batch-size", str(size)])
        assert code == 0
        recs = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
        outputs.append(sorted((r["item"], r["output"]["prompt"], r["seed"]) for r in recs))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 5
