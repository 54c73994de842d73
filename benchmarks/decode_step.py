"""latro's own decode step (``decoder.LlamaDecoder.step``) against its two floors, and the linear
kernels that set it (issue "Decoding near the memory floor", target "a decode step within 2x of its
memory floor at 8 rows"):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decode_step.py          # 8 rows, L = 128, one thread

A step of the embedded SmolLM2-135M (fp32) must read every weight once, W bytes, and the KV cache,
so its **memory floor** is (W + KV) / the measured memory read rate; it also multiplies ``rows`` rows
by every weight, 2 · rows · (weights) FLOPs, so its **compute floor** is that over the measured
matmul peak (``benchmarks/latro_update.machine_peaks``: the best large matmul, one pass of ``sum``
over the vocabulary matrix, at the thread count in force). At 8 rows and one thread the two floors
are close, so a step near its memory floor needs the linear kernels near the matmul peak while they
stream the weights.

It times (the medians):

- the whole step over the L − 1 steps after a prefill of 8 rows (2 arithmetic questions x K = 4),
  ``LlamaDecoder.step`` alone, no sampling (the first token of every row repeated);
- each linear shape of the model at ``rows`` rows, with oneDNN's prepacked kernel (what the decoder
  uses) and with torch's default ``F.linear`` (MKL), over 30 distinct weights each so that a call
  reads its weight from memory as a decode step does: seconds, GB/s read, GFLOP/s;
- the step's linears as the sum of those shapes (30 layers and the vocabulary projection), so the
  rest of the step (attention, norms, rotary, Python) is the whole step minus it.

Writes ``<out>.md`` and ``<out>.json`` (command, commit, machine, peaks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import command_line, git_commit, machine_info  # noqa: E402
from benchmarks.latro_update import machine_peaks  # noqa: E402
from latro_core import rollout as rollout_mod  # noqa: E402
from latro_core.decoder import LlamaDecoder  # noqa: E402
from latro_core.models import load_model  # noqa: E402
from latro_core.tasks import load_task  # noqa: E402


def median_call_s(f, calls: int) -> float:
    """The median of ``calls`` timed calls of ``f`` after two untimed ones."""
    f(), f()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def linear_shapes(model) -> dict[str, tuple[int, int, int]]:
    """{name: (out features, in features, count per step)} of the decoder's matmuls (fused as it
    fuses them: q/k/v, gate/up)."""
    cfg = model.config
    d, heads, kv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    n = cfg.num_hidden_layers
    return {"q/k/v (fused)": ((heads + 2 * kv) * head_dim, d, n), "o": (d, heads * head_dim, n),
            "gate/up (fused)": (2 * cfg.intermediate_size, d, n), "down": (d, cfg.intermediate_size, n),
            "vocabulary": (cfg.vocab_size, d, 1)}


def time_shape(out_f: int, in_f: int, rows: int, calls: int) -> dict:
    """One shape at ``rows`` rows: oneDNN prepacked vs F.linear, over distinct weights (a vocabulary-
    sized one twice, the others 30 times) so that each call reads its weight from memory."""
    copies = 2 if out_f * in_f > 10_000_000 else 30
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(out_f, in_f, generator=g) for _ in range(copies)]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in weights]
    x = torch.randn(rows, 1, in_f, generator=g)
    turn = iter(range(10 ** 9))
    onednn = median_call_s(lambda: torch.ops.mkldnn._linear_pointwise(x, packed[next(turn) % copies], None, "none",
                                                                       [], ""), calls)
    mkl = median_call_s(lambda: F.linear(x, weights[next(turn) % copies]), calls)
    nbytes, flops = out_f * in_f * 4, 2 * rows * out_f * in_f
    return {"bytes": nbytes, "flops": flops,
            **{f"{k}_s": v for k, v in (("onednn", onednn), ("mkl", mkl))},
            **{f"{k}_gb_per_s": nbytes / v / 1e9 for k, v in (("onednn", onednn), ("mkl", mkl))},
            **{f"{k}_gflop_per_s": flops / v / 1e9 for k, v in (("onednn", onednn), ("mkl", mkl))}}


def step_times(model, tok, questions: int, k: int, L: int) -> tuple[list[float], float]:
    """Seconds of each of the L − 1 decode steps after a prefill of ``questions`` x ``k`` rows, and the
    mean KV cache length over them (tokens)."""
    task = load_task("arithmetic", "train")
    prompts = [task.prompt(task[i], tok) for i in range(questions)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    times = []
    with torch.no_grad(), rollout_mod.eval_mode(model):
        _, cache, logits, att, pos = rollout_mod._prefill(model, tok, prompts, k, pad, L, in_place=False)
        decoder = LlamaDecoder(model, questions * k, att.shape[1] + L)
        decoder.from_cache(cache)
        start = decoder.length
        tokens = logits.argmax(-1)
        for _ in range(L - 1):
            att = torch.cat([att, att.new_ones(att.shape[0], 1)], 1)
            t = time.perf_counter()
            decoder.step(tokens, att, pos)
            times.append(time.perf_counter() - t)
            pos = pos + 1
    return times, start + (L - 1) / 2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--L", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="decodes of L steps (the median step over all)")
    ap.add_argument("--calls", type=int, default=60, help="timed calls per linear shape and kernel")
    ap.add_argument("--out", default="results/decode_step")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, tok = load_model(device="cpu", dtype="fp32")
    rows, peaks = args.questions * args.k, machine_peaks()
    steps, mean_cache = [], 0.0
    for _ in range(args.repeats):
        times, mean_cache = step_times(model, tok, args.questions, args.k, args.L)
        steps += times
    shapes = {name: {"out": o, "in": i, "count": n, **time_shape(o, i, rows, args.calls)}
              for name, (o, i, n) in linear_shapes(model).items()}
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_bytes = 2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * head_dim * mean_cache * 4
    weight_bytes = sum(s["bytes"] * s["count"] for s in shapes.values())
    flops = sum(s["flops"] * s["count"] for s in shapes.values())
    out = {"command": command_line(), "git_commit": git_commit(), "machine": machine_info(), "peaks": peaks,
           "settings": {**vars(args), "rows": rows, "mean_cache_tokens": mean_cache},
           "step_s": statistics.median(steps), "steps_timed": len(steps),
           "linears_s": {k: sum(s[f"{k}_s"] * s["count"] for s in shapes.values()) for k in ("onednn", "mkl")},
           "memory_floor_s": (weight_bytes + kv_bytes) / peaks["stream_bytes_per_s"],
           "compute_floor_s": flops / peaks["matmul_flops"], "weight_bytes": weight_bytes, "kv_bytes": kv_bytes,
           "flops": flops, "shapes": shapes}
    write(out, Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out)


def write(out: dict, path: Path) -> None:
    m, s, p = out["machine"], out["settings"], out["peaks"]
    step, mem, comp, lin = out["step_s"], out["memory_floor_s"], out["compute_floor_s"], out["linears_s"]
    lines = ["# latro's decode step against its memory and compute floors", "",
             f"Command: `OMP_NUM_THREADS={m['torch_threads']} {out['command']}`  ", f"Commit: `{out['git_commit']}`  ",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads); memory read "
             f"rate {p['stream_bytes_per_s'] / 1e9:.1f} GB/s, matmul peak {p['matmul_flops'] / 1e9:.0f} GFLOP/s "
             f"(`machine_peaks`, this process)  ",
             f"Setting: {s['questions']} questions x K = {s['k']} = {s['rows']} rows, SmolLM2-135M fp32, "
             f"`LlamaDecoder.step` alone (no sampling), median of {out['steps_timed']} steps "
             f"({s['repeats']} decodes of L = {s['L']}; mean KV cache {s['mean_cache_tokens']:.0f} tokens).", "",
             "| | ms per step | step / it |", "|---|---|---|",
             f"| **the step** | **{1e3 * step:.1f}** | 1.00 |",
             f"| memory floor: {(out['weight_bytes'] + out['kv_bytes']) / 1e6:.0f} MB (weights "
             f"{out['weight_bytes'] / 1e6:.0f}, KV {out['kv_bytes'] / 1e6:.0f}) at the read rate | {1e3 * mem:.1f} | "
             f"{step / mem:.2f} |",
             f"| compute floor: {out['flops'] / 1e9:.2f} GFLOP at the matmul peak | {1e3 * comp:.1f} | {step / comp:.2f} |",
             f"| the step's linears, oneDNN prepacked (the shapes below, summed) | {1e3 * lin['onednn']:.1f} | "
             f"{step / lin['onednn']:.2f} |",
             f"| the same with `F.linear` (MKL) | {1e3 * lin['mkl']:.1f} | {step / lin['mkl']:.2f} |",
             f"| the rest of the step (attention, norms, rotary, Python): the step minus its oneDNN linears | "
             f"{1e3 * (step - lin['onednn']):.1f} | |", "",
             f"Each linear shape at {s['rows']} rows (median of {s['calls']} calls, each on a weight read from memory):", "",
             "| matmul | weight (out x in) | per step | oneDNN ms | GB/s | GFLOP/s | MKL ms | GB/s | GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, sh in out["shapes"].items():
        lines.append(f"| {name} | {sh['out']} x {sh['in']} | {sh['count']} | {1e3 * sh['onednn_s']:.3f} | "
                     f"{sh['onednn_gb_per_s']:.1f} | {sh['onednn_gflop_per_s']:.0f} | {1e3 * sh['mkl_s']:.3f} | "
                     f"{sh['mkl_gb_per_s']:.1f} | {sh['mkl_gflop_per_s']:.0f} |")
    need = out["flops"] / mem / 1e9
    lines += ["", f"To run at its memory floor the step's matmuls would need {need:.0f} GFLOP/s "
              f"({need / (p['matmul_flops'] / 1e9):.0%} of the matmul peak) while reading "
              f"{p['stream_bytes_per_s'] / 1e9:.1f} GB/s; within 2x of it, {need / 2:.0f} GFLOP/s for the whole step."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
