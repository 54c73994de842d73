cd /work/main
mkdir -p results/latro_arith_100
cp runs/latro_arith_100/metrics.jsonl runs/latro_arith_100/config.json results/latro_arith_100/
OMP_NUM_THREADS=1 .venv/bin/python - <<'PY'
import json
from latro_core.plots import plot_training
rows=[json.loads(l) for l in open("results/latro_arith_100/metrics.jsonl")]
print(plot_training(rows, "figures/latro_arith_100_training.png"))
def avg(key, a, b):
    v=[r[key] for r in rows if a<=r["step"]<=b and key in r]; return sum(v)/len(v)
last=rows[-1]["step"]
base=json.load(open("results/base_arithmetic_val30_summary.json"))["greedy"]
ev={r["step"]: r["eval_accuracy"] for r in rows if "eval_accuracy" in r}
lines=["# LaTRO, embedded SmolLM2-135M-Instruct, arithmetic task (CPU)","",
"Command: `latro train --task arithmetic --steps 100 --questions-per-step 2 --k 4 --max-new-tokens 48 --micro-batch 8 --lr 2e-5 --eval-every 50 --eval-limit 30 --save-every 50 --out-dir runs/latro_arith_100 --device cpu` (run with OMP_NUM_THREADS=1)  ",
"Base on the same 30 validation questions: `latro evaluate --split validation --limit 30 --max-new-tokens 80 --k 0 --batch-questions 30 --out runs/eval/base_arith_val30`  ",
"Table made from `metrics.jsonl` here by `bash scripts/summarize_latro_arith_100.sh`.","",
f"Steps completed: {last}","",
"| quantity | steps 1-10 (mean) | last 10 steps (mean) |","|---|---|---|"]
for k in ["reward_mean","logp_y_mean","kl_mean","rationale_len","frac_truncated","adv_std"]:
    lines.append(f"| {k} | {avg(k,1,10):.3f} | {avg(k,last-9,last):.3f} |")
lines+=["",f"Greedy accuracy on 30 validation questions (L = 48 + 32): base {base['accuracy']:.3f} ({base['correct']}/30, Wilson 95% [{base['ci95'][0]:.3f}, {base['ci95'][1]:.3f}])"]
for s,a in sorted(ev.items()):
    lines.append(f"; after step {s}: {a:.3f} ({round(a*30)}/30)")
open("results/latro_arith_100/README.md","w").write("\n".join(lines)+"\n")
print("\n".join(lines))
PY
