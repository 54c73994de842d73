#!/usr/bin/env bash
# Does the demo's lift grow with training? Notebook 04's LaTRO and RFT recipes (profiles.DEMO_LATRO,
# DEMO_RFT) trained 36 steps instead of 12, three seeds each:
#   LaTRO: scripts/recipe_sweep.sh r16_T0.7_lr1e-5_36steps r16s1_T0.7_lr1e-5_36steps r16s2_T0.7_lr1e-5_36steps
#   RFT:   this script trains them (runs/longer/rft-seed*), two at a time, one thread each.
# Both log greedy accuracy on the same 200 validation questions every 6 steps. Then every final
# model (step 36, no selection) and the base model answer the demo table's 200 test questions
# greedily (L + 32 = 96 tokens), and results/longer_training.md gets the table (`latro tables`:
# questions bootstrapped across seeds), the paired LaTRO − RFT difference and
# figures/longer_training.png (the training curves).
#   bash scripts/longer_training.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LATRO_DATA_DIR=${LATRO_DATA_DIR:-../shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=runs/longer
LATRO=(r16_T0.7_lr1e-5_36steps r16s1_T0.7_lr1e-5_36steps r16s2_T0.7_lr1e-5_36steps)
mkdir -p "$OUT/eval"
# RFT: DEMO_RFT (K = 8, 2 questions per step, L = 64, T = 0.7, lr 2e-5) for 36 steps
for s in 0 1 2; do [ -d "$OUT/rft-seed$s/final" ] || echo "$s"; done |
  xargs -P 2 -I{} bash -c '.venv/bin/latro rft --task arithmetic --steps 36 --questions-per-step 2 --k 8 \
    --max-new-tokens 64 --temperature 0.7 --lr 2e-5 --micro-batch 16 --save-every 1000 --keep-resume-state false \
    --eval-every 6 --eval-split validation --eval-limit 200 --seed {} --progress false \
    --out-dir runs/longer/rft-seed{} --overwrite > runs/longer/rft-seed{}.log 2>&1'
for run in "${LATRO[@]}"; do
  [ -d "runs/recipe/$run/final" ] || { echo "missing runs/recipe/$run/final: run scripts/recipe_sweep.sh ${LATRO[*]}" >&2; exit 1; }
done
# test: greedy on notebook 04's 200 test questions (its eval settings: limit 200, L + 32 = 96)
common=(--task arithmetic --split test --limit 200 --max-new-tokens 96 --k 0 --auroc false --batch-questions 50
        --progress false)
{
  [ -f "$OUT/eval/base/summary.json" ] || echo "base"
  for i in 0 1 2; do
    label='--model-label "SmolLM2-135M-Instruct, 36 steps"'
    [ -f "$OUT/eval/latro-seed$i/summary.json" ] || echo "latro-seed$i --model runs/recipe/${LATRO[$i]}/final $label"
    [ -f "$OUT/eval/rft-seed$i/summary.json" ] || echo "rft-seed$i --model $OUT/rft-seed$i/final $label"
  done
} | xargs -P 2 -L 1 bash -c '.venv/bin/latro evaluate '"${common[*]}"' "$@" --out runs/longer/eval/$0 \
      > runs/longer/eval/$0.log 2>&1'
.venv/bin/latro tables --runs "$OUT/eval" --out results --name longer_training --split test
.venv/bin/python - "${LATRO[@]}" <<'PY' | tee -a results/longer_training.md
import json
import sys
from pathlib import Path

from latro_core.plots import plot_training
from latro_core.results import question_correct
from latro_core.stats import paired_difference

OUT, latro = Path("runs/longer"), sys.argv[1:]

DEMO = Path("runs/demo/04_train_latro/eval")     # notebook 04's 12-step models on the same questions (make demo)
seeds = range(3)

def per_seed(folder, method):
    """{question id: correct} of each seed's greedy answers (its evaluation's predictions.jsonl)."""
    return [question_correct(folder / f"{method}-seed{s}" / "summary.json") for s in seeds]

def paired(what, a, b):
    d = paired_difference(a, b)
    print(f"- {what} (mean over 3 seeds each, n = {d['n']} test questions): {100 * d['mean']:+.1f} points "
          f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] (95% bootstrap over questions)")

print("\nPaired differences:\n")
latro36, rft36 = per_seed(OUT / "eval", "latro"), per_seed(OUT / "eval", "rft")
paired("LaTRO minus RFT, both 36 steps", latro36, rft36)
if all((DEMO / f"{m}-seed{s}" / "predictions.jsonl").exists() for m in ("latro", "rft") for s in seeds):
    for m, at36 in (("latro", latro36), ("rft", rft36)):
        paired(f"{'LaTRO' if m == 'latro' else 'RFT'} 36 steps minus 12 steps (notebook 04's demo models)", at36,
               per_seed(DEMO, m))
print()
runs = {**{f"LaTRO seed {s}": Path("runs/recipe") / latro[s] / "metrics.jsonl" for s in seeds},
        **{f"RFT seed {s}": OUT / f"rft-seed{s}" / "metrics.jsonl" for s in seeds}}
print("Validation accuracy % (200 questions, greedy) by step:\n")
print("| run | " + " | ".join(f"step {k}" for k in range(6, 37, 6)) + " |\n|---|" + "---|" * 6)
for label, path in runs.items():
    acc = {m["step"]: m["eval_accuracy"] for m in map(json.loads, path.open()) if "eval_accuracy" in m}
    print(f"| {label} | " + " | ".join(f"{100 * acc[k]:.1f}" if k in acc else "–" for k in range(6, 37, 6)) + " |")
start = json.loads(Path("runs/recipe/r01_T0.5_lr5e-5/metrics.jsonl").open().readline())   # the base model, step 0
path = plot_training(runs, "figures/longer_training.png", start={"eval_accuracy": start["eval_accuracy"]}, eval_n=200)
print(f"\nFigure: `{path}` (the black star: the base model on the same 200 validation questions, "
      "from runs/recipe/r01_T0.5_lr5e-5). Command: `bash scripts/longer_training.sh`.")
PY
