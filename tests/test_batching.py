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


# -- prefill sharing ----------------------------------------------------------------------------
META = dict(rating="general", aspect_ratio=0.7)
SHARED = [  # the same meta and target lines with other tags, identical requests, and one apart
    Request("masterpiece, absurdres, 1girl, forest", length="long", **META),
    Request("masterpiece, absurdres, 1boy, city, night", length="long", **META),
    Request("masterpiece, absurdres, scenery", length="long", output="tags", **META),
    Request("masterpiece, absurdres, 1girl, forest", length="long", **META),
    Request("masterpiece, absurdres, cat", length="short", output="tags", **META),
    Request("1girl, forest", length="very_short"),
]


def prompt_tokens(ex: Expander, reqs) -> int:
    from tipo import plan

    return sum(len(ex.backend.encode(plan(r, table=ex.table).prompt)) for r in reqs)


@pytest.mark.parametrize("fmt", ["f16", "q8_0"])
def test_shared_prefix_logits_are_bit_identical(tiny_model, tmp_path, fmt):
    """A prefix copied from another sequence (and a whole identical prompt) gives, bit for bit,
    the logits of evaluating the prompt alone, also when the rest crosses a 512-token chunk."""
    import numpy as np

    from models.gguf_export import export_hf_to_gguf

    path = tiny_model.gguf_f16 if fmt == "f16" else export_hf_to_gguf(tiny_model.hf_dir, tmp_path / "q8.gguf",
                                                                      outtype="q8_0")
    with Expander(str(path), n_threads=1) as ex:
        backend = ex.backend
        rng = np.random.default_rng(0)
        words = [int(t) for t in rng.integers(3, 300, size=700)]
        a = [1, *words[:319]]
        c = [1, *words[:299], *words[400:660]]  # 300 in common with a, then past position 512
        steps = words[660:664]

        def alone(ids: list[int]) -> list[np.ndarray]:
            return [backend.start(ids).copy(), *(backend.step(t).copy() for t in steps)]

        want_a, want_c = alone(a), alone(c)
        engine = backend.batched(3, 1024)
        try:
            assert engine.sharing == "prefixes"
            assert np.array_equal(engine.forward([(0, 0, a)])[0], want_a[0])
            engine.share(1, 300, 0)
            engine.share(2, len(a) - 1, 0)
            got = engine.forward([(1, 300, c[300:]), (2, len(a) - 1, a[-1:]), (0, len(a), steps[:1])])
            assert np.array_equal(got[0], want_c[0]) and np.array_equal(got[1], want_a[0])
            assert np.array_equal(got[2], want_a[1])
            for k, t in enumerate(steps[:3]):
                got = engine.forward([(1, len(c) + k, [t]), (2, len(a) + k, [t])])
                assert np.array_equal(got[0], want_c[k + 1]) and np.array_equal(got[1], want_a[k + 1])
        finally:
            engine.close()


@pytest.mark.parametrize("batch_size", [3, 12])
def test_llama_shared_prefixes_equal_alone(builtin, batch_size):
    """Identical requests with other seeds and requests sharing meta/target lines, greedy and
    sampled, joining and leaving (12 requests through 3 slots) or all joining at once."""
    reqs = SHARED * 2
    reasons = same_as_alone(builtin, reqs, samplings(len(reqs), 20), batch_size)
    assert "max_new_tokens" in reasons
    stats = builtin.batch_stats
    assert builtin._batch_engine.sharing == "prefixes"
    assert stats.prompt_tokens + stats.shared_tokens == prompt_tokens(builtin, reqs)
    assert stats.shared_tokens > stats.prompt_tokens  # most of every prompt after the first was shared
    builtin.expand_batch(reqs, samplings(len(reqs), 20), batch_size=batch_size, share_prefixes=False)
    assert builtin.batch_stats.shared_tokens == 0


def test_identical_prompts_share_whole_prompts(builtin):
    reqs = [SHARED[0]] * 4
    samps = [Sampling(seed=s, max_new_tokens=12, temperature=t) for s, t in ((1, 0.9), (2, 0.9), (3, 0.0), (1, 0.9))]
    same_as_alone(builtin, reqs, samps, 4)
    n = prompt_tokens(builtin, reqs[:1])
    assert builtin.batch_stats.prompt_tokens == n  # evaluated once; the others start sampling at once


def test_f32_weights_share_nothing(tiny_model):
    with Expander(str(tiny_model.gguf_f32), n_threads=1) as ex:
        ex.expand_batch(SHARED, Sampling(seed=1, max_new_tokens=4), batch_size=3)
        assert ex._batch_engine.sharing == "none" and ex.batch_stats.shared_tokens == 0


def test_transformers_shares_whole_prompts_only(tiny_model, one_torch_thread):
    with Expander(str(tiny_model.hf_dir), backend="hf") as ex:
        reqs = [SHARED[0], SHARED[1], SHARED[0], SHARED[0]]
        same_as_alone(ex, reqs, samplings(len(reqs), 10), 3)
        assert ex.batch_stats.shared_tokens == 2 * prompt_tokens(ex, reqs[:1])


# -- progress and cancel hooks ----------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 3])
def test_progress_counts_finished_requests(builtin, batch_size):
    seen: list[tuple[int, int]] = []
    reqs = REQUESTS[:5]
    builtin.expand_batch(reqs, Sampling(seed=2, max_new_tokens=8), batch_size=batch_size,
                         progress=lambda n, total: seen.append((n, total)))
    assert seen[0] == (0, 5) and seen[-1] == (5, 5) and len(seen) > 5
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)
    generated = (r for r in reqs)  # no length: the total is what was read so far
    seen.clear()
    builtin.expand_batch(generated, Sampling(seed=2, max_new_tokens=8), batch_size=batch_size,
                         progress=lambda n, total: seen.append((n, total)))
    assert seen[-1] == (5, 5) and all(n <= total for n, total in seen)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_cancel_stops_the_batch_and_leaves_the_model_ready(builtin, batch_size):
    import threading

    from tipo.errors import Cancelled

    stop = threading.Event()
    got = []
    reqs = SHARED * 2
    samps = samplings(len(reqs), 16)
    with pytest.raises(Cancelled):
        for position, res in builtin.iter_expand_batch(reqs, samps, batch_size=batch_size, cancel=stop):
            got.append((position, res))
            if len(got) == 2:
                stop.set()
    assert len(got) == 2  # what finished before the cancel stays valid
    for position, res in got:
        assert res.to_dict(timings=False) == builtin.expand(reqs[position], samps[position]).to_dict(timings=False)
    with pytest.raises(Cancelled):
        builtin.expand_batch(reqs, samps, batch_size=batch_size, cancel=lambda: True)
    same_as_alone(builtin, reqs[:4], samps[:4], batch_size)  # nothing left over from the cancelled runs


def test_bench_batch_runs_and_prints_its_tables(tiny_model, capsys):
    from eval.bench_batch import main as bench

    gguf = str(tiny_model.gguf_f16)
    assert bench(["--model", gguf, "--requests", "4", "--seq-requests", "2", "--sizes", "2", "--max-new-tokens", "4"]) == 0
    assert bench(["--shared", "--model", gguf, "--requests", "4", "--sizes", "2", "--max-new-tokens", "4"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny-f16.gguf | 2 |")]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows)
