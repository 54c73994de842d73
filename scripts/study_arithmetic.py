"""The arithmetic study (issue "Evidence a reviewer accepts"): SFT, RFT and LaTRO tuned with the same
budget on validation, then 5 fresh seeds of each pick at 12 and 36 steps on the in-distribution test
split and the unseen-numbers split, with intervals over seeds and questions.

    .venv/bin/python scripts/study_arithmetic.py                 # everything not yet recorded, then the report
    .venv/bin/python scripts/study_arithmetic.py --phase report  # only the tables and the figure
    .venv/bin/python scripts/study_arithmetic.py --dry-run       # what is recorded, what would run

Resume-safe (latro_core/study.py): stop it at any point; a rerun, here or in a fresh clone, skips the
recorded cells (results/study_arithmetic/<cell>/done.json). About 6 hours on 2 cores from scratch,
two one-thread runs at a time.

The design (every method gets the same):
- tuning grid: lr ∈ {5e-6, 1.5e-5, 5e-5} (10× span); the two sampling methods also T ∈ {0.7, 1.0};
  2 seeds per point (0, 1); 12 steps; greedy accuracy on 200 validation questions at step 12;
  pick = the highest mean over the 2 seeds (ties: the smaller lr, then the lower T);
- final: the pick, seeds 10–14 (never used in tuning), 12 and 36 steps; the 36-step runs log
  validation accuracy (100 questions) every 6 steps for the figure; every final model and the
  base model answer 200 test and 200 unseen questions greedily (L + 32 tokens);
- the demo's other settings: LaTRO and RFT sample K = 8 rationales for 2 questions per step at L = 64
  (LaTRO: β = 0.05, the released code's truncation penalty); SFT takes 4 gold rationales per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from latro_core.cli import add_dataclass_args, command_line, config_from_args, git_commit  # noqa: E402
from latro_core.errors import LatroError  # noqa: E402
from latro_core.evaluate import ANSWER_TOKENS  # noqa: E402
from latro_core.plots import plot_seed_bands  # noqa: E402
from latro_core.study import (Cell, StudyConfig, compare, format_difference, format_stats, pick, pct,  # noqa: E402
                              require_phase, row_stats, run_cells, tune_cells)

L = 64
LRS = (5e-6, 1.5e-5, 5e-5)
TEMPERATURES = (0.7, 1.0)
TUNE_SEEDS, FINAL_SEEDS, LENGTHS = (0, 1), (10, 11, 12, 13, 14), (12, 36)
METHODS = {"sft": "SFT", "rft": "RFT", "latro": "LaTRO"}
SAMPLING = dict(task="arithmetic", questions_per_step=2, k=8, max_new_tokens=L, micro_batch=16)
COMMON = {"latro": dict(SAMPLING, beta=0.05, truncation="batch_mean"), "rft": dict(SAMPLING),
          "sft": dict(task="arithmetic", questions_per_step=4, max_new_tokens=L, micro_batch=4)}
GRIDS = {m: [{"lr": lr, **({"temperature": t} if m != "sft" else {})} for lr in LRS
             for t in (TEMPERATURES if m != "sft" else (None,))] for m in METHODS}
TUNE_EVAL = dict(steps=12, eval_every=12, eval_split="validation", eval_limit=200)
CURVE_EVAL = dict(eval_every=6, eval_split="validation", eval_limit=100)
EVAL = dict(task="arithmetic", limit=200, max_new_tokens=L + ANSWER_TOKENS, k=0, auroc=False, batch_questions=50)
SPLITS = ("test", "unseen")


def tuning() -> list[Cell]:
    common = {m: {**COMMON[m], **TUNE_EVAL} for m in METHODS}
    return tune_cells(GRIDS, common, TUNE_SEEDS)


def finals(out: Path) -> tuple[list[Cell], dict]:
    """The base cells and, for each method whose tuning is recorded, its final cells; and the picks."""
    cells = [Cell("base", "base", None, SPLITS + ("validation",), "Base")]
    picks = {}
    for m in METHODS:
        point, rows = pick(m, GRIDS[m], TUNE_SEEDS, out)
        picks[m] = {"pick": point, "grid": rows}
        if point is None:
            continue
        for steps in LENGTHS:
            extra = CURVE_EVAL if steps == 36 else {}
            cells += [Cell(f"final/{m}_{steps}steps_seed{s}", m, {**COMMON[m], **point, **extra, "steps": steps,
                                                                   "seed": s}, SPLITS, f"{METHODS[m]}, {steps} steps")
                      for s in FINAL_SEEDS]
    return cells, picks


# ----------------------------------------------------------------------------- the report

def report(cfg: StudyConfig, cmd: str) -> None:
    out = Path(cfg.out)
    cells, picks = finals(out)
    rows = {}
    for c in cells:
        rows.setdefault(c.label, []).append(c)
    table = []
    for label, group in rows.items():
        entry = {"row": label, "method": group[0].method, "seeds_planned": len(group)}
        for split in SPLITS:
            entry[split] = row_stats(out, group, split)
        table.append(entry)
    comparisons = []
    for steps in LENGTHS:
        latro = rows.get(f"LaTRO, {steps} steps", [])
        for other in ("Base", f"SFT, {steps} steps", f"RFT, {steps} steps"):
            for split in SPLITS:
                d = compare(out, latro, rows.get(other, []), split)
                comparisons.append({"a": f"LaTRO, {steps} steps", "b": other, "split": split, **(d or {})})
    curves = {}
    for label, group in rows.items():
        if label.endswith("36 steps"):
            runs = [[(r["step"], r["eval_accuracy"]) for r in map(json.loads, (out / c.name / "metrics.jsonl")
                     .read_text().splitlines()) if "eval_accuracy" in r]
                    for c in group if (out / c.name / "done.json").exists()]
            if runs:
                curves[label.split(",")[0]] = runs
    base_val = row_stats(out, rows["Base"], "validation")
    figure = None
    if curves:
        figure = plot_seed_bands(curves, "figures/study_arithmetic.png", eval_n=CURVE_EVAL["eval_limit"],
                                 start=None if base_val is None else base_val["mean"],
                                 title="36-step runs: validation accuracy, greedy (%)")
    meta = {"command": cmd, "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "design": {"lr_grid": LRS, "temperature_grid": TEMPERATURES, "tune_seeds": TUNE_SEEDS,
                       "final_seeds": FINAL_SEEDS, "lengths": LENGTHS, "common": COMMON, "tune_eval": TUNE_EVAL,
                       "eval": EVAL, "rule": "highest mean validation accuracy over the tuning seeds; ties: "
                                              "the earlier grid point (smaller lr, then lower T)"},
            "picks": picks, "rows": table, "comparisons": comparisons, "figure": figure}
    out.mkdir(parents=True, exist_ok=True)
    Path(f"{cfg.out}.json").write_text(json.dumps(meta, indent=1, default=str))
    with open(f"{cfg.out}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "split", "mean", "ci_lo", "ci_hi", "ci", "seeds", "n", "per_seed", "finished"])
        for e in table:
            for split in SPLITS:
                c = e[split]
                if c:
                    w.writerow([e["row"], split, c["mean"], *c["ci95"], c["ci"], c["seeds"], c["n"][0],
                                " ".join(f"{x:.3f}" for x in c["per_seed"]), c["finished"]])
    Path(f"{cfg.out}.md").write_text(markdown(meta))
    print(f"{cfg.out}.md, .json, .csv" + (f", {figure}" if figure else ""))


def markdown(meta: dict) -> str:
    d = meta["design"]
    lines = ["# Arithmetic study: SFT, RFT and LaTRO tuned alike, 5 fresh seeds, unseen numbers",
             "",
             f"Command: `{meta['command']}` at commit `{meta['git_commit']}` (the records of every run are in "
             "`results/study_arithmetic/`, one folder per run with its commands). Embedded "
             "SmolLM2-135M-Instruct, CPU, fp32.",
             "",
             "**Intervals** are 95% two-level bootstrap intervals: seeds resampled, then questions (a question "
             "keeps its answers under every seed), so they cover which models were trained and which questions "
             "were asked (`latro_core.stats.seed_question_interval`); the base model is one model, so its "
             "interval is Wilson's over questions. **P(A>B)** is rliable's probability of improvement over seed "
             "pairs. In-distribution = the `test` split (numbers 2–12, every (start, op, amount) also in "
             "training); unseen = the `unseen` split (numbers 13–30, no triple shared with training). "
             f"n = {d['eval']['limit']} questions per split, greedy, L + 32 = {d['eval']['max_new_tokens']} "
             "tokens; finished = the share of greedy answers that ended (EOS or the answer template) within "
             "that budget, in-distribution.",
             "",
             "## Tuning (validation only, the same budget for every method)",
             "",
             f"Grid: lr ∈ {list(d['lr_grid'])}; RFT and LaTRO also T ∈ {list(d['temperature_grid'])}; seeds "
             f"{list(d['tune_seeds'])}; {d['tune_eval']['steps']} steps; greedy accuracy on "
             f"{d['tune_eval']['eval_limit']} validation questions at the last step. Rule: {d['rule']}.",
             "",
             "| method | lr | T | validation % per seed | mean % | picked |",
             "|---|---|---|---|---|---|"]
    for m, p in meta["picks"].items():
        for r in p["grid"]:
            per = " / ".join(pct(a) for a in r["validation"])
            lines.append(f"| {m} | {r['lr']:g} | {r.get('temperature', '–')} | {per} | {pct(r['mean'])} | "
                         f"{'**yes**' if r.get('picked') else ''} |")
    lines += ["", "## Results (final models, no selection: the last step of each run)", "",
              "| row | in-distribution % [95%] | unseen % [95%] | finished % | seeds recorded | per-seed in-dist. % |",
              "|---|---|---|---|---|---|"]
    for e in meta["rows"]:
        t, u = e["test"], e["unseen"]
        seeds = t["seeds"] if t else 0
        lines.append(f"| {e['row']} | {format_stats(t)} | {format_stats(u)} | {pct(t['finished']) if t else '–'} | "
                     f"{seeds} of {e['seeds_planned']} | {' / '.join(pct(x) for x in t['per_seed']) if t else '–'} |")
    lines += ["", "## LaTRO against the others (A − B, points [95% over seeds and questions], P(A>B))", "",
              "| A | B | in-distribution | unseen |", "|---|---|---|---|"]
    by = {(c["a"], c["b"], c["split"]): c for c in meta["comparisons"]}
    for a, b in dict.fromkeys((c["a"], c["b"]) for c in meta["comparisons"]):
        cells = [format_difference(by[(a, b, s)] if "mean" in by[(a, b, s)] else None) for s in SPLITS]
        lines.append(f"| {a} | {b} | {cells[0]} | {cells[1]} |")
    if meta["figure"]:
        lines += ["", f"Figure: `{meta['figure']}` (36-step runs, validation accuracy every 6 steps on 100 "
                      "questions; line: mean over seeds, band: lowest to highest seed; star: the base model)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, StudyConfig)
    cfg = config_from_args(StudyConfig, parser.parse_args(argv))
    try:
        require_phase(cfg.phase)
        failed = []
        if cfg.phase in ("tune", "all"):
            failed += run_cells(tuning(), cfg, EVAL)
        if cfg.phase in ("final", "all"):
            failed += run_cells(finals(Path(cfg.out))[0], cfg, EVAL)
        if cfg.phase in ("report", "all") and not cfg.dry_run:
            report(cfg, command_line("study", cfg).replace("latro study", "python scripts/study_arithmetic.py"))
    except LatroError as e:
        print(f"study: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: stopped; the recorded cells stay, rerun the same command to continue", file=sys.stderr)
        return 130
    if failed:
        print(f"study: {len(failed)} cells failed: {', '.join(failed)} (logs under {cfg.scratch}/)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
