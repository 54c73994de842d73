#!/usr/bin/env bash
# Self-evaluation and Figure 2 per model, after `make demo` (uses notebook 04's seed-0 runs):
#   bash scripts/studies/self_eval_demo.sh
# For Base, SFT, RFT (when trained) and LaTRO (the checkpoints chosen on validation): K=4 rationales at T=1 for 25
# arithmetic test questions, the AUROC of the self-reward log p(y|x⊕z) at telling right from wrong
# rationales, and the answer NLLs of Figure 2 (no rationale / gold rationale / own right / own wrong).
# Writes results/self_eval_arithmetic_demo.{md,csv,json} and figures/figure2_arithmetic_models_demo.png.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "${BASH_SOURCE[0]}"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
export LATRO_DATA_DIR=${LATRO_DATA_DIR:-../shared/data}
RUNS=runs/demo/04_train_latro
OUT=runs/selfeval_demo
common=(--task arithmetic --split test --limit 25 --k 4 --max-new-tokens 96 --greedy false --auroc true --nll true
        --batch-questions 25 --progress false --overwrite true)
[ -f "$OUT/base/summary.json" ] || .venv/bin/latro evaluate "${common[@]}" --out "$OUT/base" > /dev/null
for m in sft rft latro; do
  [ -d "$RUNS/$m-seed0" ] || continue              # a method the demo did not train (RFT is off by default)
  ckpt="$RUNS/$m-seed0/best"                       # the validation-chosen step; final when that was the last
  [ -d "$ckpt" ] || ckpt="$RUNS/$m-seed0/final"
  # done already, unless the model was trained again since (a new `make demo`)
  [ "$OUT/$m/summary.json" -nt "$ckpt" ] || .venv/bin/latro evaluate "${common[@]}" --model "$ckpt" --out "$OUT/$m" > /dev/null
done
.venv/bin/latro tables --runs "$OUT" --out results --name self_eval_arithmetic_demo --maj-k 4
.venv/bin/python - <<'PY'
from latro_core.plots import figure2
OUT = "runs/selfeval_demo"
from pathlib import Path
print(figure2({name: f"{OUT}/{m}/summary.json" for name, m in
               (("Base", "base"), ("SFT", "sft"), ("RFT", "rft"), ("LaTRO", "latro"))
               if Path(f"{OUT}/{m}/summary.json").exists()},
              "figures/figure2_arithmetic_models_demo.png"))
PY
