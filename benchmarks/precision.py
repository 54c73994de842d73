"""fp32 vs bf16 on this CPU: matmul TFLOP/s, and one SmolLM2-135M forward+backward in fp32, bf16
weights, and fp32 weights under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    .venv/bin/python benchmarks/precision.py --threads 1

Why: latro_core defaults to fp32 (TrainConfig.dtype). On CPUs without native bf16 matrix
instructions (AMX, AVX512-BF16) PyTorch's bf16 GEMM is far slower than fp32, so bf16 only saves
memory there. bf16 runs are capped by ``--bf16-budget`` seconds (at least one iteration each).
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import command_line, git_commit, machine_info  # noqa: E402


def timed(fn, min_iters: int, budget_s: float, max_iters: int, cpu: list | None = None) -> list[float]:
    """Run ``fn`` at least ``min_iters`` times, then while under ``budget_s`` (up to ``max_iters``);
    wall seconds per call (CPU seconds appended to ``cpu``)."""
    times, start = [], time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < budget_s):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return times


def matmul_bench(n: int, dtype, min_iters, budget, max_iters) -> dict:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b                                                   # warm-up
    cpu = []
    ts = timed(lambda: a @ b, min_iters, budget, max_iters, cpu)
    med, cmed = statistics.median(ts), statistics.median(cpu)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "iters": len(ts), "median_s": med,
            "tflops": 2 * n ** 3 / med / 1e12, "median_cpu_s": cmed, "tflops_per_cpu_s": 2 * n ** 3 / cmed / 1e12}


def fwd_bwd_bench(mode: str, T: int, batch: int, min_iters, budget, max_iters) -> dict:
    from latro_core.models import load_model

    model, _ = load_model(device="cpu", dtype="bf16" if mode == "bf16" else "fp32")
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (batch, T), generator=torch.Generator().manual_seed(0))

    def step():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "autocast-bf16" else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    t0, c0 = time.perf_counter(), time.process_time()
    loss0 = step()                                         # warm-up (first call)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    left = budget - first                                  # bf16: no second call once over budget
    cpu = []
    ts = timed(step, min_iters, left, max_iters, cpu) if (max_iters and (min_iters or left > first)) else []
    med = statistics.median(ts) if ts else first
    cmed = statistics.median(cpu) if cpu else first_cpu
    flops = 6 * sum(p.numel() for p in model.parameters()) * batch * T   # ~6 N tokens (fwd+bwd)
    return {"mode": mode, "tokens": batch * T, "first_s": first, "iters": len(ts), "median_s": med,
            "tokens_per_s": batch * T / med, "approx_tflops": flops / med / 1e12, "loss": loss0,
            "median_cpu_s": cmed}


def bf16_kernel_support() -> dict:
    out = {}
    for name in ("_is_mkldnn_bf16_supported", "_is_mkldnn_fp16_supported"):
        f = getattr(torch.ops.mkldnn, name, None)
        try:
            out[name.strip("_")] = bool(f()) if f is not None else None
        except Exception:                                    # noqa: BLE001
            out[name.strip("_")] = None
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:                                        # noqa: BLE001
        out["cpu_capability"] = None
    flags = ""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    out["cpu_flags_bf16_amx"] = sorted({f for f in flags.split() if "bf16" in f or "amx" in f or f.startswith("avx512")})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square matmul sizes")
    ap.add_argument("--T", type=int, default=16, help="tokens per sequence for forward+backward")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="fp32 iterations (median)")
    ap.add_argument("--bf16-budget", type=float, default=20.0, help="seconds per bf16 measurement (>= 1 iteration)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--out", default="results/precision", help="writes OUT.md and OUT.json")
    ap.add_argument("--notes", default=None, help="a markdown file appended to OUT.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = {"matmul": [], "fwd_bwd": []}
    for n in args.sizes:
        for dt in (torch.float32, torch.bfloat16):
            fp32 = dt == torch.float32
            r = matmul_bench(n, dt, args.repeats if fp32 else 1, 1.0 if fp32 else args.bf16_budget,
                             50 if fp32 else args.repeats)
            res["matmul"].append(r)
            print(f"matmul {n}^3 {r['dtype']:8s} {r['tflops']:.4f} TFLOP/s ({r['tflops_per_cpu_s']:.4f} per CPU s; "
                  f"{r['iters']} iters, {r['median_s']:.3f}s)", flush=True)
    for mode in ("fp32", "bf16", "autocast-bf16"):
        fp32 = mode == "fp32"
        r = fwd_bwd_bench(mode, args.T, args.batch, args.repeats if fp32 else 0,
                          60.0 if fp32 else args.bf16_budget, args.repeats if fp32 else 2)
        res["fwd_bwd"].append(r)
        print(f"fwd+bwd {mode:14s} {r['median_s']:.2f}s ({r['tokens_per_s']:.1f} tokens/s, ~{r['approx_tflops']:.4f} TFLOP/s, "
              f"loss {r['loss']:.4f})", flush=True)
    commit = git_commit()
    doc = {"command": command_line(), "git_commit": commit,
           "machine": {**machine_info(), **bf16_kernel_support()}, "results": res}
    m = doc["machine"]
    f32 = {r["n"]: r for r in res["matmul"] if r["dtype"] == "float32"}
    fb = {r["mode"]: r for r in res["fwd_bwd"]}
    lines = ["# fp32 vs bf16 on this CPU", "", f"Command: `{doc['command']}`  ", f"Commit: `{commit}`  ",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"transformers {m['transformers']}; CPU capability {m['cpu_capability']}, oneDNN bf16 supported: "
             f"{m['is_mkldnn_bf16_supported']}, bf16/AMX/AVX-512 CPU flags: {m['cpu_flags_bf16_amx'] or 'none'}", "",
             "## Square matmul", "", "Per CPU second = FLOPs / `time.process_time()`: the rate while the process actually "
             "had a core (the machine is shared, so wall-clock rates are lower).", "",
             "| n | dtype | iterations | median s | TFLOP/s | TFLOP per CPU s | vs fp32 (CPU) |", "|---|---|---|---|---|---|---|"]
    for r in res["matmul"]:
        lines.append(f"| {r['n']} | {r['dtype']} | {r['iters']} | {r['median_s']:.4f} | {r['tflops']:.4f} | "
                     f"{r['tflops_per_cpu_s']:.4f} | {r['tflops_per_cpu_s'] / f32[r['n']]['tflops_per_cpu_s']:.3f}x |")
    lines += ["", f"## SmolLM2-135M forward+backward ({args.batch} x {args.T} tokens, loss = next-token cross-entropy)", "",
              "| mode | iterations | median s | median CPU s | tokens/s | ~TFLOP/s (6·params·tokens) | CPU time vs fp32 | loss |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["fwd_bwd"]:
        lines.append(f"| {r['mode']} | {r['iters'] or '1 (first call)'} | {r['median_s']:.2f} | {r['median_cpu_s']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['approx_tflops']:.4f} | {r['median_cpu_s'] / fb['fp32']['median_cpu_s']:.1f}x | "
                     f"{r['loss']:.4f} |")
    slow = min(fb["bf16"]["median_cpu_s"], fb["autocast-bf16"]["median_cpu_s"]) / fb["fp32"]["median_cpu_s"]
    lines += ["", f"bf16 rows are capped by --bf16-budget={args.bf16_budget:g}s (a row with 1 (first call) iteration is a "
              "single first call, one-time costs included); fp32 rows are medians after a warm-up call.", ""]
    if slow > 1:
        lines.append(f"Conclusion: on this CPU the faster bf16 variant takes {slow:.0f}x the CPU time of fp32 for a forward+backward, "
                     "so fp32 is the default dtype (`TrainConfig.dtype = \"fp32\"`); bf16 or autocast pays only on hardware "
                     "with bf16 matrix units (GPUs, CPUs with AMX or AVX512-BF16), where `--dtype bf16` remains available.")
    else:
        lines.append(f"Conclusion: on this CPU bf16 is {1 / slow:.1f}x faster than fp32 for a forward+backward; consider "
                     "`--dtype bf16` here.")
    if args.notes:
        lines += ["", Path(args.notes).read_text().strip()]
    path = Path(args.out)
    path = path if path.is_absolute() else ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
