"""Batch mode: reading request files, outputs that are never lost, mixed or overwritten, resume, kills."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tipo.batch import (
    HEADER_KEY,
    BatchOutput,
    batch_input,
    derive_seed,
    read_batch_file,
    read_request_lines,
    split_lines,
)
from tipo.errors import RequestError

ROOT = Path(__file__).resolve().parents[1]


def test_lines_validate_fields_seed_and_extras():
    text = '{"tags": "1girl", "seed": 3}\n\n{"caption": "a cat", "output": "caption", "id": "x"}\n'
    rows = read_request_lines(text, "f.jsonl", {"length": "short"}, extra=("id", "seed"))
    assert [(n, kw["length"], ex) for n, kw, ex in rows] == [(1, "short", {"seed": 3}), (3, "short", {"id": "x"})]


@pytest.mark.parametrize("line,needle", [
    ("not json", "f.jsonl:1: not valid JSON"),
    ("[1]", "expected a JSON object"),
    ('{"lenght": "short"}', "unknown field(s) ['lenght']"),
    ('{"tags": "a", "seed": -1}', "seed must be a whole number"),
    ('{"tags": "a", "seed": 1e3}', "seed must be a whole number"),
    ('{"tags": "a", "length": "huge"}', "f.jsonl:1: length='huge'"),
    ("[" * 100_000, "f.jsonl:1:"),
])
def test_bad_lines_name_the_line_and_the_fix(line, needle):
    with pytest.raises(RequestError) as err:
        read_request_lines(line, "f.jsonl")
    assert needle in str(err.value)


def test_derived_seeds_are_stable():
    assert derive_seed(7, 3) == derive_seed(7, 3) != derive_seed(7, 4)
    assert 0 <= derive_seed(0, 0) < 2**32


def test_records_split_on_newline_only(tmp_path):
    # U+2028, U+2029, U+0085, \v and \f are line breaks to str.splitlines but legal inside JSON strings.
    tags = "a\u2028b, c\u0085d, e\u2029f, g\x0bh\x0ci"
    assert split_lines("x\u2028y\r\nz\n") == ["x\u2028y", "z"]
    src = tmp_path / "in.jsonl"
    src.write_bytes((json.dumps({"tags": tags}, ensure_ascii=False) + "\r\n" + '{"tags": "z"}').encode())
    batch = read_batch_file(src)
    assert [i.fields["tags"] for i in batch.items] == [tags, "z"] and [i.line for i in batch.items] == [1, 2]


def test_invalid_utf8_names_the_line(tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"1girl\n2girls\nbad \xff here\n")
    with pytest.raises(RequestError, match=r"in.txt:3: not valid UTF-8"):
        read_batch_file(src)


@pytest.mark.parametrize("make,needle", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_text("\n \n"), "holds no requests"),
])
def test_unreadable_inputs(tmp_path, make, needle):
    p = tmp_path / "in.jsonl"
    make(p)
    with pytest.raises(RequestError, match=needle):
        read_batch_file(p)


def test_bad_record_refuses_up_front_or_becomes_an_error_record(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"tags": "a"}\n{"tags": "b", "length": "huge"}\n{"tags": "c"\n{"tags": "d"}\n')
    with pytest.raises(RequestError) as err:
        read_batch_file(src)
    assert "in.jsonl:2: length='huge'" in str(err.value) and "1 more bad line" in str(err.value)
    assert "--skip-bad" in str(err.value)
    batch = read_batch_file(src, skip_bad=True)
    assert [(i.index, i.line, i.error is None) for i in batch.items] == [
        (0, 1, True), (1, 2, False), (2, 3, False), (3, 4, True)]


def _open(out, batch, settings=None, seed=None, **kw):
    return BatchOutput.open(out, batch, settings or {"s": 1}, seed, **kw)


def test_output_header_resume_and_refusals(tmp_path):
    batch = batch_input(["1girl", "1boy", "scenery"])
    out = tmp_path / "out.jsonl"
    with _open(out, batch, seed=5) as o:
        assert o.base_seed == 5 and o.done == {}
        o.write({"index": 0, "result": 1})
        o.write({"index": 2, "result": 3})
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])[HEADER_KEY] == 1 and json.loads(lines[0])["base_seed"] == 5
    with _open(out, batch) as o:  # the base seed is read back
        assert o.base_seed == 5 and sorted(o.done) == [0, 2]
    with pytest.raises(RequestError, match=r"base seed 5; rerun with --seed 5"):
        _open(out, batch, seed=6)
    with pytest.raises(RequestError, match=r"other settings.*s: 1 -> 2"):
        _open(out, batch, {"s": 2})
    with pytest.raises(RequestError, match=r"another batch.*sha256"):
        _open(out, batch_input(["1girl", "1boy", "other"]))
    assert out.read_text().splitlines() == lines  # refusals leave the file as it was


def test_torn_last_line_is_dropped_and_edited_lines_refused(tmp_path):
    batch = batch_input(["a", "b"])
    out = tmp_path / "out.jsonl"
    with _open(out, batch, seed=1) as o:
        o.write({"index": 0})
    good = out.read_bytes()
    out.write_bytes(good + b'{"index": 1, "res')
    with _open(out, batch) as o:
        assert sorted(o.done) == [0]
    assert out.read_bytes() == good
    for bad in (b'{"index": 0}\n', b'{"index": 7}\n', b"garbage\n"):  # duplicate, out of range, not JSON
        out.write_bytes(good + bad)
        with pytest.raises(RequestError, match=r"out.jsonl:3 is not a record of this batch"):
            _open(out, batch)


def test_files_that_are_not_ours_are_never_touched(tmp_path):
    batch = batch_input(["a"])
    src = tmp_path / "in.jsonl"
    src.write_text('{"tags": "a"}\n')
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text('{"index": 0, "result": "precious"}\n')
    link = tmp_path / "link.jsonl"
    os.link(src, link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        (theirs, "is not a tipo batch output"),
        (src, "is the batch file itself"),
        (link, "is the batch file itself"),
        (tmp_path, "is a folder"),
        (fifo, "not a regular file"),
        (Path("/dev/null"), "not a regular file"),
        (tmp_path / "missing" / "out.jsonl", "does not exist; create"),
    ]
    for path, needle in cases:
        with pytest.raises(RequestError, match=needle):
            _open(path, batch, input_path=src)
    assert theirs.read_text() == '{"index": 0, "result": "precious"}\n'
    assert src.read_text() == '{"tags": "a"}\n'


def test_a_lock_stops_a_second_writer(tmp_path):
    batch = batch_input(["a"])
    out = tmp_path / "out.jsonl"
    with _open(out, batch, seed=1):
        code = ("import sys; from tipo.batch import BatchOutput, batch_input\n"
                f"BatchOutput.open({str(out)!r}, batch_input(['a']), {{'s': 1}}, 1)")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode != 0 and "another tipo run is writing" in run.stderr
    with _open(out, batch, seed=1):  # released on close
        pass


# --- the command, on a real model ---------------------------------------------------------------------


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tipo", *args], capture_output=True, text=True, env=env, **kw)


def test_cli_path_errors_come_before_the_model_loads(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("1girl\n")
    nomodel = str(tmp_path / "no-model.gguf")  # loading it would fail with another message
    (tmp_path / "bad.txt").write_bytes(b"\xff\n")
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("keep me\n")
    for args, needle in [
        (["--batch", str(src), "--out", str(src)], "is the batch file itself"),
        (["--batch", str(src), "--out", str(theirs)], "not a tipo batch output"),
        (["--batch", str(src), "--out", str(tmp_path)], "is a folder"),
        (["--batch", str(src), "--out", str(tmp_path / "x" / "o.jsonl")], "does not exist; create"),
        (["--batch", str(src), "--out", "/dev/stdout"], "--out - to stream"),
        (["--batch", str(tmp_path), "--out", "o.jsonl"], "is a folder"),
        (["--batch", str(tmp_path / "bad.txt"), "--out", "o.jsonl"], "bad.txt:1: not valid UTF-8"),
        (["--batch", str(src), "--out", "o.jsonl", "--batch-size", "0"], "--batch-size 0"),
    ]:
        run = run_cli("expand", *args, "--model", nomodel, cwd=tmp_path)
        assert run.returncode != 0 and run.stderr.count("\n") == 1, run.stderr
        assert needle in run.stderr and "no-model" not in run.stderr, run.stderr
    assert theirs.read_text() == "keep me\n"


def _records(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert HEADER_KEY in json.loads(lines[0])
    return [json.loads(x) for x in lines[1:]]


def test_cli_resume_and_settings_check(tiny_model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("1girl, forest\n1boy, city\n\nscenery, sky\n")
    out = tmp_path / "out.jsonl"
    base = ("expand", "--batch", str(src), "--out", str(out), "--model", str(tiny_model.gguf_f32),
            "--max-new-tokens", "15", "--seed", "3", "--threads", "1")
    assert run_cli(*base).returncode == 0
    full = out.read_text().splitlines()
    assert [json.loads(x)["index"] for x in full[1:]] == [0, 1, 2]
    assert [json.loads(x)["line"] for x in full[1:]] == [1, 2, 4]
    out.write_text("\n".join(full[:2]) + "\n" + full[2][:40])  # interrupted mid-record
    assert run_cli(*base).returncode == 0
    assert out.read_text().splitlines() == full
    other = run_cli(*base, "--temperature", "0.9")
    assert other.returncode != 0 and "temperature: 0.5 -> 0.9" in other.stderr
    streamed = run_cli(*base[:4], "-", *base[5:])
    assert streamed.returncode == 0 and [json.loads(x) for x in streamed.stdout.splitlines()] == _records(out)


def test_kill_9_at_random_points_then_resume_loses_and_duplicates_nothing(tiny_model, tmp_path):
    """A real subprocess killed with SIGKILL at random moments, resumed until done, equals an uninterrupted run."""
    rng = random.Random(1234)  # a local generator: the kill points are reproducible in kind
    n = 24
    src = tmp_path / "in.jsonl"
    rows = [{"tags": f"tag{i}, 1girl", "length": rng.choice(["very_short", "short"])} for i in range(n)]
    rows[5]["seed"] = 99
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["expand", "--batch", str(src), "--model", str(tiny_model.gguf_f32), "--max-new-tokens", "12",
            "--seed", "11", "--threads", "1", "--output", "tags"]
    ref = tmp_path / "ref.jsonl"
    assert run_cli(*args, "--out", str(ref)).returncode == 0
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def on_disk() -> int:
        return max(0, out.read_bytes().count(b"\n") - 1) if out.exists() else 0

    seen = []  # records on disk when each kill landed
    for _attempt in range(20):  # bounded: a run that keeps failing must not loop forever
        if len(seen) >= 5 or on_disk() >= n - 1:
            break
        target = rng.randint(on_disk() + 1, min(n - 1, on_disk() + 6))
        proc = subprocess.Popen([sys.executable, "-m", "tipo", *args, "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while on_disk() < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))  # anywhere inside the next record, its write included
        if proc.poll() is not None:  # it finished first (a quiet machine is quick): no kill to count
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(on_disk())
    final = run_cli(*args, "--out", str(out))  # the last resume runs to the end
    assert final.returncode == 0, final.stderr
    assert len(seen) >= 3 and all(0 < k <= n for k in seen), seen
    assert _records(out) == _records(ref)
    assert [r["index"] for r in _records(out)] == list(range(n))
    assert _records(out)[5]["seed"] == 99 and _records(out)[0]["seed"] == derive_seed(11, 0)


def test_library_run_batch_matches_single_expansions_and_resumes(tiny_model, tmp_path):
    from tipo import Expander, Request, Sampling
    from tipo.batch import run_batch

    reqs = [Request("1girl, forest", length="very_short", output="tags"), (Request("1boy", output="tags"), 42),
            Request("scenery", length="short", output="tags")]
    sampling = Sampling(max_new_tokens=12)
    out = tmp_path / "out.jsonl"
    with Expander(str(tiny_model.gguf_f32), n_threads=1) as ex:
        first = run_batch(reqs[:3], ex, sampling, out=out, base_seed=4)
        again = run_batch(reqs[:3], ex, sampling, out=out)  # resumes: nothing left to do
        single = [ex.expand(r if isinstance(r, Request) else r[0], sampling.with_seed(s)).to_dict(timings=False)
                  for r, s in zip(reqs, [derive_seed(4, 0), 42, derive_seed(4, 2)], strict=True)]
        with pytest.raises(RequestError, match="other settings"):
            run_batch(reqs[:3], ex, Sampling(max_new_tokens=13), out=out)
    assert [r["result"] for r in first.records] == single
    assert (first.written, again.written, again.resumed) == (3, 0, 3) and again.records == first.records


def test_cancelled_batch_keeps_its_records_and_resumes(tiny_model, tmp_path):
    import threading

    from tipo import Expander, Request, Sampling
    from tipo.batch import run_batch
    from tipo.errors import Cancelled

    reqs = [Request(f"tag{i}", length="very_short", output="tags") for i in range(6)]
    sampling = Sampling(max_new_tokens=8)
    stop = threading.Event()
    written = []

    def on_record(record: dict) -> None:
        written.append(record)
        if len(written) == 2:
            stop.set()

    with Expander(str(tiny_model.gguf_f16), n_threads=1) as ex:
        with pytest.raises(Cancelled):
            run_batch(reqs, ex, sampling, out=tmp_path / "out.jsonl", base_seed=3, batch_size=2, on_record=on_record,
                      cancel=stop)
        assert 2 <= len(_records(tmp_path / "out.jsonl")) < 6
        resumed = run_batch(reqs, ex, sampling, out=tmp_path / "out.jsonl", batch_size=2)
        whole = run_batch(reqs, ex, sampling, out=tmp_path / "whole.jsonl", base_seed=3, batch_size=2)
    assert resumed.resumed >= 2 and resumed.records == whole.records
