"""Summarise the LaTRO recipe sweep (scripts/sweep_latro.sh runs) into results/latro_sweep.md.

    .venv/bin/python scripts/summarize_sweep.py [runs/sweep] [--base runs/eval/base_arith_val50_L96/summary.json]

One row per run: its flags (from config.json, only those that differ between runs), the mean
self-reward, log p(y|x,z), rationale length and fraction cut at L over the first and last 4 steps,
and greedy validation accuracy at each evaluation step (50 questions, n and Wilson interval).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from latro_core.evaluate import wilson_interval  # noqa: E402

KNOBS = ("lr", "beta", "lam", "truncation", "gamma", "max_new_tokens", "k", "questions_per_step", "steps", "seed")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="?", default="runs/sweep")
    ap.add_argument("--base", default="runs/eval/base_arith_val50_L96/summary.json")
    ap.add_argument("--out", default="results/latro_sweep.md")
    args = ap.parse_args(argv)
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "metrics.jsonl").exists())
    cfgs = {p.name: json.loads((p / "config.json").read_text()) for p in runs}
    varying = [k for k in KNOBS if len({json.dumps(c.get(k)) for c in cfgs.values()}) > 1] or ["lr"]
    same = {k: v for k, v in next(iter(cfgs.values())).items() if k in KNOBS and k not in varying}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = ["# LaTRO recipe sweep, embedded SmolLM2-135M-Instruct, arithmetic task", "",
             f"Runs: `scripts/sweep_latro.sh NAME FLAGS...` (one thread each, two at a time); this table: "
             f"`python scripts/summarize_sweep.py {args.runs}` at commit `{commit}`.", "",
             "Shared settings: " + ", ".join(f"{k}={v}" for k, v in same.items()) + ". Validation: greedy, first 50 "
             "validation questions (seed-0 shuffle), L+32 new tokens.", ""]
    if Path(args.base).exists():
        base = json.loads(Path(args.base).read_text())
        b = base["greedy"]
        lo, hi = b["ci95"] if "ci95" in b else wilson_interval(b["correct"], b["n"])
        lines += [f"Base model on the same questions and budget: **{b['accuracy']:.2f}** "
                  f"({b['correct']}/{b['n']}, 95% [{lo:.2f}, {hi:.2f}]), `{base.get('command', 'latro evaluate')}`.", ""]
    head = ["run"] + varying + ["reward first→last", "log p(y\\|x,z) first→last", "length first→last",
                               "cut at L first→last", "val accuracy (step: acc)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in runs:
        rows = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines() if x.strip()]
        def fl(key, fmt="{:.1f}"):
            a = [r[key] for r in rows[:4]]
            z = [r[key] for r in rows[-4:]]
            return f"{fmt.format(sum(a) / len(a))} → {fmt.format(sum(z) / len(z))}"
        evals = "; ".join(f"{r['step']}: {r['eval_accuracy']:.2f}" for r in rows if "eval_accuracy" in r)
        lines.append("| " + " | ".join([p.name] + [str(cfgs[p.name].get(k)) for k in varying] +
                                         [fl("reward_mean"), fl("logp_y_mean"), fl("rationale_len"),
                                          fl("frac_truncated", "{:.2f}"), evals or "—"]) + " |")
    lines += ["", "Commands:", ""] + [
        f"    scripts/sweep_latro.sh {p.name} " + " ".join(f"--{k.replace('_', '-')} {cfgs[p.name][k]}"
                                                      for k in dict.fromkeys(varying + ["lr", "beta", "lam"]))
        for p in runs]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
