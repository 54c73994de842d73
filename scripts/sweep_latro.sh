#!/usr/bin/env bash
# One point of the LaTRO recipe sweep on the arithmetic task (results/latro_sweep.md):
#   scripts/sweep_latro.sh NAME [latro train flags...]
# trains the embedded model for the given flags (defaults below; later flags win) and logs greedy
# validation accuracy on 50 questions at every --eval-every steps, into runs/sweep/NAME/metrics.jsonl.
# One thread per run, so two runs share the 2 cores without thrashing.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LATRO_DATA_DIR=${LATRO_DATA_DIR:-../shared/data}
mkdir -p runs/sweep
.venv/bin/latro train --task arithmetic --out-dir "runs/sweep/$name" --steps 24 --questions-per-step 2 --k 4 \
  --max-new-tokens 64 --micro-batch 8 --save-every 1000 --eval-every 12 --eval-split validation --eval-limit 50 \
  "$@" > "runs/sweep/$name.log" 2>&1
