"""Where one decode step's time goes, part by part, against each part's floor (issue "Decoding near
the memory floor", item 1):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decode_breakdown.py     # 2 questions x K=4 = 8 rows, L = 128

It runs ``rollout.sample_rationales`` as the trainer did with transformers' decode step
(``decoder="transformers"``: per-question generators, T = 1, the stop strings checked, the
oneDNN-packed linears; latro's own decode step has none of transformers' modules to time), with the
EOS id hidden and
``keep_going_after_stop`` so that all 8 rows decode exactly L tokens, and times inside it, over the
L − 1 steps after the prefill:

- the 30 decoder layers' linear layers (q, k, v, o, gate, up, down: each packed ``forward`` timed),
- the vocabulary projection (``lm_head``, 28M of the 134M weights),
- attention over the KV cache (transformers' SDPA attention function, timed through its registry),
- the KV cache append (each layer's cache ``update``: the rollout's in-place buffers, or
  transformers' ``DynamicLayer``, which concatenates),
- sampling (``rollout._sample_next``: temperature, softmax, one multinomial per question),
- the stop-string checks (the tokenizer's ``decode`` of each row's last tokens),
- the rest of the model's forward (embedding, RMSNorms, rotary, the mask, SiLU,
  residual adds, Python and dispatch between them), and the rest of the loop (row bookkeeping).

Each part's floor is the bytes it must read at least once per step over the measured memory read rate
(``benchmarks/latro_update.machine_peaks``: one pass of ``sum`` over the vocabulary matrix, at the
thread count in force); parts that read no weights (Python, sampling's few vectors) have a floor near 0.
A second, uninstrumented run gives the step time without the timers, to show what they cost. Two
variants alternate in one run: the rollout's in-place KV buffers, and transformers' concatenating
``DynamicLayer`` that the rollout used before (``concatenating_cache``); both sample the same tokens.
Writes ``results/decode_breakdown.md`` / ``.json`` (command, commit, machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import command_line, git_commit, machine_info  # noqa: E402
from benchmarks.generation import NoEos, no_model_eos  # noqa: E402
from benchmarks.latro_update import machine_peaks  # noqa: E402
from latro_core import rollout as rollout_mod  # noqa: E402
from latro_core.models import load_model  # noqa: E402
from latro_core.tasks import load_task  # noqa: E402

GROWING_LAYER = rollout_mod._growing_layer()        # the rollout's cache layer class (timed like DynamicLayer)
PARTS = ("layer linears", "vocabulary projection", "attention (SDPA)", "KV cache append", "sampling",
         "stop-string checks", "rest of forward", "rest of loop")


class Clock:
    """Accumulates seconds per part, only between the first and the last decode step's progress tick
    (the prefill and the Rollout's final decoding fall outside)."""

    def __init__(self, L: int):
        self.L, self.ticks, self.on, self.s = L, [], False, dict.fromkeys(PARTS + ("model forward",), 0.0)

    def update(self, n=1):                      # sample_rationales' progress hook: once per decode step
        self.ticks.append(time.perf_counter())
        self.on = len(self.ticks) < self.L

    def timed(self, part: str, f):
        def run(*a, **kw):
            t = time.perf_counter()
            out = f(*a, **kw)
            if self.on:
                self.s[part] += time.perf_counter() - t
            return out
        return run


@contextmanager
def instrumented(model, tok, clock: Clock):
    """Inside: the packed linears, SDPA, ``_sample_next``, the model's forward and the tokenizer's
    decode report to ``clock``. Call after ``prepacked_linears`` replaced the linears' forwards."""
    from transformers.cache_utils import DynamicLayer
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if "forward" in vars(m)]      # the packed ones
    saved = {id(m): vars(m)["forward"] for m in linears}
    for m in linears:
        m.forward = clock.timed("vocabulary projection" if m is head else "layer linears", saved[id(m)])
    ALL_ATTENTION_FUNCTIONS["sdpa"] = clock.timed("attention (SDPA)", ALL_ATTENTION_FUNCTIONS["sdpa"])
    sample_next = rollout_mod._sample_next
    rollout_mod._sample_next = clock.timed("sampling", sample_next)
    layers = {DynamicLayer, GROWING_LAYER}
    appends = {c: vars(c)["update"] for c in layers}
    for c in layers:
        c.update = clock.timed("KV cache append", appends[c])
    model.forward = clock.timed("model forward", model.forward)
    decode = tok.decode
    tok.decode = clock.timed("stop-string checks", decode)
    try:
        yield
    finally:
        for m in linears:
            m.forward = saved[id(m)]
        del ALL_ATTENTION_FUNCTIONS["sdpa"]
        rollout_mod._sample_next = sample_next
        for c in layers:
            c.update = appends[c]
        vars(model).pop("forward", None)
        vars(tok).pop("decode", None)


class Prepack:
    """``prepacked_linears`` opened once around a run, so that the timers can wrap its forwards."""

    def __init__(self, model, rows):
        self.ctx = rollout_mod.prepacked_linears(model, rows)

    def __enter__(self):
        if not self.ctx.__enter__():
            raise SystemExit("oneDNN's packed linear kernel is unavailable here: nothing to break down")

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def decode_once(model, tok, prompts, k, L, clock):
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return rollout_mod.sample_rationales(model, tok, prompts, k=k, max_new_tokens=L, temperature=1.0,
                                         keep_going_after_stop=True, generator=gens, progress=clock, prepack=False,
                                         decoder="transformers")


def breakdown(model, tok, prompts: list[str], k: int, L: int, repeats: int) -> tuple[list[dict], list[float]]:
    """``repeats`` instrumented decodes of ``prompts`` x ``k`` rows for exactly L tokens, each followed
    by a plain one: ([{"step_s", "parts_s": {part: s per step}}], [plain step s]). Every run samples
    the same rationales (same seeds): the timers change no value."""
    view, runs, plain, first = NoEos(tok), [], [], None
    with no_model_eos(model), Prepack(model, len(prompts) * k):
        decode_once(model, view, prompts, k, min(L, 8), Clock(min(L, 8)))              # warm-up
        for _ in range(repeats):
            clock = Clock(L)
            with instrumented(model, view, clock):
                roll = decode_once(model, view, prompts, k, L, clock)
            first = first or roll.generated_ids
            steps = len(clock.ticks) - 1
            total, part = (clock.ticks[-1] - clock.ticks[0]) / steps, {p: s / steps for p, s in clock.s.items()}
            forward = part.pop("model forward")
            inside = sum(part[p] for p in ("layer linears", "vocabulary projection", "attention (SDPA)",
                                           "KV cache append"))
            part["rest of forward"] = forward - inside
            part["rest of loop"] = total - forward - part["sampling"] - part["stop-string checks"]
            runs.append({"step_s": total, "parts_s": part})
            clock = Clock(L)
            roll = decode_once(model, view, prompts, k, L, clock)
            plain.append((clock.ticks[-1] - clock.ticks[0]) / (len(clock.ticks) - 1))
            if roll.generated_ids != first:
                raise AssertionError("an instrumented decode sampled other tokens than a plain one")
    return runs, plain


def floors(model, rows: int, mean_cache: float, rate: float) -> dict:
    """Seconds per step to read once, at ``rate`` bytes/s, what each part must read."""
    head = model.get_output_embeddings()
    layer_bytes = sum(m.weight.numel() * 4 for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m is not head)
    cfg = model.config
    kv_bytes = 2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * mean_cache * (
        cfg.hidden_size // cfg.num_attention_heads) * 4
    return {"layer linears": layer_bytes / rate, "vocabulary projection": head.weight.numel() * 4 / rate,
            "attention (SDPA)": kv_bytes / rate, "sampling": rows * head.weight.shape[0] * 4 / rate,
            "KV cache append": kv_bytes / mean_cache / rate,          # one new position per layer, written
            "stop-string checks": 0.0, "rest of forward": 0.0, "rest of loop": 0.0,
            "_bytes": {"layer linears": layer_bytes, "vocabulary projection": head.weight.numel() * 4,
                       "attention (SDPA)": kv_bytes}}


@contextmanager
def concatenating_cache():
    """Inside: the rollout keeps transformers' DynamicLayer, which concatenates at every step (the
    rollout before its in-place buffers)."""
    into_buffers = rollout_mod._into_buffers
    rollout_mod._into_buffers = lambda cache, capacity: None
    try:
        yield
    finally:
        rollout_mod._into_buffers = into_buffers


VARIANTS = {"in-place KV buffers": nullcontext, "concatenating cache": concatenating_cache}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--L", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="instrumented runs per variant (the median step is reported)")
    ap.add_argument("--out", default="results/decode_breakdown")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, tok = load_model(device="cpu", dtype="fp32")
    model.eval()
    task = load_task("arithmetic", "train")
    prompts = [task.prompt(task[i], tok) for i in range(args.questions)]
    rows, peaks = args.questions * args.k, machine_peaks()
    res = {v: {"runs": [], "uninstrumented_step_s": []} for v in VARIANTS}
    for r in range(args.repeats):                     # the variants alternate, one run each per round
        for v in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
            with VARIANTS[v]():
                runs, plain = breakdown(model, tok, prompts, args.k, args.L, 1)
            res[v]["runs"] += runs
            res[v]["uninstrumented_step_s"] += plain
    for v in res.values():
        v["median_run"] = sorted(v["runs"], key=lambda r: r["step_s"])[len(v["runs"]) // 2]
    prompt_len = statistics.mean(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    mean_cache = prompt_len + args.L / 2
    out = {"command": command_line(),
           "git_commit": git_commit(), "machine": machine_info(), "peaks": peaks,
           "settings": {**vars(args), "rows": rows, "mean_cache_tokens": mean_cache}, "variants": res,
           "floors_s": floors(model, rows, mean_cache, peaks["stream_bytes_per_s"])}
    write(out, Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out)


def write(out: dict, path: Path) -> None:
    m, floor, s = out["machine"], out["floors_s"], out["settings"]
    (ours, old), rate = list(out["variants"].values()), out["peaks"]["stream_bytes_per_s"]
    part, step = ours["median_run"]["parts_s"], ours["median_run"]["step_s"]
    part_old, step_old = old["median_run"]["parts_s"], old["median_run"]["step_s"]
    lines = ["# One decode step, part by part, against its floor", "",
             f"Command: `OMP_NUM_THREADS={m['torch_threads']} {out['command']}`  ", f"Commit: `{out['git_commit']}`  ",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"transformers {m['transformers']}; memory read rate {rate / 1e9:.1f} GB/s, matmul peak "
             f"{out['peaks']['matmul_flops'] / 1e9:.0f} GFLOP/s (`machine_peaks`, this process)  ",
             f"Setting: {s['questions']} questions x K = {s['k']} = {s['rows']} rows, L = {s['L']} (all rows decode "
             f"L tokens), T = 1, SmolLM2-135M fp32, packed linears; per step over the {s['L'] - 1} steps after the "
             f"prefill (mean KV cache {s['mean_cache_tokens']:.0f} tokens), the median of {s['repeats']} instrumented "
             "runs per variant, the variants alternating. Floor: the bytes a part must read (or write) once per "
             "step over the memory read rate.", "",
             f"| part | {list(out['variants'])[0]}: ms per step | share | floor ms | floor / time | "
             f"{list(out['variants'])[1]}: ms per step |", "|---|---|---|---|---|---|"]
    for p in PARTS:
        t, f, nb = part[p], floor[p], floor["_bytes"].get(p)
        fl = f"{1e3 * f:.2f} ({nb / 1e6:.0f} MB)" if nb else ("≈0" if f < 1e-4 else f"{1e3 * f:.3f}")
        ratio = f"{f / t:.0%}" if f >= 1e-4 and t > 0 else "–"
        lines.append(f"| {p} | {1e3 * t:.1f} | {t / step:.0%} | {fl} | {ratio} | {1e3 * part_old[p]:.1f} |")
    total_floor = sum(v for k, v in floor.items() if not k.startswith("_"))
    lines += [f"| **step** | **{1e3 * step:.1f}** | 100% | {1e3 * total_floor:.1f} | {total_floor / step:.0%} | "
              f"**{1e3 * step_old:.1f}** |", ""]
    for name, v in out["variants"].items():
        plain = ", ".join(f"{1e3 * x:.1f}" for x in v["uninstrumented_step_s"])
        timed = ", ".join(f"{1e3 * r['step_s']:.1f}" for r in v["runs"])
        lines.append(f"- {name}: without the timers a step took {plain} ms (instrumented: {timed} ms).")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=1))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
