"""Records per second of tipo.ray with 1 and 2 actors on a local Ray, against the local batch.

    python -m eval.bench_ray                       # the built-in model, 48 records, 2 CPUs
    python -m eval.bench_ray --model m.gguf --records 200 --cpus 4 --actors 1,2,4

Every run expands the same batch (mixed requests, seeds from base 0) and checks that its records
equal the local run's. Times include Ray's start of the actors and their model loads (what a user
waits for), not ``ray.init``. On a shared machine the figures move from run to run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_ray", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a .gguf (default: the built-in model)")
    p.add_argument("--records", type=int, default=48)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default: 2)")
    p.add_argument("--actors", default="1,2", help="actor counts to run (default: 1,2)")
    p.add_argument("--rows-per-call", type=int, default=8)
    args = p.parse_args(argv)

    import ray

    from tipo import Expander, Sampling
    from tipo.batch import read_batch_file, run_batch
    from tipo.ray import expand_dataset, read_output, requests_dataset

    tags = ["1girl, forest", "1boy, city", "scenery, sky", "cat, window", "2girls, beach", "dragon, castle"]
    lengths = ["very_short", "short", "long"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"tags": tags[i % len(tags)], "length": lengths[i % len(lengths)],
                                           "output": "tags"}) + "\n" for i in range(args.records)))
        batch = read_batch_file(src)
        sampling = Sampling(max_new_tokens=args.max_new_tokens)
        t0 = time.perf_counter()
        with Expander(args.model, n_threads=1) as ex:
            local = run_batch(batch, ex, sampling, base_seed=0).records
        rows = [("local batch (1 thread, no Ray)", time.perf_counter() - t0, True)]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            for n in (int(x) for x in args.actors.split(",")):
                out = Path(tmp) / f"ray{n}"
                t0 = time.perf_counter()
                expand_dataset(requests_dataset(batch), model=args.model, sampling=sampling, base_seed=0,
                               num_actors=n, rows_per_call=args.rows_per_call).write_parquet(str(out))
                rows.append((f"Ray, {n} actor(s) x 1 thread", time.perf_counter() - t0, read_output(out) == local))
        finally:
            ray.shutdown()
    print(f"{args.records} records, {args.max_new_tokens} new tokens at most, local Ray with {args.cpus} CPUs\n")
    print("| run | seconds | records/s | same records as local |")
    print("| --- | --- | --- | --- |")
    for name, secs, same in rows:
        print(f"| {name} | {secs:.1f} | {args.records / secs:.2f} | {'yes' if same else 'NO'} |")
    return 0 if all(same for _, _, same in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
