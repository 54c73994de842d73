"""The rewards study (issue "After LaTRO"): LaTRO's step with each reward of the family, beside SFT, RFT
and LaTRO, under the arithmetic study's rules (scripts/studies/study_arithmetic.py): the same tuning grid and
pick rule on validation, 5 fresh seeds of each pick at 12 and 36 steps, the test and unseen splits,
intervals over seeds and questions.

    .venv/bin/python scripts/studies/study_rewards.py                  # everything not yet recorded, then the report
    .venv/bin/python scripts/studies/study_rewards.py --phase report   # only the tables and the figure
    .venv/bin/python scripts/studies/study_rewards.py --dry-run        # what is recorded, what would run

The Base, SFT, RFT and LaTRO rows are the arithmetic study's own runs (their records stay in
results/study_arithmetic/; a missing one is run there). The five other rewards (`--reward probability |
rlpr | verifier | k_sample_bound | information_gain`, each with `--truncation none`: the released
code's γ × batch-mean rule is LaTRO's own) are tuned and trained here, into results/study_rewards/.
Resume-safe like the arithmetic study. About 5 hours on 2 cores for the rows of three rewards.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "studies"))
import study_arithmetic as arith  # noqa: E402
from latro_core.experiments.study import Cell, Design, pick, study_main, tune_cells  # noqa: E402

SHARED = "results/study_arithmetic"              # where the Base, SFT, RFT and LaTRO records live
REWARDS = {"probability": "LaTRO-probability (VeriFree)", "rlpr": "LaTRO-RLPR", "verifier": "LaTRO-verifier (RLVR)",
           "k_sample_bound": "LaTRO-K-sample bound (JEPO)", "information_gain": "LaTRO-information gain"}
COMMON = {r: {**arith.COMMON["latro"], "reward": r, "truncation": "none"} for r in REWARDS}
GRIDS = {r: arith.GRIDS["latro"] for r in REWARDS}       # the same lr × T grid as every sampling method


def tuning() -> list[Cell]:
    return tune_cells(GRIDS, {r: {**COMMON[r], **arith.TUNE_EVAL} for r in REWARDS}, arith.TUNE_SEEDS,
                      methods={r: "latro" for r in REWARDS})


def finals(out: Path) -> tuple[list[Cell], dict]:
    """The arithmetic study's cells (records there) and, for each reward whose tuning is recorded here, its final cells."""
    shared, picks = arith.finals(Path(SHARED))
    cells = [Cell(**{**c.__dict__, "home": SHARED}) for c in shared]
    for r, label in REWARDS.items():
        point, rows = pick(r, GRIDS[r], arith.TUNE_SEEDS, out)
        picks[r] = {"pick": point, "grid": rows}
        if point is None:
            continue
        for steps in arith.LENGTHS:
            extra = arith.CURVE_EVAL if steps == 36 else {}
            cells += [Cell(f"final/{r}_{steps}steps_seed{s}", "latro",
                           {**COMMON[r], **point, **extra, "steps": steps, "seed": s}, arith.SPLITS,
                           f"{label}, {steps} steps") for s in arith.FINAL_SEEDS]
    return cells, picks


DESIGN = Design(
    title="Rewards study: LaTRO and its successors beside SFT and RFT, tuned alike, 5 fresh seeds, unseen numbers",
    name="study_rewards", intro=arith.INTRO + " The Base, SFT, RFT and LaTRO rows are the arithmetic study's runs.",
    grid=arith.GRID + " The other rewards get LaTRO's grid (lr × T), 2 seeds per point, the same rule.",
    curve_n=arith.CURVE_EVAL["eval_limit"], info={**arith.DESIGN_INFO, "rewards_common": COMMON},
    comparisons=[(f"{label}, {n} steps", b) for n in arith.LENGTHS for label in REWARDS.values()
                 for b in (f"LaTRO, {n} steps", f"RFT, {n} steps", "Base")])


def main(argv=None) -> int:
    return study_main(argv, script="scripts/studies/study_rewards.py", finals=finals, design=DESIGN, eval_kw=arith.EVAL,
                      tuning=lambda: [(arith.tuning(), SHARED), (tuning(), None)], doc=__doc__,
                      defaults={"out": "results/study_rewards", "scratch": "runs/study_rewards"})


if __name__ == "__main__":
    sys.exit(main())
