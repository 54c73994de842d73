#!/usr/bin/env bash
# Three seeds of the demo recipe (r05: T 0.7, lr 2e-5) against three of r15 (lr 1e-5), after
#   scripts/studies/recipe_sweep.sh r05s1_T0.7_lr2e-5 r15s1_T0.7_lr1e-5 r05s2_T0.7_lr2e-5 r15s2_T0.7_lr1e-5
# (seed 0 of each is in the sweep already). Evaluates every run's final model (step 12) greedily on
# the sweep's 200 validation questions, saving per-question predictions, and builds
# results/latro_recipe_seeds.md with `latro tables`: mean over seeds and a 95% interval from a
# bootstrap that resamples questions (each keeping its answers under every seed).
#   bash scripts/studies/recipe_seeds.sh
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "${BASH_SOURCE[0]}"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
export LATRO_DATA_DIR=${LATRO_DATA_DIR:-../shared/data}
OUT=runs/recipe_seeds
common=(--task arithmetic --split validation --limit 200 --max-new-tokens 96 --k 0 --auroc false
        --batch-questions 50 --progress false)
[ -f "$OUT/base/summary.json" ] || .venv/bin/latro evaluate "${common[@]}" --out "$OUT/base" > /dev/null
for run in r05_T0.7_lr2e-5 r05s1_T0.7_lr2e-5 r05s2_T0.7_lr2e-5 r15_T0.7_lr1e-5 r15s1_T0.7_lr1e-5 r15s2_T0.7_lr1e-5; do
  label=$([[ $run == r05* ]] && echo "LaTRO lr 2e-5 (demo recipe)" || echo "LaTRO lr 1e-5")
  [ -f "$OUT/$run/summary.json" ] || .venv/bin/latro evaluate "${common[@]}" --model "runs/recipe/$run/final" \
    --model-label "$label" --out "$OUT/$run" > /dev/null
done
.venv/bin/latro tables --runs "$OUT" --out results --name latro_recipe_seeds --split validation
# the paired difference: per validation question, the mean over seeds of lr 1e-5's correctness minus
# the demo recipe's, bootstrapped over questions (the same 200 questions under all six runs)
.venv/bin/python - <<'PY' | tee -a results/latro_recipe_seeds.md
from pathlib import Path
from latro_core.results import question_correct
from latro_core.stats import paired_difference
OUT = Path("runs/recipe_seeds")

def runs(*names):
    return [question_correct(OUT / name / "summary.json") for name in names]

d = paired_difference(runs("r15_T0.7_lr1e-5", "r15s1_T0.7_lr1e-5", "r15s2_T0.7_lr1e-5"),
                      runs("r05_T0.7_lr2e-5", "r05s1_T0.7_lr2e-5", "r05s2_T0.7_lr2e-5"))
print(f"\nPaired difference, lr 1e-5 minus lr 2e-5 (mean over 3 seeds each, n = {d['n']} validation questions): "
      f"{100 * d['mean']:+.1f} points [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] (95% bootstrap over "
      f"questions; `bash scripts/studies/recipe_seeds.sh`).")
PY
