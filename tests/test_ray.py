"""tipo.ray on a real local Ray (2 CPUs): the same records as a local batch, and a killed actor loses nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="pip install 'tipo-prompt[ray]'")

from tipo import Expander, Sampling  # noqa: E402
from tipo.batch import read_batch_file, run_batch  # noqa: E402
from tipo.ray import expand_dataset, read_output, requests_dataset  # noqa: E402

SAMPLING = Sampling(max_new_tokens=10)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    src = tmp_path_factory.mktemp("ray") / "in.jsonl"
    rows = [{"tags": f"tag{i}, 1girl", "length": "very_short", "output": "tags"} for i in range(12)]
    rows[3]["seed"] = 5
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_batch_file(src)


@pytest.fixture(scope="module")
def local_records(tiny_model, batch):
    with Expander(str(tiny_model.gguf_f16), n_threads=1) as ex:
        return run_batch(batch, ex, SAMPLING, base_seed=11).records


def test_ray_run_equals_the_local_batch(local_ray, tiny_model, batch, local_records, tmp_path):
    ds = expand_dataset(requests_dataset(batch), model=str(tiny_model.gguf_f16), sampling=SAMPLING, base_seed=11,
                        num_actors=2, rows_per_call=3, batch_size=2)
    ds.write_json(str(tmp_path / "out"))
    assert read_output(tmp_path / "out") == local_records


def _actor_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"_ExpandActor" in cmd:
                pids.append(int(proc.name))
    return pids


def test_a_killed_actor_is_restarted_and_nothing_is_lost_or_doubled(local_ray, tiny_model, batch, local_records,
                                                                      tmp_path):
    killed: list[int] = []

    def killer() -> None:  # SIGKILL the first actor process seen, once it has worked a moment
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            for pid in _actor_pids():
                time.sleep(0.2)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended meanwhile (a quiet machine is quick): try the next
                    continue
                killed.append(pid)
                break
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    ds = expand_dataset(requests_dataset(batch), model=str(tiny_model.gguf_f16), sampling=SAMPLING, base_seed=11,
                        num_actors=2, rows_per_call=1)
    ds.write_parquet(str(tmp_path / "out"))
    thread.join(timeout=5)
    assert killed, "no actor process was found to kill"
    records = read_output(tmp_path / "out")
    assert [r["index"] for r in records] == list(range(12))
    assert records == local_records


def test_cli_ray_writes_a_folder(tiny_model, tmp_path, local_ray):
    from tipo.cli import main

    src = tmp_path / "in.txt"
    src.write_text("1girl\n1boy\n")
    assert main(["expand", "--batch", str(src), "--out", str(tmp_path / "o"), "--ray", "--model",
                 str(tiny_model.gguf_f16), "--seed", "3", "--max-new-tokens", "8", "--ray-actors", "1"]) == 0
    assert [r["seed"] for r in read_output(tmp_path / "o")] == [r["seed"] for r in read_output(tmp_path / "o")]
    assert len(read_output(tmp_path / "o")) == 2
    assert main(["expand", "--batch", str(src), "--out", str(tmp_path / "o"), "--ray", "--model",
                 str(tiny_model.gguf_f16)]) != 0  # not an empty folder
