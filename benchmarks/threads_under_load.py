"""torch's thread count beside a busy neighbour: one SmolLM2-135M forward+backward (a LaTRO scoring
micro-batch, 4 rows x 96 tokens) timed with 1 thread, 2 threads and latro's automatic choice
(``models.choose_threads``: the free cores), alone and beside 1 or 2 processes that keep a core busy.

    .venv/bin/python benchmarks/threads_under_load.py --out results/threads_under_load

Each measurement runs in a fresh worker process (median of --repeats timed iterations after one
warm-up); the neighbours are pure-Python busy loops started before the worker. Writes <out>.md and
<out>.json. Run it on an otherwise idle machine: the neighbours are the only load it means to add.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _spin(stop):
    while not stop.is_set():
        pass


def worker(threads: str, repeats: int) -> dict:
    """In this process: set the threads ("auto": choose_threads), time forward+backward."""
    import torch

    from latro_core.models import choose_threads, load_model

    n = choose_threads({}) if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    model, _ = load_model(None, device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (4, 96), generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return {"threads": n, "seconds": statistics.median(times), "all_s": times}


def measure(threads: str, neighbours: int, repeats: int) -> dict:
    stop = mp.Event()
    procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(neighbours)]
    for p in procs:
        p.start()
    time.sleep(1.0)                                    # let the load average's running count see them
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LATRO_THREADS")}
    try:
        r = subprocess.run([sys.executable, __file__, "--worker", threads, "--repeats", str(repeats)],
                           capture_output=True, text=True, env=env, check=True)
    finally:
        stop.set()
        for p in procs:
            p.join()
    return {"asked": threads, "neighbours": neighbours, **json.loads(r.stdout.strip().splitlines()[-1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/threads_under_load")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return 0
    from benchmarks._provenance import git_commit, machine_info

    rows = [measure(t, nb, args.repeats) for nb in (0, 1, 2) for t in ("1", "2", "auto")]
    alone = {r["threads"]: r["seconds"] for r in rows if r["neighbours"] == 0 and r["asked"] != "auto"}
    lines = ["# torch threads beside a busy neighbour", "",
             f"`python benchmarks/threads_under_load.py --repeats {args.repeats} --out {args.out}` at commit "
             f"`{git_commit()}`; {machine_info()}.", "",
             "One SmolLM2-135M-Instruct forward+backward on 4 × 96 tokens, fp32, median of "
             f"{args.repeats} after a warm-up, each in a fresh process; neighbours: pure-Python busy loops, one "
             "core each. 'auto': `latro_core.models.choose_threads` (the cores minus those other work keeps "
             "busy, from /proc/loadavg). Slowdown: against the same thread count alone.", "",
             "| neighbours busy | threads asked | threads used | seconds | slowdown vs alone |", "|---|---|---|---|---|"]
    for r in rows:
        base = alone.get(r["threads"])
        slow = f"{r['seconds'] / base:.2f}×" if base else "–"
        lines.append(f"| {r['neighbours']} | {r['asked']} | {r['threads']} | {r['seconds']:.2f} | {slow} |")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps({"rows": rows, "machine": machine_info(), "commit": git_commit()},
                                                   indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
