"""Throughput of a whole LaTRO step (the trainer's own), by phase, against rationales per step.

    .venv/bin/python benchmarks/latro_step_throughput.py --out results/latro_step_throughput

For every (full fine-tuning | LoRA) x (1 | 2 threads) x rationales per step (8, 16, 32, 64 = 1..8
questions x K = 8), a fresh process trains the embedded model for 2 steps with the real
``Trainer`` (one micro-batch per step, L = 64, T = 1, the released truncation rule) for one step,
after one warm-up step of the smallest size in the same process, and reports its phase times from
metrics.jsonl: sampling, scoring (π0 and πθ forwards), backward, optimizer. Then two 1-thread processes run at once (``--concurrent`` size) to see
whether seeds as parallel one-thread processes beat one two-thread process.

Decoding multiplies all rows by every weight matrix once per token, so more rows per step should
cost little more there; scoring and backward are matmuls over every token and grow with the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ("sample_s", "score_s", "backward_s", "optim_s")


def _peak_mb() -> float:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmHWM"):
            return int(ln.split()[1]) / 1024
    return float("nan")


def child(mode: str, threads: int, sizes: list[int], k: int, L: int) -> list[dict]:
    import torch

    from latro_core.models import load_model
    from latro_core.trainer import TrainConfig, Trainer

    torch.set_num_threads(threads)
    out = []
    for i, n in enumerate([min(sizes)] + sizes):       # the first, smallest step only warms the process up
        model, tok = load_model(device="cpu")
        Path("/proc/self/clear_refs").write_text("5")          # peak RSS from here
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(steps=1, questions_per_step=n // k, k=k, max_new_tokens=L, micro_batch=n,
                              lr=1e-6 if mode == "full" else 1e-4, lora=mode == "lora", save_every=10**6,
                              progress=False, log_samples=0, out_dir=tmp, device="cpu", seed=i)
            trainer = Trainer(cfg, model=model, tokenizer=tok)
            trainer.train()
            row = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])
        del trainer, model
        if i == 0:
            continue
        out.append({"mode": mode, "threads": threads, "rationales": n, "k": k, "L": L,
                    **{p: row.get(p, 0.0) for p in PHASES}, "step_s": row["step_s"],
                    "rationales_per_s": n / row["step_s"], "mean_length": row["rationale_len"],
                    "frac_truncated": row["frac_truncated"], "peak_mb": _peak_mb()})
        print(json.dumps(out[-1]), flush=True)
    return out


def _spawn(mode, threads, sizes, k, L):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, __file__, "--child", mode, "--threads", str(threads),
                             "--sizes", ",".join(map(str, sizes)), "--k", str(k), "--L", str(L)],
                            env=env, stdout=subprocess.PIPE, text=True)


def _collect(proc) -> list[dict]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"benchmark child failed with status {proc.returncode}")
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def to_markdown(rows: list[dict], concurrent: list[dict], info: dict) -> str:
    from benchmarks._provenance import git_commit

    lines = ["# Throughput of one LaTRO step, by phase", "",
             f"`{info['command']}` at commit `{git_commit()}`; {info['machine']['cpu']}, "
             f"{info['machine']['cpus']} CPUs, torch {info['machine']['torch']}.", "",
             f"Embedded SmolLM2-135M-Instruct, arithmetic task, K = {rows[0]['k']}, L = {rows[0]['L']}, T = 1, "
             "one micro-batch per step, "
             "one step per size after a warm-up step in the same process. Seconds per step; rationales/s = rationales / step "
             "time; per CPU-s divides by the threads. Peak: the process's peak RSS.", "",
             "| mode | threads | rationales/step | sampling s | scoring s | backward s | optimizer s | step s "
             "| rationales/s | rationales per CPU-s | cut at L | peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['threads']} | {r['rationales']} | {r['sample_s']:.1f} | {r['score_s']:.1f} | "
                     f"{r['backward_s']:.1f} | {r['optim_s']:.2f} | {r['step_s']:.1f} | {r['rationales_per_s']:.2f} | "
                     f"{r['rationales_per_s'] / r['threads']:.2f} | {r['frac_truncated']:.2f} | {r['peak_mb'] / 1024:.1f} |")
    if concurrent:
        total = sum(r["rationales_per_s"] for r in concurrent)
        n = concurrent[0]["rationales"]
        alone = [r for r in rows if r["mode"] == concurrent[0]["mode"] and r["rationales"] == n]
        lines += ["", f"Two 1-thread processes at once ({concurrent[0]['mode']}, {n} rationales/step each): "
                  + ", ".join(f"{r['rationales_per_s']:.2f}" for r in concurrent)
                  + f" rationales/s, **{total:.2f} together**"
                  + "".join(f"; one {r['threads']}-thread process alone: {r['rationales_per_s']:.2f}" for r in alone) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", choices=("full", "lora"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--thread-counts", default="1,2")
    ap.add_argument("--concurrent", type=int, default=32, help="rationales per step of the 2 x 1-thread run (0: skip)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--out", default="results/latro_step_throughput")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, args.threads, sizes, args.k, args.L)
        return
    from benchmarks._provenance import machine_info

    rows = []
    for mode in args.modes.split(","):
        for threads in (int(t) for t in args.thread_counts.split(",")):
            rows += _collect(_spawn(mode, threads, sizes, args.k, args.L))
    concurrent = []
    if args.concurrent:
        procs = [_spawn(args.modes.split(",")[0], 1, [args.concurrent], args.k, args.L) for _ in range(2)]
        concurrent = [r for p in procs for r in _collect(p)]
    info = {"command": "python benchmarks/latro_step_throughput.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine_info()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "concurrent": concurrent, **info}, indent=1))
    out.with_suffix(".md").write_text(to_markdown(rows, concurrent, info))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
