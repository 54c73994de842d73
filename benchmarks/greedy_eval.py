"""Greedy evaluation speed: ``latro evaluate`` (greedy only) on the first N arithmetic test questions,
at this commit and at a baseline revision, side by side on one machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/greedy_eval.py --baseline-rev b185825 --limit 200 --repeats 1

Each run is a child process (``python -m latro_core.cli evaluate --k 0 ...``, one torch thread); the
baseline imports latro_core from a git worktree of ``--baseline-rev`` (PYTHONPATH), with this venv's
packages. The runs alternate (baseline, now, baseline, now, ...) so machine noise hits both alike; the
report gives each run's wall time, the median ratio, and both runs' greedy accuracy and the share of
questions whose prediction is the same (greedy decoding: equal up to float-rounding flips). Writes
``<out>.md`` and ``<out>.json`` with the command, the commit, the CPU, and the measured memory read
rate and matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import command_line, git_commit, machine_info  # noqa: E402


def evaluate(source: Path | None, out: Path, limit: int, max_new_tokens: int) -> float:
    """Wall seconds of one greedy ``latro evaluate`` into ``out``; ``source``: a worktree whose latro_core
    to import (None: this checkout's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LATRO_SKIP_VERSION_CHECK": "1"}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = ["evaluate", "--task", "arithmetic", "--split", "test", "--limit", str(limit), "--k", "0",
            "--auroc", "false", "--max-new-tokens", str(max_new_tokens), "--batch-questions", "50",
            "--progress", "false", "--device", "cpu", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "latro_core.cli", *args], cwd=source or ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def predictions(out: Path) -> list:
    return [json.loads(line)["greedy"]["pred"] for line in (out / "predictions.jsonl").read_text().splitlines()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-rev", required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="results/greedy_eval_speed")
    args = ap.parse_args(argv)
    from benchmarks.latro_update import machine_peaks

    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.baseline_rev], cwd=ROOT, check=True)
        try:
            times = {"baseline": [], "now": []}
            for r in range(args.repeats):
                for name, source in (("baseline", tree), ("now", None)):
                    times[name].append(evaluate(source, Path(scratch) / f"{name}{r}", args.limit, args.max_new_tokens))
                    print(f"round {r + 1} {name}: {times[name][-1]:.1f} s", flush=True)
            summaries = {n: json.loads((Path(scratch) / f"{n}0" / "summary.json").read_text()) for n in times}
            same = statistics.fmean(a == b for a, b in zip(predictions(Path(scratch) / "baseline0"),
                                                            predictions(Path(scratch) / "now0")))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    med = {n: statistics.median(t) for n, t in times.items()}
    peaks = machine_peaks()
    out = {"command": command_line(), "git_commit": git_commit(), "baseline_rev": args.baseline_rev,
           "machine": machine_info(), "peaks": peaks, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
           "times_s": times, "median_s": med, "speedup": med["baseline"] / med["now"], "same_predictions": same,
           "accuracy": {n: s["greedy"]["accuracy"] for n, s in summaries.items()},
           "decoder_now": summaries["now"].get("decoder")}
    m = out["machine"]
    lines = [f"# Greedy evaluation of {args.limit} arithmetic test questions: this commit vs {args.baseline_rev}", "",
             f"Command: `{out['command']}`  ", f"Commit: `{out['git_commit']}`  ",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, one thread per run; measured memory read "
             f"{peaks['stream_bytes_per_s'] / 1e9:.1f} GB/s, matmul {peaks['matmul_flops'] / 1e9:.0f} GFLOP/s  ",
             f"`latro evaluate --k 0 --max-new-tokens {args.max_new_tokens}` (greedy, SmolLM2-135M fp32), each run a "
             f"child process, the two alternating, {args.repeats} round(s).", "",
             "| code | runs (s) | median (s) | greedy accuracy |", "|---|---|---|---|"]
    for name, label in (("baseline", args.baseline_rev), ("now", "this commit")):
        lines.append(f"| {label} | {', '.join(f'{t:.1f}' for t in times[name])} | {med[name]:.1f} | "
                     f"{out['accuracy'][name]:.3f} |")
    lines += ["", f"**{out['speedup']:.2f}x** faster at this commit (decode step: {out['decoder_now']}); "
                  f"{same:.1%} of the questions got the same greedy prediction."]
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
