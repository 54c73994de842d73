"""Decoding speed: latro_core's ``sample_rationales`` vs ``model.generate(do_sample=True)``, and
what transformers/torch offer on CPU (SDPA vs eager attention, static KV cache, torch.compile,
inference_mode, oneDNN's prepacked linear kernel vs MKL's).

    .venv/bin/python benchmarks/generation.py --prompts 8 --L 64 --repeats 3 --threads 1
    .venv/bin/python benchmarks/generation.py --compile --compile-timeout 480   # also try torch.compile

Every way decodes the same 8 prompts (the first arithmetic/train questions, chat-formatted) for
exactly L new tokens per row -- no early stop: ``generate`` gets ``min_new_tokens=L``, the rollout
a tokenizer/model without EOS and no stop strings -- so tokens/s compare like with like. Pure
sampling at T=1 (top_k=0, top_p=1) everywhere. The ways run in rounds, the order rotating each
round; medians of ``--repeats`` rounds. The rollout variants are checked to sample token-for-token
the same rationales as the plain rollout (same torch.Generator seed); ``--baseline-rev REV`` adds
the rollout as of git revision REV (e.g. HEAD) to time and check a change to rollout.py.
``torch.compile`` (``--compile``) runs in a subprocess with a wall-clock cap, since compiling on a
shared 2-core machine can take minutes. Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import (command_line, cuda_peak_mb, device_info, git_commit, machine_info,  # noqa: E402
                                    reset_cuda_peak, spec_peak_flops, sync)
from latro_core import rollout as rollout_mod  # noqa: E402
from latro_core.models import load_model  # noqa: E402
from latro_core.tasks import load_task  # noqa: E402


class NoEos:
    """A tokenizer view without an EOS id, so the rollout never ends a row early."""

    eos_token_id = None

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *a, **kw):
        return self._tok(*a, **kw)


@contextlib.contextmanager
def no_model_eos(model):
    gc_ = model.generation_config
    old = gc_.eos_token_id
    gc_.eos_token_id = None
    try:
        yield
    finally:
        gc_.eos_token_id = old


@contextlib.contextmanager
def attention(model, impl: str):
    old = model.config._attn_implementation
    model.set_attn_implementation(impl)
    try:
        yield
    finally:
        model.set_attn_implementation(old)


def rollout_module_at(rev: str):
    """latro_core/rollout.py as of git revision ``rev``, imported as a separate module."""
    src = subprocess.run(["git", "show", f"{rev}:latro_core/rollout.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    d = Path(tempfile.mkdtemp(prefix="rollout_rev_"))
    path = d / "rollout_at_rev.py"
    # every relative import ("from .tasks import", "from .cpu_kernels import", ...) reads today's package
    path.write_text(re.sub(r"^(\s*)from \.(\w)", r"\1from latro_core.\2", src, flags=re.M))
    spec = importlib.util.spec_from_file_location("rollout_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rollout_at_rev"] = mod
    spec.loader.exec_module(mod)
    return mod


def prompts_of(n: int, tok) -> list[str]:
    task = load_task("arithmetic", "train")
    return [task.prompt(task[i], tok) for i in range(n)]


def _left_batch(tok, prompts):
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    P = max(len(e) for e in enc)
    ids = torch.full((len(enc), P), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros(len(enc), P, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, P - len(e):] = torch.tensor(e)
        att[i, P - len(e):] = 1
    return ids, att


# ---------------------------------------------------------------------------------- the ways

def way_rollout(mod=None, impl: str | None = None, inference: bool = False, prepack: bool = True, **options):
    def run(model, tok, prompts, L, seed):
        m = mod or rollout_mod
        ctx_attn = attention(model, impl) if impl else contextlib.nullcontext()
        ctx_inf = torch.inference_mode() if inference else contextlib.nullcontext()
        with ctx_attn, ctx_inf, no_model_eos(model):
            t0, c0 = time.perf_counter(), time.process_time()
            kw = ({} if prepack else {"prepack": False}) | options   # (a baseline revision may predate them)
            dev = next(model.parameters()).device
            roll = m.sample_rationales(model, NoEos(tok), prompts, k=1, max_new_tokens=L, temperature=1.0,
                                       stop_strings=None, generator=torch.Generator(dev).manual_seed(seed), **kw)
            sync(dev)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        return dt, dc, roll.new_tokens, roll.rationale_ids
    return run


def way_generate(impl: str | None = None, cache: str | None = None, compile_: bool = False):
    def run(model, tok, prompts, L, seed):
        from transformers import CompileConfig
        dev = next(model.parameters()).device
        ids, att = (t.to(dev) for t in _left_batch(tok, prompts))
        kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=L, min_new_tokens=L,
                  pad_token_id=tok.pad_token_id)
        if cache:
            kw["cache_implementation"] = cache
        if compile_:
            cc = CompileConfig(mode="default", fullgraph=False)
            cc._compile_all_devices = True
            kw["compile_config"] = cc
        else:
            kw["disable_compile"] = True
        ctx_attn = attention(model, impl) if impl else contextlib.nullcontext()
        torch.manual_seed(seed)
        with ctx_attn, torch.no_grad():
            t0, c0 = time.perf_counter(), time.process_time()
            out = model.generate(input_ids=ids, attention_mask=att, **kw)
            sync(dev)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        new = out[:, ids.shape[1]:]
        return dt, dc, int(new.numel()), new.tolist()
    return run


WAYS = {
    "rollout (sample_rationales)": way_rollout(),
    "rollout, eager attention": way_rollout(impl="eager"),
    "rollout, inference_mode": way_rollout(inference=True),
    "rollout, MKL linears (prepack=False)": way_rollout(prepack=False),
    "rollout, transformers' decode step": way_rollout(decoder="transformers"),
    "rollout, multinomial sampler": way_rollout(sampler="multinomial"),
    "rollout, transformers' decode step and multinomial sampler": way_rollout(decoder="transformers",
                                                                              sampler="multinomial"),
    "generate (sdpa, dynamic cache)": way_generate(),
    "generate, eager attention": way_generate(impl="eager"),
    "generate, static cache": way_generate(cache="static"),
}
COMPILE_WAYS = {
    "generate, static cache": way_generate(cache="static"),
    "generate, static cache + torch.compile": way_generate(cache="static", compile_=True),
}


def run_rounds(model, tok, ways: dict, prompts, L, repeats, seed, warmup=True, log=print) -> dict:
    names = list(ways)
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    toks = {}
    first = {}
    if warmup:
        for n in names:                                  # first call of each: one-time costs
            t0 = time.perf_counter()
            ways[n](model, tok, prompts, min(L, 8), seed)
            first[n] = time.perf_counter() - t0
            log(f"  warm-up {n}: {first[n]:.1f}s")
    outputs = {}
    dev = next(model.parameters()).device
    peak = {n: 0.0 for n in names}           # CUDA: the most memory each way's calls held
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            reset_cuda_peak(dev)
            dt, dc, nt, out = ways[n](model, tok, prompts, L, seed + r)
            peak[n] = max(peak[n], cuda_peak_mb(dev) or 0.0)
            times[n].append(dt)
            cpus[n].append(dc)
            toks[n] = nt
            outputs.setdefault(n, []).append(out)
            log(f"  round {r + 1} {n}: {nt} tokens in {dt:.2f}s ({dc:.2f} CPU s) = {nt / dt:.1f} tok/s")
    res = {}
    for n in names:
        med, cmed = statistics.median(times[n]), statistics.median(cpus[n])
        res[n] = {"median_s": med, "tokens": toks[n], "tokens_per_s": toks[n] / med, "times_s": times[n],
                  "median_cpu_s": cmed, "tokens_per_cpu_s": toks[n] / cmed, "cpu_s": cpus[n], "warmup_s": first.get(n),
                  **({"peak_cuda_mb": peak[n]} if dev.type == "cuda" else {})}
    # the rollout variants must sample exactly what the plain rollout samples
    base = outputs.get("rollout (sample_rationales)")
    for n in names:
        if n.startswith("rollout") and base is not None:
            res[n]["same_tokens_as_rollout"] = outputs[n] == base
    return res


def prefill_bench(model, tok, prompts, repeats: int) -> dict:
    """The rollout's prefill with all prompt positions projected onto the vocabulary (what
    ``sample_rationales`` does) vs ``logits_to_keep=1`` (tried): time, and whether the last
    position's logits are bit-identical (the sampled tokens depend on them)."""
    ids, att = (t.to(next(model.parameters()).device) for t in _left_batch(tok, prompts))
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    res = {"full": {"wall": [], "cpu": []}, "last_only": {"wall": [], "cpu": []}}
    same = True
    with torch.no_grad():
        for r in range(repeats + 1):
            outs = {}
            for name, kw in (("full", {}), ("last_only", {"logits_to_keep": 1}))[::1 if r % 2 else -1]:
                t0, c0 = time.perf_counter(), time.process_time()
                outs[name] = model(input_ids=ids, attention_mask=att, position_ids=pos, **kw).logits[:, -1]
                if r:                                          # r == 0: warm-up
                    res[name]["wall"].append(time.perf_counter() - t0)
                    res[name]["cpu"].append(time.process_time() - c0)
            same &= torch.equal(outs["full"], outs["last_only"])
    out = {k: {"median_s": statistics.median(v["wall"]), "median_cpu_s": statistics.median(v["cpu"]),
               "runs_s": v["wall"]} for k, v in res.items()}
    out["bit_identical"] = bool(same)
    out["prompts"] = len(prompts)
    out["prompt_tokens"] = int(att.sum())
    return out


def compile_child(args) -> None:
    """Subprocess: time static cache with and without torch.compile; print one JSON line."""
    torch.set_num_threads(args.threads) if args.threads else None
    model, tok = load_model(device="cpu", dtype="fp32")
    prompts = prompts_of(args.prompts, tok)
    res = run_rounds(model, tok, COMPILE_WAYS, prompts, args.L, args.repeats, args.seed,
                     log=lambda s: print(s, file=sys.stderr, flush=True))
    print("@@RESULT " + json.dumps(res), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8, help="batch: the first n arithmetic/train questions")
    ap.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--L", type=int, default=64, help="new tokens per row (all rows decode exactly L)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-rev", default=None, help="also time latro_core/rollout.py as of this git revision")
    ap.add_argument("--ways", default="", help="comma-separated prefixes of the ways to time (\"rollout (\": the "
                    "rollout alone); the --baseline-rev way always runs; \"\": every way")
    ap.add_argument("--prefill-repeats", type=int, default=5, help="prefill-only comparison (0: skip)")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile (subprocess, capped)")
    ap.add_argument("--compile-timeout", type=int, default=480)
    ap.add_argument("--out", default="results/generation_speed", help="writes OUT.md and OUT.json")
    ap.add_argument("--notes", default=None, help="a markdown file appended to OUT.md (findings)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (adds CUDA peak memory and decode MFU)")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak for MFU (default: datasheet table)")
    ap.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compile_child:
        return compile_child(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(device=args.device, dtype=args.dtype)
    prompts = prompts_of(args.prompts, tok)
    ways = dict(WAYS)
    if args.device != "cpu":       # oneDNN's prepacked kernels are CPU-only: there prepack=False is the rollout itself
        ways.pop("rollout, MKL linears (prepack=False)")
    if args.ways:
        ways = {n: w for n, w in ways.items() if any(n.startswith(p.strip()) for p in args.ways.split(","))}
    baseline = f"rollout @ {args.baseline_rev}" if args.baseline_rev else None
    if baseline:
        ways[baseline] = way_rollout(mod=rollout_module_at(args.baseline_rev))
    if not ways:
        raise SystemExit(f"generation.py: error: no way starts with {args.ways!r}; the ways: {', '.join(WAYS)}")
    print(f"{len(prompts)} prompts x {args.L} new tokens, {torch.get_num_threads()} threads")
    res = run_rounds(model, tok, ways, prompts, args.L, args.repeats, args.seed)
    pre = None
    if args.prefill_repeats:
        pre = {str(n): prefill_bench(model, tok, prompts[:n], args.prefill_repeats) for n in sorted({1, len(prompts)})}
        for n, p_ in pre.items():
            print(f"prefill {n} prompt(s): full logits {p_['full']['median_s']:.3f}s, last only "
                  f"{p_['last_only']['median_s']:.3f}s, bit-identical {p_['bit_identical']}")
    compile_res, compile_note = None, None
    if args.compile:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", "--prompts", str(args.prompts),
               "--L", str(args.L), "--repeats", str(args.repeats), "--threads", str(args.threads), "--seed", str(args.seed)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("@@RESULT ")), None)
            if line:
                compile_res = json.loads(line[len("@@RESULT "):])
            else:
                compile_note = f"compile run failed (exit {p.returncode}): " + p.stderr.strip().splitlines()[-1][:300]
        except subprocess.TimeoutExpired:
            compile_note = f"gave up: compiling + timing did not finish within {args.compile_timeout}s"
        print("torch.compile:", compile_res or compile_note)
    from benchmarks.latro_update import machine_peaks
    out = {"command": command_line(), "peaks": machine_peaks(repeats=3, device=args.device, dtype=args.dtype),
           "git_commit": git_commit(), "machine": {**machine_info(), **device_info(args.device)},
           "settings": {"prompts": args.prompts, "L": args.L, "repeats": args.repeats, "seed": args.seed,
                        "device": args.device, "dtype": args.dtype},
           "results": res, "prefill": pre, "compile": compile_res, "compile_note": compile_note}
    # the column "vs" compares with generate when it ran, else with the baseline revision, else the first way
    ref_name = next(n for n in ("generate (sdpa, dynamic cache)", baseline, next(iter(res))) if n in res)
    ref, cref = res[ref_name]["tokens_per_s"], res[ref_name].get("tokens_per_cpu_s")
    lines = ["# Decoding speed: sample_rationales vs model.generate", "",
             f"Command: `{out['command']}`  ", f"Commit: `{out['git_commit']}`  ",
             f"Machine: {out['machine']['cpu']}, {out['machine']['cpus']} CPUs, torch {out['machine']['torch']} "
             f"({out['machine']['torch_threads']} threads), transformers {out['machine']['transformers']}  ",
             f"Peaks (`machine_peaks`, this process): memory read {out['peaks']['stream_bytes_per_s'] / 1e9:.1f} GB/s, "
             f"matmul {out['peaks']['matmul_flops'] / 1e9:.0f} GFLOP/s  ",
             f"Batch: {args.prompts} prompts (arithmetic/train), exactly {args.L} new tokens each, SmolLM2-135M "
             f"{args.dtype} on {args.device}, "
             f"pure sampling T=1; median of {args.repeats} rounds (order rotating).", "",
             f"| way | tokens | median s | tokens/s | vs {ref_name} | median CPU s | tokens per CPU s | vs {ref_name} (CPU) | "
             "runs (s) | same tokens as rollout |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in res.items():
        same = r.get("same_tokens_as_rollout")
        lines.append(f"| {n} | {r['tokens']} | {r['median_s']:.2f} | {r['tokens_per_s']:.1f} | "
                     f"{r['tokens_per_s'] / ref:.2f}x | {r['median_cpu_s']:.2f} | {r['tokens_per_cpu_s']:.1f} | "
                     f"{r['tokens_per_cpu_s'] / cref:.2f}x | {', '.join(f'{t:.1f}' for t in r['times_s'])} | "
                     f"{'' if same is None else ('yes' if same else 'NO')} |")
    if baseline and "rollout (sample_rationales)" in res:
        now, then = res["rollout (sample_rationales)"], res[baseline]
        out["speedup_vs_baseline"] = {"wall": then["median_s"] / now["median_s"], "cpu": then["median_cpu_s"] / now["median_cpu_s"]}
        lines += ["", f"**sample_rationales at this commit vs at {args.baseline_rev}: "
                      f"{out['speedup_vs_baseline']['wall']:.2f}x** wall, {out['speedup_vs_baseline']['cpu']:.2f}x CPU "
                      f"(the same process, the ways alternating round by round)."]
    if args.device != "cpu":
        # model FLOPs per generated token: 2 per matmul weight (decoder + vocabulary projection; attention left out)
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        body = sum(q.numel() for q in {id(q): q for q in model.parameters()}.values()
                   if q.dim() == 2 and q is not emb and q is not head)
        per_token, peak = 2 * (body + head.numel()), spec_peak_flops(args.device, args.dtype, args.peak_tflops)
        out["flops_per_token"], out["spec_peak_flops"] = per_token, peak
        lines += ["", f"On the GPU ({out['machine'].get('gpu')}): the most CUDA memory each way held "
                  f"(`torch.cuda.max_memory_allocated`, over its timed calls) and its model FLOP utilisation, "
                  f"{per_token / 1e6:.0f} MFLOP per generated token (2 per matmul weight) x tokens/s over the datasheet "
                  f"peak ({'unknown GPU: pass --peak-tflops' if peak is None else f'{peak / 1e12:.0f} TFLOP/s {args.dtype}'}); "
                  "decoding a small batch is bound by memory bandwidth, so this MFU is expected to be small.", "",
                  "| way | peak CUDA MB | MFU |", "|---|---|---|"]
        for n, r in res.items():
            mfu = f"{100 * r['tokens_per_s'] * per_token / peak:.2f}%" if peak else "–"
            lines.append(f"| {n} | {r.get('peak_cuda_mb', float('nan')):.0f} | {mfu} |")
    if pre:
        lines += ["", "Rollout prefill: all prompt positions projected onto the vocabulary (what `sample_rationales` "
                  "does) vs only the last (`logits_to_keep=1`, tried), interleaved, median of "
                  f"{args.prefill_repeats}:", "",
                  "| prompts (tokens) | full logits s (CPU s) | last position only s (CPU s) | saved | last logits bit-identical |",
                  "|---|---|---|---|---|"]
        for n, p_ in pre.items():
            f_, l_ = p_["full"], p_["last_only"]
            lines.append(f"| {n} ({p_['prompt_tokens']}) | {f_['median_s']:.3f} ({f_['median_cpu_s']:.3f}) | "
                         f"{l_['median_s']:.3f} ({l_['median_cpu_s']:.3f}) | {1 - l_['median_cpu_s'] / f_['median_cpu_s']:.0%} CPU | "
                         f"{'yes' if p_['bit_identical'] else 'NO'} |")
    if args.compile:
        lines += ["", "torch.compile (separate process, static cache, `CompileConfig(mode='default')` forced on CPU):", ""]
        if compile_res:
            lines += ["| way | median s | tokens/s | median CPU s | first call s (includes compiling) |", "|---|---|---|---|---|"]
            for n, r in compile_res.items():
                lines.append(f"| {n} | {r['median_s']:.2f} | {r['tokens_per_s']:.1f} | {r.get('median_cpu_s', float('nan')):.2f} | "
                             f"{r['warmup_s']:.1f} |")
        else:
            lines.append(compile_note)
    path = Path(args.out)
    path = path if path.is_absolute() else ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    notes = ("\n" + Path(args.notes).read_text()) if args.notes else ""
    path.with_suffix(".md").write_text("\n".join(lines) + "\n" + notes)
    for n, r in res.items():
        print(f"{n:38s} {r['tokens_per_s']:7.1f} tok/s  ({r['median_s']:.2f}s, {r['median_cpu_s']:.2f} CPU s)  "
              f"same={r.get('same_tokens_as_rollout')}")
    print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
