"""Summarise a LaTRO recipe sweep (scripts/studies/sweep_latro.sh runs) into a table and a figure.

    .venv/bin/python scripts/tools/summarize_sweep.py [runs/recipe] [--out results/latro_recipe] [--figure figures/latro_recipe.png]
    .venv/bin/python scripts/tools/summarize_sweep.py --from-table results/latro_recipe.md   # the figure alone

One row per run: the knobs that differ between runs (from config.json), what it cost (rationales
sampled, CPU seconds of its steps), the self-reward and the fraction cut at L over the first and
last 4 steps, the fraction of questions whose K rewards were all equal (no signal), and greedy
validation accuracy at each evaluation (step 0 = the starting model; a run without its own step-0
evaluation borrows one from a run with the same evaluation settings), with the last evaluation's
rationale length, % finished and accuracy among finished rationales beside it (format vs answers).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from latro_core.answers import ANSWER_TOKENS  # noqa: E402
from latro_core.stats import wilson_interval  # noqa: E402

KNOBS = ("lr", "lora", "k", "questions_per_step", "temperature", "beta", "lam", "truncation", "gamma",
         "max_new_tokens", "steps", "seed", "task_kwargs")
EVAL_KEYS = ("task", "task_kwargs", "max_new_tokens", "eval_split", "eval_limit")


def _rows(p: Path) -> list[dict]:
    return [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines() if x.strip()]


def _evals(rows) -> list[dict]:
    return [r for r in rows if "eval_accuracy" in r]


def _mean(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return sum(v) / len(v) if v else float("nan")


def _acc(r, n) -> str:
    lo, hi = wilson_interval(round(r["eval_accuracy"] * n), n)
    return f"{r['step']}: {100 * r['eval_accuracy']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="?", default="runs/recipe")
    ap.add_argument("--out", default="results/latro_recipe")
    ap.add_argument("--figure", default="figures/latro_recipe.png")
    ap.add_argument("--from-table", default=None, help="draw only the figure, from a committed table "
                    "(results/latro_recipe.md), without the runs")
    args = ap.parse_args(argv)
    if args.from_table:
        evals, n = evals_from_table(Path(args.from_table).read_text())
        _figure(evals, args.figure, n)
        print(args.figure)
        return
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "metrics.jsonl").exists())
    cfgs = {p.name: json.loads((p / "config.json").read_text()) for p in runs}
    data = {p.name: _rows(p) for p in runs}
    # step 0 (the starting model) for runs that did not evaluate it themselves
    base = {}
    for name, rows in data.items():
        key = json.dumps([cfgs[name].get(k) for k in EVAL_KEYS])
        base.update({key: r for r in _evals(rows) if r["step"] == 0})
    for name, rows in data.items():
        key = json.dumps([cfgs[name].get(k) for k in EVAL_KEYS])
        if not any(r["step"] == 0 for r in _evals(rows)) and key in base:
            rows.insert(0, {**base[key], "borrowed": True})
    varying = [k for k in KNOBS if len({json.dumps(c.get(k)) for c in cfgs.values()}) > 1] or ["lr"]
    first = next(iter(cfgs.values()))
    same = {k: first.get(k) for k in KNOBS if k not in varying}
    n_eval = first.get("eval_limit")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = ["# LaTRO recipe sweep, embedded SmolLM2-135M-Instruct, arithmetic task", "",
             f"Runs: `scripts/studies/sweep_latro.sh NAME FLAGS...` (commands below; one thread each, two at a time); "
             f"this table and `{args.figure}`: `python scripts/tools/summarize_sweep.py {args.runs}` at commit `{commit}`.", "",
             "Shared settings: " + ", ".join(f"{k}={v}" for k, v in same.items()) + f". Validation: greedy on the "
             f"first {n_eval} validation questions (seed-0 shuffle), L+{ANSWER_TOKENS} new tokens; accuracy % [95% Wilson], n = "
             f"{n_eval} per point; step 0 is the starting model. 'equal r': mean fraction of a step's questions whose K "
             "rewards were all equal (no learning signal). Last eval: rationale length (tokens), % finished "
             "(EOS or template before the budget), accuracy % among finished.", ""]
    head = (["run"] + varying + ["rationales", "steps wall s", "reward first→last", "cut at L first→last", "equal r",
                                 "val accuracy % (step: acc [95%])", "last eval: length, % finished, acc. among finished %"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in data.items():
        steps = [r for r in rows if "reward_mean" in r or "sft_loss" in r]
        ev = _evals(rows)
        cpu = sum(r.get("step_s", 0) for r in steps)
        fl = (lambda key, f="{:.1f}": f"{f.format(_mean(steps[:4], key))} → {f.format(_mean(steps[-4:], key))}")
        last = ev[-1] if ev else {}
        fin = last.get("eval_accuracy_finished")
        tail = (f"{last.get('eval_mean_length', float('nan')):.0f}, {100 * (1 - last.get('eval_frac_truncated', 1)):.0f}, "
                f"{'–' if fin is None else f'{100 * fin:.0f}'}") if last else "–"
        lines.append("| " + " | ".join(
            [name] + [json.dumps(cfgs[name].get(k)) if k == "task_kwargs" else str(cfgs[name].get(k)) for k in varying]
            + [f"{int(sum(r.get('samples', 0) for r in steps))}", f"{cpu:.0f}", fl("reward_mean"),
               fl("frac_truncated", "{:.2f}"), f"{_mean(steps, 'frac_equal_rewards'):.2f}",
               "; ".join(_acc(r, n_eval) for r in ev) or "—", tail]) + " |")
    lines += ["", "Commands: `scripts/studies/recipe_sweep.sh` runs every run of its RUNS list (each line holds the run's "
              "flags on top of the shared ones), two at a time; `scripts/studies/recipe_sweep.sh NAME` reruns one:", ""]
    lines += [f"    scripts/studies/recipe_sweep.sh {name}" for name in data]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _figure({name: [{"step": r["step"], "acc": 100 * r["eval_accuracy"],
                     **dict(zip(("lo", "hi"), (100 * x for x in wilson_interval(round(r["eval_accuracy"] * n_eval), n_eval))))}
                    for r in _evals(rows)] for name, rows in data.items()}, args.figure, n_eval)
    print("\n".join(lines))


# The figure's panels: which runs each compares (run names of scripts/studies/recipe_sweep.sh); a run named
# in no panel is left out of the figure, not of the table.
PANELS = {
    "learning rate (T = 0.5; T = 0.7)": ["r04_T0.5_lr1e-4", "r01_T0.5_lr5e-5", "r03_T0.5_lr2e-5", "r05_T0.7_lr2e-5",
                                         "r15_T0.7_lr1e-5"],
    "temperature (lr 2e-5; lr 5e-5)": ["r03_T0.5_lr2e-5", "r05_T0.7_lr2e-5", "r01_T0.5_lr5e-5", "r02_T1.0_lr5e-5"],
    "the reward (against r05; r07 against r03)": ["r05_T0.7_lr2e-5", "r08_T0.7_notrunc", "r09_T0.7_beta0.5",
                                                  "r03_T0.5_lr2e-5", "r07_T0.5_lr2e-5_lam0"],
    "the batch and L (against r05)": ["r05_T0.7_lr2e-5", "r10_T0.7_K4q4", "r14_T0.7_K16q1", "r11_T0.7_L96",
                                      "r12_T0.7_24steps"],
    "LoRA (against full fine-tuning)": ["r03_T0.5_lr2e-5", "r06_T0.5_lora_lr2e-4", "r05_T0.7_lr2e-5",
                                        "r13_T0.7_lora_lr1e-3"],
    "seeds: lr 2e-5 and 1e-5 (T = 0.7)": ["r05_T0.7_lr2e-5", "r05s1_T0.7_lr2e-5", "r05s2_T0.7_lr2e-5",
                                          "r15_T0.7_lr1e-5", "r15s1_T0.7_lr1e-5", "r15s2_T0.7_lr1e-5"],
    "seeds: lr 1e-5, 36 steps": ["r16_T0.7_lr1e-5_36steps", "r16s1_T0.7_lr1e-5_36steps", "r16s2_T0.7_lr1e-5_36steps"],
}


def evals_from_table(md: str) -> tuple[dict, int]:
    """{run: [{"step", "acc", "lo", "hi"}]} (percent) and n from a committed results/latro_recipe.md:
    its "val accuracy % (step: acc [95%])" column, so the figure can be drawn without the runs."""
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    col = head.index("val accuracy % (step: acc [95%])")
    out = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        pts = re.findall(r"(\d+): ([\d.]+) \[(\d+), (\d+)\]", cells[col])
        out[cells[0]] = [{"step": int(st), "acc": float(a), "lo": float(lo), "hi": float(hi)} for st, a, lo, hi in pts]
    n = int(re.search(r"n = (\d+) per point", md).group(1))
    return out, n


def _figure(evals: dict, path: str, n: int) -> None:
    """One panel per comparison (:data:`PANELS`), a few runs each, Wilson 95% bars (offset a little
    in step so that they do not overlap). ``evals``: {run: [{"step", "acc", "lo", "hi"}]} in percent."""
    from matplotlib.figure import Figure

    panels = {title: [r for r in runs if evals.get(r)] for title, runs in PANELS.items()}
    panels = {t: r for t, r in panels.items() if r}
    cols = 3
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.1 * rows + 0.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, runs) in zip(axes.flat, panels.items()):
        for i, run in enumerate(runs):
            ev, dx = evals[run], (i - (len(runs) - 1) / 2) * 0.25
            acc = [e["acc"] for e in ev]
            ax.errorbar([e["step"] + dx for e in ev], acc, yerr=[[a - e["lo"] for a, e in zip(acc, ev)],
                                                                 [e["hi"] - a for a, e in zip(acc, ev)]],
                        marker="o", ms=3, capsize=2, lw=1.2, color=f"C{i}", label=run)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step (0 = starting model)", fontsize=8)
        ax.set_ylabel(f"validation accuracy %, n = {n}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("LaTRO recipe sweep: greedy validation accuracy, Wilson 95% bars (one seed per run unless named)",
                 fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
