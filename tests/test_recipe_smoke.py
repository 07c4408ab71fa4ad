"""The training recipe end to end on a small subset: prepare -> train (and resume) -> export -> evaluate.

A few COCO images and DPG-Bench prompts, a one-layer model, a handful of steps: checks that
every command runs, writes its files, that llama.cpp tokenises the samples exactly as training did,
that the GGUF loads in tipo, and that the evaluation prints its figures. About a minute on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

for _module in ("torch", "transformers", "sentencepiece", "gguf", "llama_cpp", "datasets", "matplotlib"):
    pytest.importorskip(_module, reason=f"the recipe smoke test needs {_module}: pip install 'tipo[train,llama]'")

from models.train import evaluate, export, prepare, train  # noqa: E402
from models.train.corpus import COCO_FILE, DATA_DIR  # noqa: E402

pytestmark = pytest.mark.skipif(not (DATA_DIR / COCO_FILE).is_file(), reason=f"shared data not found at {DATA_DIR}")

TINY = ["--hidden", "32", "--layers", "1", "--heads", "2", "--intermediate", "64", "--batch-tokens", "2048",
        "--warmup", "1", "--eval-every", "4", "--ckpt-every", "2", "--eval-samples", "8", "--threads", "2"]


def test_recipe_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert prepare.main(["--out", str(run), "--limit-coco", "40", "--limit-dpg", "10", "--heldout", "0.1",
                         "--samples-per-record", "2", "--vocab-size", "512", "--seed", "3"]) == 0
    info = json.loads((run / "prepare.json").read_text())
    assert info["vocab_size"] == 512 + 13
    assert info["train"]["samples"] > 0 and info["heldout"]["samples"] > 0
    assert (run / "tokenizer" / "tokenizer.model").is_file()
    train_groups = {json.loads(line)["group"] for line in (run / "corpus" / "train.jsonl").read_text().splitlines()}
    held_groups = {json.loads(line)["group"] for line in (run / "corpus" / "heldout.jsonl").read_text().splitlines()}
    assert train_groups and held_groups and not train_groups & held_groups  # split by image, never inside one

    assert train.main(["--run", str(run), "--max-steps", "4", *TINY]) == 0
    assert (run / "ckpt" / "last.pt").is_file() and (run / "loss.png").is_file()
    # An interrupted run continues from its checkpoint.
    assert train.main(["--run", str(run), "--max-steps", "6", "--resume", *TINY]) == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "train.json").read_text())["steps"] == 6
    assert (run / "hf" / "config.json").is_file()

    assert export.main(["--run", str(run), "--check-samples", "40"]) == 0
    exported = json.loads((run / "export.json").read_text())
    assert (run / "tipo-builtin.gguf").is_file()
    assert exported["tokenization"]["identical"] == exported["tokenization"]["checked"] > 0
    assert [e["backend"] for e in exported["tipo"]] == ["llama", "hf"]
    assert all("1girl, forest" in e["prompt"] for e in exported["tipo"])

    capsys.readouterr()
    assert evaluate.main(["--run", str(run), "--items", "3", "--examples", "1", "--relevance-items", "4"]) == 0
    out = capsys.readouterr().out
    assert "requested fields parse" in out and "known tags" in out and "unigram baseline" in out
    assert "co-occurrence P / R / F1" in out and "Caption word validity" in out
    report = json.loads((run / "eval.json").read_text())
    assert report["summary"]["items"] == 3
    assert report["relevance"]["items"] == 4 and set(report["relevance"]["all"]) == {"model", "unigram", "cooccurrence"}
    assert report["summary"]["user_tags_kept"] == 1.0
    assert report["summary"]["duplicate_tags_final"] == 0

    # The ranker analysis: the model's own ranking of the trained tags next to co-occurrence.
    assert evaluate.main(["--run", str(run), "--rank-items", "4"]) == 0
    rank = json.loads((run / "eval-rank.json").read_text())
    assert rank["items"] >= 1 and rank["candidates"] > 0
    assert set(rank["precision_at_k"]) == {"model", "cooccurrence"}
    assert all(0.0 <= p <= 1.0 for row in rank["precision_at_k"].values() for p in row.values())

    # The data's headroom: a network trained directly on the relevance task, next to co-occurrence;
    # and a folder that is no run is named, not a traceback.
    assert evaluate.main(["--run", str(run), "--direct-epochs", "1", "--relevance-items", "4"]) == 0
    direct = json.loads((run / "eval-direct.json").read_text())
    assert direct["items"] == 4 and set(direct["precision_at_k"]) == {"direct", "cooccurrence"}
    with pytest.raises(SystemExit, match="no corpus/train.jsonl"):
        evaluate.main(["--run", str(tmp_path / "not-a-run"), "--direct-epochs", "1"])
