"""Expansion of datasets on Ray: the local batch rule, spread over actors on one or many machines.

Example::

    import ray
    from tipo.batch import read_batch_file
    from tipo.ray import expand_dataset, read_output, requests_dataset

    ray.init()  # or ray.init(address="ray://head:10001") for a cluster
    batch = read_batch_file("captions.jsonl")
    out = expand_dataset(requests_dataset(batch), model="model.gguf", base_seed=7, num_actors=4)
    out.write_parquet("results/")
    records = read_output("results/")  # in index order, as the local batch writes them

Each actor loads one :class:`~tipo.expander.Expander` and expands the blocks Ray hands it with
:func:`tipo.batch.expand_records`, the function local batch mode uses: the same record, the same
seed (``seed`` of the row, else ``derive_seed(base_seed, index)``), so a Ray run holds exactly the
records of a local run. Output rows are ``index`` plus ``record`` (the record as JSON text, as one
line of the local output file). Actors that die are restarted and their unfinished blocks redone;
a block's rows reach the output once, when its task succeeds.

Needs ``pip install 'tipo-prompt[ray]'``. See docs/scale.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .batch import BatchInput, BatchItem, expand_records
from .errors import RequestError, require
from .request import Sampling

__all__ = ["expand_dataset", "read_output", "requests_dataset", "run"]


def requests_dataset(batch: BatchInput, *, parallelism: int | None = None) -> Any:
    """A Ray Dataset of a batch's records: ``index``, ``line``, ``seed`` (-1: derive), ``request``
    (JSON text of the Request fields) and ``error`` (a line that could not be read)."""
    ray = require("ray", "ray", "tipo.ray")
    rows = [{"index": i.index, "line": i.line, "seed": -1 if i.seed is None else i.seed,
             "request": json.dumps(dict(i.fields)), "error": i.error or ""} for i in batch.items]
    kwargs = {"override_num_blocks": parallelism} if parallelism else {}
    return ray.data.from_items(rows, **kwargs)


class _ExpandActor:
    """Holds one Expander; ``__call__`` expands one block of request rows into records."""

    def __init__(self, model: str | None, backend: str, n_threads: int | None, known_tags_only: bool | None,
                 sampling: Mapping[str, Any], base_seed: int, template: Any, task: Any, timings: bool,
                 batch_size: int, options: Mapping[str, Any]) -> None:
        from .expander import Expander

        self.expander = Expander(model, backend=backend, n_threads=n_threads, known_tags_only=known_tags_only,
                                 **options)
        self.sampling = Sampling(**sampling)
        self.args = (base_seed, template, task, timings, batch_size)

    def __call__(self, block: dict[str, Any]) -> dict[str, list[Any]]:
        items = [BatchItem(int(index), int(line), json.loads(str(request)), None if int(seed) < 0 else int(seed),
                           str(error) or None)
                 for index, line, seed, request, error in zip(block["index"], block["line"], block["seed"],
                                                              block["request"], block["error"], strict=True)]
        base, template, task, timings, size = self.args
        records = list(expand_records(items, self.expander, self.sampling, base, template, task, timings, size))
        return {"index": [r["index"] for r in records], "record": [json.dumps(r, default=_jsonable) for r in records]}


def expand_dataset(ds: Any, *, model: str | None = None, backend: str = "auto", sampling: Sampling | None = None,
                   base_seed: int, template: Any = None, task: Any = None, timings: bool = False,
                   num_actors: int = 1, rows_per_call: int = 16, batch_size: int = 1, n_threads: int | None = 1,
                   known_tags_only: bool | None = None, num_cpus: float = 1, num_gpus: float = 0,
                   **expander_options: Any) -> Any:
    """Expand a dataset of request rows (see :func:`requests_dataset`) with ``map_batches`` over
    ``num_actors`` actors that each hold one Expander.

    Args:
        base_seed: the base of the derived seeds (the ``--seed`` of a local batch).
        rows_per_call: rows per actor call (a Ray batch); ``batch_size``: of those, sequences
            decoded together.
        num_cpus, num_gpus: resources per actor.
        expander_options: passed to each actor's :class:`~tipo.expander.Expander`
            (``n_gpu_layers=-1`` for llama.cpp on a GPU, ``device="cuda"`` for transformers).

    A dead actor is restarted and its unfinished calls are retried (Ray Data's defaults for actor
    pools: ``max_restarts=-1``, ``max_task_retries=-1``); a call's rows reach the output once.

    Returns:
        A lazy Dataset of ``index`` and ``record``; write it with ``write_parquet``/``write_json``.
    """
    require("ray", "ray", "tipo.ray")
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise RequestError(f"base_seed={base_seed!r} is not valid; give a whole number >= 0")
    for name, value in (("num_actors", num_actors), ("rows_per_call", rows_per_call), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{name}={value!r} is not valid; give a whole number >= 1")
    samp = {k: v for k, v in asdict(sampling or Sampling()).items() if k != "seed"}
    return ds.map_batches(
        _ExpandActor,
        fn_constructor_args=(model, backend, n_threads, known_tags_only, samp, base_seed,
                             _jsonable(template) if template is not None else None,
                             _jsonable(task) if task is not None else None, timings, batch_size,
                             dict(expander_options)),
        batch_size=rows_per_call, batch_format="numpy", compute=_pool(num_actors),
        num_cpus=num_cpus, num_gpus=num_gpus or None,
    )


def _pool(n: int) -> Any:
    import ray

    try:
        return ray.data.ActorPoolStrategy(size=n)
    except TypeError:  # pragma: no cover - older Ray
        return ray.data.ActorPoolStrategy(min_size=n, max_size=n)


def read_output(path: str | Path) -> list[dict[str, Any]]:
    """The records of a Ray run's output folder (Parquet or JSONL parts), in index order."""
    folder = Path(path)
    rows: list[tuple[int, str]] = []
    for part in sorted(folder.iterdir()):
        if part.suffix == ".parquet":
            pq = require("pyarrow.parquet", "ray", "reading Parquet output")
            table = pq.read_table(part)
            rows += zip(table.column("index").to_pylist(), table.column("record").to_pylist(), strict=True)
        elif part.suffix in (".json", ".jsonl"):
            for line in part.read_text(encoding="utf-8").split("\n"):
                if line.strip():
                    row = json.loads(line)
                    rows.append((row["index"], row["record"]))
    rows.sort()
    return [json.loads(record) for _, record in rows]


def run(batch: BatchInput, out: str | Path, *, address: str | None = None, fmt: str = "parquet",
        **options: Any) -> int:
    """Expand a batch on Ray (a running cluster at ``address``, or a local one) into the folder
    ``out`` (``fmt``: ``parquet`` or ``jsonl``); returns the number of records written."""
    ray = require("ray", "ray", "tipo.ray")
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RequestError(f"--out {folder} must be a new or empty folder for a Ray run; choose another")
    if not folder.parent.is_dir():
        raise RequestError(f"the folder of --out {folder} does not exist; create {folder.parent} first")
    if fmt not in ("parquet", "jsonl"):
        raise RequestError(f"unknown output format {fmt!r}; use parquet or jsonl")
    started = False
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
        started = True
    try:
        ds = expand_dataset(requests_dataset(batch), **options)
        if fmt == "parquet":
            ds.write_parquet(str(folder))
        else:
            ds.write_json(str(folder))
    finally:
        if started:
            ray.shutdown()
    return len(read_output(folder))


def _jsonable(value: Any) -> Any:
    return getattr(value, "value", value)
