#!/usr/bin/env bash
# One point of the LaTRO recipe sweep on the arithmetic task (results/latro_recipe.md):
#   scripts/studies/sweep_latro.sh NAME [latro train flags...]
# trains the embedded model with the defaults below (later flags win) and logs greedy accuracy on
# 200 validation questions every --eval-every steps (add --eval-at-start for step 0), into
# runs/recipe/NAME/ (metrics.jsonl, samples.jsonl: one question's K rationales per step).
# One thread per run, so two runs share the 2 cores without oversubscribing them
# (results/latro_step_throughput.md). Summary: python scripts/tools/summarize_sweep.py runs/recipe
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "${BASH_SOURCE[0]}"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
name=$1; shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
export LATRO_DATA_DIR=${LATRO_DATA_DIR:-../shared/data}
mkdir -p runs/recipe
.venv/bin/latro train --task arithmetic --out-dir "runs/recipe/$name" --steps 16 --questions-per-step 2 --k 8 \
  --max-new-tokens 64 --micro-batch 16 --save-every 1000 --eval-every 8 --eval-split validation --eval-limit 200 \
  --progress false "$@" > "runs/recipe/$name.log" 2>&1
