#!/usr/bin/env bash
# The LaTRO recipe sweep behind results/latro_recipe.md: every run of RUNS below through
# scripts/studies/sweep_latro.sh, two at a time (one thread each), then the summary and figure.
#   scripts/studies/recipe_sweep.sh                                  # every run without a final/ model yet
#   scripts/studies/recipe_sweep.sh r03_T0.5_lr2e-5 r05_T0.7_lr2e-5  # (re)run these
#   scripts/studies/recipe_sweep.sh --dry-run [NAME...]              # print the runs' commands, start none
# Shared settings (each run may override): 12 steps x 2 questions x K = 8 (192 rationales),
# L = 64, greedy validation on 200 questions at steps 6 and 12 (step 0: --eval-at-start, once per L).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "${BASH_SOURCE[0]}"; exit 0 ;; esac
cd "$(dirname "$0")/../.."
COMMON="--steps 12 --questions-per-step 2 --k 8 --max-new-tokens 64 --micro-batch 16 --eval-every 6"
# in the order they were run (two at a time); the signal study (results/self_reward_signal.md) chose
# T = 0.5. r01-r04 showed lr 5e-5 and 1e-4 collapsing the rationales within a few steps, so r06-r07
# start from lr 2e-5 (r03); r05 (T = 0.7) did best, so r08 on start from it.
RUNS=(
  "r01_T0.5_lr5e-5        --temperature 0.5 --lr 5e-5 --eval-at-start"
  "r02_T1.0_lr5e-5        --temperature 1.0 --lr 5e-5"
  "r03_T0.5_lr2e-5        --temperature 0.5 --lr 2e-5"
  "r04_T0.5_lr1e-4        --temperature 0.5 --lr 1e-4"
  "r05_T0.7_lr2e-5        --temperature 0.7 --lr 2e-5"
  "r06_T0.5_lora_lr2e-4   --temperature 0.5 --lora --lr 2e-4"
  "r07_T0.5_lr2e-5_lam0   --temperature 0.5 --lr 2e-5 --lam 0"
  # r08 on: one change at a time from r05 (T = 0.7, lr 2e-5), the demo's recipe
  "r08_T0.7_notrunc       --temperature 0.7 --lr 2e-5 --truncation none"
  "r09_T0.7_beta0.5       --temperature 0.7 --lr 2e-5 --beta 0.5"
  "r10_T0.7_K4q4          --temperature 0.7 --lr 2e-5 --k 4 --questions-per-step 4"
  "r11_T0.7_L96           --temperature 0.7 --lr 2e-5 --max-new-tokens 96 --eval-at-start"
  "r12_T0.7_24steps       --temperature 0.7 --lr 2e-5 --steps 24 --eval-every 6"
  "r13_T0.7_lora_lr1e-3   --temperature 0.7 --lora --lr 1e-3"
  "r14_T0.7_K16q1         --temperature 0.7 --lr 2e-5 --k 16 --questions-per-step 1"
  "r15_T0.7_lr1e-5        --temperature 0.7 --lr 1e-5"
  # r15 beat r05 on one seed: seeds 1 and 2 of both, for a comparison over 3 seeds
  "r05s1_T0.7_lr2e-5      --temperature 0.7 --lr 2e-5 --seed 1"
  "r15s1_T0.7_lr1e-5      --temperature 0.7 --lr 1e-5 --seed 1"
  "r05s2_T0.7_lr2e-5      --temperature 0.7 --lr 2e-5 --seed 2"
  "r15s2_T0.7_lr1e-5      --temperature 0.7 --lr 1e-5 --seed 2"
  # the demo recipe (r15) was still rising at its last step on all three seeds: three times as long
  "r16_T0.7_lr1e-5_36steps   --temperature 0.7 --lr 1e-5 --steps 36 --keep-resume-state false"
  "r16s1_T0.7_lr1e-5_36steps --temperature 0.7 --lr 1e-5 --steps 36 --keep-resume-state false --seed 1"
  "r16s2_T0.7_lr1e-5_36steps --temperature 0.7 --lr 1e-5 --steps 36 --keep-resume-state false --seed 2"
)
DRY=; if [ "${1:-}" = --dry-run ]; then DRY=1; shift; fi   # --dry-run [NAME...]: print the runs, start none
want=("$@")
jobs=()
for r in "${RUNS[@]}"; do
  name=${r%% *}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " ${name} " ]]; then continue; fi
  if [ ${#want[@]} -eq 0 ] && [ -d "runs/recipe/$name/final" ]; then echo "skip $name (done)"; continue; fi
  jobs+=("$name $COMMON ${r#* } --overwrite")
done
if [ -n "$DRY" ]; then printf 'scripts/studies/sweep_latro.sh %s\n' "${jobs[@]}"; exit 0; fi
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c 'echo "start $0 $(date +%T)"; scripts/studies/sweep_latro.sh "$0" "$@" && echo "done $0 $(date +%T)" || echo "FAILED $0 (runs/recipe/$0.log)"'
.venv/bin/python scripts/tools/summarize_sweep.py runs/recipe --out results/latro_recipe --figure figures/latro_recipe.png > /dev/null
echo "results/latro_recipe.md, figures/latro_recipe.png"
