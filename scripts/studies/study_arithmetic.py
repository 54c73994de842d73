"""The arithmetic study (issue "Evidence a reviewer accepts"): SFT, RFT and LaTRO tuned with the same
budget on validation, then 5 fresh seeds of each pick at 12 and 36 steps on the in-distribution test
split and the unseen-numbers split, with intervals over seeds and questions.

    .venv/bin/python scripts/studies/study_arithmetic.py                 # everything not yet recorded, then the report
    .venv/bin/python scripts/studies/study_arithmetic.py --phase report  # only the tables and the figure
    .venv/bin/python scripts/studies/study_arithmetic.py --dry-run       # what is recorded, what would run

Resume-safe (latro_core/experiments/study.py): stop it at any point; a rerun, here or in a fresh clone, skips the
recorded cells (results/study_arithmetic/<cell>/done.json). About 5 hours on 2 cores from scratch,
two one-thread runs at a time (a 12-step tuning cell, training and its 200-question validation, took
SFT ~190 s, RFT ~300 s, LaTRO ~525 s: the wall_s of each done.json).

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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from latro_core.answers import ANSWER_TOKENS  # noqa: E402
from latro_core.experiments.study import Cell, Design, pick, study_main, tune_cells  # noqa: E402

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
    picks = {m: dict(zip(("pick", "grid"), pick(m, GRIDS[m], TUNE_SEEDS, out))) for m in METHODS}
    # every method's 12-step seeds before any 36-step run, so a study cut short has a whole row per method
    for steps in LENGTHS:
        for m in METHODS:
            point = picks[m]["pick"]
            if point is None:
                continue
            extra = CURVE_EVAL if steps == 36 else {}
            cells += [Cell(f"final/{m}_{steps}steps_seed{s}", m, {**COMMON[m], **point, **extra, "steps": steps,
                                                                   "seed": s}, SPLITS, f"{METHODS[m]}, {steps} steps")
                      for s in FINAL_SEEDS]
    return cells, picks


# ----------------------------------------------------------------------------- the report

INTRO = ("**Intervals** are 95% two-level bootstrap intervals: seeds resampled, then questions (a question keeps "
         "its answers under every seed), so they cover which models were trained and which questions were asked "
         "(`latro_core.stats.seed_question_interval`); the base model is one model, so its interval is Wilson's over "
         "questions. **P(A>B)** is rliable's probability of improvement over seed pairs. `test` = in-distribution "
         "(numbers 2–12, every (start, op, amount) also in training); `unseen` = numbers 13–30, no triple shared "
         f"with training. n = {EVAL['limit']} questions per split, greedy, L + 32 = {EVAL['max_new_tokens']} tokens; "
         "finished = the share of greedy answers that ended (EOS or the answer template) within that budget, on test.")
GRID = (f"Grid: lr ∈ {list(LRS)}; RFT and LaTRO also T ∈ {list(TEMPERATURES)}; seeds {list(TUNE_SEEDS)}; "
        f"{TUNE_EVAL['steps']} steps; greedy accuracy on {TUNE_EVAL['eval_limit']} validation questions at the last "
        "step. Rule: the highest mean validation accuracy over the tuning seeds; ties: the earlier grid point "
        "(smaller lr, then lower T).")
DESIGN_INFO = {"lr_grid": LRS, "temperature_grid": TEMPERATURES, "tune_seeds": TUNE_SEEDS, "final_seeds": FINAL_SEEDS,
               "lengths": LENGTHS, "common": COMMON, "tune_eval": TUNE_EVAL, "curve_eval": CURVE_EVAL, "eval": EVAL}
DESIGN = Design(title="Arithmetic study: SFT, RFT and LaTRO tuned alike, 5 fresh seeds, unseen numbers",
                name="study_arithmetic", intro=INTRO, grid=GRID, curve_n=CURVE_EVAL["eval_limit"], info=DESIGN_INFO,
                comparisons=[(f"LaTRO, {n} steps", b) for n in LENGTHS
                             for b in ("Base", f"SFT, {n} steps", f"RFT, {n} steps")])


def main(argv=None) -> int:
    return study_main(argv, script="scripts/studies/study_arithmetic.py", tuning=lambda: [(tuning(), None)], finals=finals,
                      design=DESIGN, eval_kw=EVAL, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
