"""Peak memory and CPU time of one AdamW step over SmolLM2-135M's parameters (full fine-tuning):
torch's default (for CPU tensors: the per-parameter loop) vs ``foreach=True`` vs ``fused=True``.

    .venv/bin/python benchmarks/adamw_step.py --out results/adamw_step

Each variant runs in its own process; peak = VmHWM (reset just before the steps) minus RSS before
them, i.e. what the step allocates on top of weights, grads and optimizer state. The loop and
foreach implementations build temporaries (one parameter's worth, or all parameters' at once);
the fused CPU kernel updates in place. (fused is not bit-identical to the default: a different
order of the same operations.)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import git_commit, machine_info  # noqa: E402

VARIANTS = {"default": {}, "foreach=True": {"foreach": True}, "fused=True": {"fused": True}}


def _status():
    d = {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines()
         if ln.startswith(("VmRSS", "VmHWM"))}
    return d["VmRSS"] / 1024, d["VmHWM"] / 1024


def child(variant: str, steps: int) -> dict:
    from latro_core.models import load_model

    torch.set_num_threads(1)
    model, _ = load_model(device="cpu")
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **VARIANTS[variant])
    opt.step()                                   # allocates the state
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status()[0]
    Path("/proc/self/clear_refs").write_text("5")
    cpu = []
    for _ in range(steps):
        c0 = time.process_time()
        opt.step()
        cpu.append(time.process_time() - c0)
    return {"variant": variant, "rss_before_mb": before, "peak_mb": _status()[1], "extra_mb": _status()[1] - before,
            "step_cpu_s": sorted(cpu)[len(cpu) // 2]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("@@" + json.dumps(child(args.child, args.steps)))
        return
    rows = []
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", v, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(next(ln[2:] for ln in out.splitlines() if ln.startswith("@@")))
        rows.append(r)
        print(f"{v:14s} step allocates {r['extra_mb']:5.0f} MB on top of {r['rss_before_mb']:.0f} MB; "
              f"median step {r['step_cpu_s']:.2f} CPU s")
    if args.out:
        m, commit = machine_info(), git_commit()
        md = ["# One AdamW step over SmolLM2-135M (full fine-tuning, fp32, 1 thread)", "",
              f"Command: `python benchmarks/adamw_step.py{' --steps ' + str(args.steps) if args.steps != 3 else ''} --out {args.out}`  ",
              f"Commit: `{commit}`  ", f"Machine: {m['cpu']}, torch {m['torch']}", "",
              "| AdamW | allocated by the step, MB | median step, CPU s |", "|---|---|---|"]
        md += [f"| {r['variant']} | {r['extra_mb']:.0f} | {r['step_cpu_s']:.2f} |" for r in rows]
        md += ["", f"On top of {rows[0]['rss_before_mb']:.0f} MB (weights, gradients, AdamW state). latro_core's trainer uses "
               "`fused=True` on CPU and CUDA."]
        Path(args.out + ".md").write_text("\n".join(md) + "\n")
        Path(args.out + ".json").write_text(json.dumps({"rows": rows, "machine": m, "commit": commit}, indent=1))


if __name__ == "__main__":
    main()
