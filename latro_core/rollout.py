"""Sampling K rationales per question: z_k ~ pi(.|x), batched, with a KV cache and stop strings.

A rationale ends at EOS, at the first answer-template stop string ("The answer is", ...), or
after L = ``max_new_tokens`` tokens (then it is *truncated*, and the trainer penalises it).
The stop string is found on the decoded text, so it is caught even when split across tokens,
and it is not part of z: z keeps the longest token prefix whose text ends before it.

Cost notes: the prompt is prefilled once per question and its cache repeated K times, into
buffers that hold the whole decode, so a step writes one position per layer instead of copying
the cache; finished rows leave the batch (and the cache); only the current step's logits exist
at any time. On a CPU in fp32, decoding multiplies a handful of rows by every weight matrix at
each step, and MKL's kernel for so few rows reads the weights at a third of the memory bandwidth;
the weights are therefore repacked once per call for oneDNN's linear kernel
(``cpu_kernels.prepacked_linears``, results/generation_speed.md). Where a step's time goes:
results/decode_breakdown.md.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from .cpu_kernels import prepacked_linears
from .tasks import Task


@dataclass
class Rollout:
    """Rationales for ``n_questions`` x ``k`` samples, question-major (sample i is question i // k).

    prompt_ids, rationale_ids: token id lists per sample (z excludes EOS and the stop string).
    truncated: (n*k,) bool, True where the rationale hit L without EOS or stop string.
    finish: "eos", "stop" or "length" per sample.  texts: decoded rationales (skip special tokens).
    full_texts: decoded generations including the stop string and what followed (evaluation mode).
    generated_ids: every generated token before EOS (the stop string and what followed included).
    end_steps: decode steps the rationale took to end (the step that sampled EOS or completed the
    stop string), None when it was cut at L; it also ended within any budget L' >= that step.
    """

    prompt_ids: list[list[int]]
    rationale_ids: list[list[int]]
    truncated: torch.Tensor
    finish: list[str]
    texts: list[str]
    k: int
    full_texts: list[str] = field(default_factory=list)
    new_tokens: int = 0
    generated_ids: list[list[int]] = field(default_factory=list)
    end_steps: list[int | None] = field(default_factory=list)
    decoder: str = "transformers"    # whose decode step sampled it: "latro" (decoder.py) or "transformers"

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(z) for z in self.rationale_ids], dtype=torch.float32)


def find_stop(text: str, stop_strings=Task.stop_strings) -> int | None:
    """Character index of the earliest stop string in ``text`` (None when there is none)."""
    hits = [i for s in stop_strings if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen) if isinstance(gen, (list, tuple)) else {gen}
    return {i for i in ids if i is not None}


SAMPLERS = ("inverse_cdf", "multinomial")


def _sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                 generator, row_groups: list[int] | None = None, sampler: str = "inverse_cdf") -> torch.Tensor:
    """logits (B, V) -> next token ids (B,). temperature 0 is greedy; else pure sampling at T
    unless top_k / top_p are set. ``generator``: one torch.Generator (or None), or a list of them
    with ``row_groups`` giving each row's index into it (rows of a group draw in row order).
    ``sampler``: "inverse_cdf" (one uniform per row, :func:`inverse_cdf_sample`) or "multinomial"
    (torch.multinomial: one exponential per vocabulary entry and row; the sampler before it)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    if temperature != 1.0:                 # x / 1.0 is x: skip a pass over the (B, V) logits
        logits = logits / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p
        logits = logits.scatter(-1, idx, sorted_logits.masked_fill(drop, float("-inf")))
    if sampler == "inverse_cdf":
        return inverse_cdf_sample(logits, _uniforms(logits.shape[0], generator, row_groups, logits.device))
    probs = logits.softmax(-1)
    if isinstance(generator, (list, tuple)):
        out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
        for g in dict.fromkeys(row_groups):
            rows = [i for i, x in enumerate(row_groups) if x == g]
            out[rows] = _multinomial(probs[rows], generator[g])
        return out
    return _multinomial(probs, generator)


def inverse_cdf_sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits), logits (B, V) (already divided by T, -inf where top-k or
    top-p dropped a token), uniforms (B,) in [0, 1): token i where u·Σ_j e^{ℓ_j} falls in
    [c_{i−1}, c_i), c_i = Σ_{j≤i} e^{ℓ_j − max ℓ}, so P(i) = e^{ℓ_i} / Σ_j e^{ℓ_j} exactly: one random number
    per row where torch.multinomial draws one per vocabulary entry. exp and the cumulative sums are
    float64, so every token, even one of probability 1e-12, keeps an interval of its own width to 1e-15
    (tests/test_rollout.py)."""
    # c_i = Σ_{j≤i} exp(ℓ_j − max ℓ), in float64: (B, V)
    shifted = logits.double() - logits.amax(-1, keepdim=True).double()
    cdf = shifted.exp_().cumsum_(-1)
    # u · Σ_j exp(ℓ_j − max ℓ): (B, 1)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]
    # the first i with c_i > target: (B,)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


def _uniforms(rows: int, generator, row_groups: list[int] | None, device) -> torch.Tensor:
    """(rows,) uniforms in [0, 1): from one generator, or row i from ``generator[row_groups[i]]`` (the
    rows of a group draw in row order), drawn on the generator's device."""
    if not isinstance(generator, (list, tuple)):
        g_device = generator.device if generator is not None else device
        return torch.rand(rows, generator=generator, device=g_device, dtype=torch.float64).to(device)
    out = torch.empty(rows, dtype=torch.float64, device=device)
    for g in dict.fromkeys(row_groups):
        picked = [i for i, x in enumerate(row_groups) if x == g]
        out[picked] = torch.rand(len(picked), generator=generator[g], device=generator[g].device,
                                 dtype=torch.float64).to(device)
    return out


def _multinomial(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is not None and generator.device.type != probs.device.type:
        probs_cpu = probs.cpu()
        return torch.multinomial(probs_cpu, 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _cut_at_stop(tokenizer, tokens: list[int], stop_strings) -> tuple[list[int], bool]:
    """Longest prefix of ``tokens`` whose text ends before the first stop string; (prefix, found)."""
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    c = find_stop(text, stop_strings)
    if c is None:
        return tokens, False
    n = len(tokens)
    while n > 0 and len(tokenizer.decode(tokens[:n], skip_special_tokens=False)) > c:
        n -= 1
    return tokens[:n], True


@torch.no_grad()
def sample_rationales(model, tokenizer, prompts: list[str], *, k: int = 1, max_new_tokens: int = 128,
                      temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      stop_strings=Task.stop_strings, keep_going_after_stop: bool = False,
                      generator: torch.Generator | list[torch.Generator] | None = None,
                      progress=None, prepack: bool = True, sampler: str = "inverse_cdf",
                      decoder: str = "auto") -> Rollout:
    """Sample ``k`` continuations of each prompt (chat-formatted strings) with a KV cache.

    stop_strings: rationale stops, the task's ``task.stop_strings`` (default: the base Task's; None: stop
    at EOS or L only).
    keep_going_after_stop: evaluation mode; rationale_ids are still cut at the stop string, but
    generation goes on to EOS/L so that ``full_texts`` holds the answer after the template.
    generator: one torch.Generator for the batch, or a list with one per prompt: each question's
    K samples then draw only from its own generator, so they do not depend on which questions
    share the batch (the trainer's per-question seeding, equal for 1 and N processes).
    prepack: decode CPU fp32 linears with :func:`prepacked_linears` (no effect elsewhere).
    sampler: "inverse_cdf" (one uniform per row, exact) or "multinomial" (the sampler before it: the
    same distribution, another random stream, so other tokens for the same seed).
    decoder: "auto" (latro's own decode step, :mod:`latro_core.decoder`, where it serves the model,
    else transformers'), "latro" or "transformers"; ``Rollout.decoder`` records which one ran.
    """
    if sampler not in SAMPLERS:
        from .errors import ConfigError
        raise ConfigError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    if k < 1 or max_new_tokens < 1:
        from .errors import ConfigError
        raise ConfigError(f"need k >= 1 and max_new_tokens (L) >= 1, got k={k}, L={max_new_tokens}")
    per_question = isinstance(generator, (list, tuple))
    if per_question and len(generator) != len(prompts):
        raise ValueError(f"got {len(generator)} generators for {len(prompts)} prompts; pass one per prompt")
    ours = resolve_decoder(model, decoder) == "latro"
    packing = prepacked_linears(model, len(prompts) * k) if prepack and not ours else nullcontext()
    with packing:
        return _decode(model, tokenizer, prompts, k, max_new_tokens, temperature, top_k, top_p, stop_strings,
                       keep_going_after_stop, generator, progress, sampler, ours)


DECODERS = ("auto", "latro", "transformers")


def resolve_decoder(model, decoder: str) -> str:
    """Whose decode step ``decoder`` ("auto", "latro", "transformers") means for ``model``: "latro" or
    "transformers". "auto" takes latro's where :func:`latro_core.decoder.supported` accepts the model and
    no autocast is on (a mixed-precision run keeps transformers' casts); "latro" on a model it cannot
    serve is an error."""
    from .decoder import supported
    from .errors import ConfigError

    if decoder not in DECODERS:
        raise ConfigError(f"decoder={decoder!r} is not one of {', '.join(DECODERS)}")
    if decoder == "transformers":
        return "transformers"
    why_not = supported(model)
    if decoder == "latro" and why_not:
        raise ConfigError(f"decoder='latro' cannot run this model ({why_not}); use --decoder auto or transformers")
    device = next(model.parameters()).device.type
    return "latro" if why_not is None and not torch.is_autocast_enabled(device) else "transformers"


@contextmanager
def eval_mode(model):
    """Inside, ``model`` is in eval mode (no dropout); after, back in the mode it was in, also after an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@functools.cache
def _growing_layer():
    """transformers' DynamicLayer with its keys and values as views into buffers allocated once for
    the whole decode, (B, heads, capacity, head_dim): a step writes its new position in place, where
    DynamicLayer concatenates, copying the whole cache at every step, a cost that grows with the
    cache (8 rows, one thread: within noise at L = 128, 91.6 → 77.6 ms per step at L = 384;
    results/decode_breakdown*.md). ``keys`` / ``values`` hold exactly the values DynamicLayer's
    would; only their memory layout differs (tests/test_rollout.py). A class made on first use, so
    that importing latro_core does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self, layer, capacity: int):
            super().__init__()
            self.dtype, self.device, self.is_initialized = layer.keys.dtype, layer.keys.device, True
            self._keep(layer.keys, layer.values, capacity)

        def _keep(self, keys, values, capacity):
            """Fresh buffers of ``capacity`` positions, holding ``keys`` / ``values`` at their start."""
            n = keys.shape[-2]
            self._k = keys.new_empty(*keys.shape[:2], capacity, keys.shape[-1])
            self._v = values.new_empty(*values.shape[:2], capacity, values.shape[-1])
            self._k[:, :, :n], self._v[:, :, :n] = keys, values
            self._view(n)

        def _view(self, n):
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self.keys.shape[-2], key_states.shape[-2]
            if n + m > self._k.shape[-2]:        # past the planned length (not reached by _decode): grow
                self._keep(self.keys, self.values, 2 * (n + m))
            self._k[:, :, n:n + m], self._v[:, :, n:n + m] = key_states, value_states
            self._view(n + m)
            return self.keys, self.values

        def batch_select_indices(self, indices):
            n = self.keys.shape[-2]
            self._k, self._v = self._k[indices], self._v[indices]
            self._view(n)

        def batch_repeat_interleave(self, repeats):
            n = self.keys.shape[-2]
            self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
            self._view(n)

    return GrowingLayer


def _cache_api_problem(layer_class=None) -> str | None:
    """What in transformers' cache API differs from what :func:`_growing_layer` builds on (None: nothing).
    GrowingLayer subclasses ``DynamicLayer`` (an internal whose fields changed across transformers
    versions), so a small cache is filled both ways, repeated, selected and extended, and the
    results compared. ``layer_class``: the class to try in place of GrowingLayer (tests)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        def kv(b, n, seed):
            g = torch.Generator().manual_seed(seed)
            return torch.randn(b, 2, n, 4, generator=g), torch.randn(b, 2, n, 4, generator=g)

        cache = DynamicCache()
        cache.update(*kv(2, 3, 0), 0)
        if not isinstance(getattr(cache, "layers", None), list) or type(cache.layers[0]) is not DynamicLayer:
            return "DynamicCache has no list of DynamicLayer layers"
        plain = cache.layers[0]
        if not (plain.is_initialized and plain.keys.shape == (2, 2, 3, 4)):
            return "a filled DynamicLayer has no is_initialized / keys of the expected shape"
        ours = (layer_class or _growing_layer())(plain, capacity=3 + 2)
        for layer in (plain, ours):
            layer.batch_repeat_interleave(2)
            layer.batch_select_indices(torch.tensor([0, 3, 1]))
            k, v = layer.update(*kv(3, 1, 1))
            layer.update(*kv(3, 2, 2))            # past the capacity: the buffers grow
        if not (torch.equal(k, ours.keys[:, :, :4]) and torch.equal(plain.keys, ours.keys)
                and torch.equal(plain.values, ours.values)
                and plain.get_seq_length() == ours.get_seq_length() == 6):
            return "the in-place layer's keys / values differ from DynamicLayer's"
    except Exception as e:  # noqa: BLE001 - any failure means the internals moved: use the public path
        return f"{type(e).__name__}: {e}"
    return None


@functools.cache
def _in_place_layer():
    """:func:`_growing_layer`'s class when this transformers' cache API is what it expects (checked
    once per process), else None, after one warning: the rollout then keeps transformers' own
    ``DynamicCache`` (the same tokens, with a copy of the cache at every step)."""
    problem = _cache_api_problem()
    if problem is None:
        return _growing_layer()
    import warnings

    try:
        from importlib.metadata import version
        found = f"transformers {version('transformers')}"
    except Exception:  # noqa: BLE001
        found = "this transformers"
    warnings.warn(f"latro: {found}'s KV-cache layers are not what rollout.py's in-place cache expects "
                  f"({problem}); sampling with transformers' plain DynamicCache instead (same tokens, slower "
                  f"for long rationales)", RuntimeWarning, stacklevel=2)
    return None


def _into_buffers(cache, capacity: int) -> None:
    """Moves a filled ``DynamicCache``'s layers into :func:`_growing_layer` buffers of ``capacity``
    positions; a cache with other layer kinds (sliding windows, ...) is left as it is, and so is every
    cache where transformers' cache API is not what GrowingLayer expects (:func:`_in_place_layer`)."""
    from transformers.cache_utils import DynamicLayer

    growing = _in_place_layer()
    if growing is not None and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers):
        cache.layers = [growing(layer, capacity) for layer in cache.layers]


def _prefill(model, tokenizer, prompts, k, pad, new_tokens, in_place: bool = True):
    """Each prompt once through the model, left-padded, its KV cache then repeated K times
    (question-major) and moved into buffers with room for ``new_tokens`` more positions. Returns
    (prompt token lists, cache, last logits (n*k, V), attention mask (n*k, P), next positions (n*k, 1))."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    n_q, P = len(enc), max(len(e) for e in enc)
    ids = torch.full((n_q, P), pad, dtype=torch.long)
    att = torch.zeros(n_q, P, dtype=torch.long)
    for i, e in enumerate(enc):                       # left padding
        ids[i, P - len(e):] = torch.tensor(e)
        att[i, P - len(e):] = 1
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, past_key_values=cache, use_cache=True)
    if k > 1:
        cache.batch_repeat_interleave(k)
    if in_place:
        _into_buffers(cache, P + new_tokens)
    return (enc, cache, out.logits[:, -1].repeat_interleave(k, 0), att.repeat_interleave(k, 0),
            pos[:, -1:].repeat_interleave(k, 0) + 1)


def _decode(model, tokenizer, prompts, k, max_new_tokens, temperature, top_k, top_p, stop_strings,
            keep_going_after_stop, generator, progress, sampler="inverse_cdf", own_decoder=False) -> Rollout:
    """sample_rationales' loop (arguments as there, checked): one token per live row per step; a row
    leaves the batch (and the cache) at EOS, or at its stop string unless ``keep_going_after_stop``."""
    per_question = isinstance(generator, (list, tuple))
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))
    with eval_mode(model):
        enc, cache, logits, att, next_pos = _prefill(model, tokenizer, prompts, k, pad, max_new_tokens,
                                                     in_place=not own_decoder)
        B = len(enc) * k
        decoder = _decode_steps(model, cache, own_decoder, B, att.shape[1] + max_new_tokens)
        del cache
        gen: list[list[int]] = [[] for _ in range(B)]
        finish = ["length"] * B
        stop_at = [None] * B                          # generated-token count when the stop string appeared
        end_step = [None] * B                         # decode step at which the rationale ended
        alive = torch.arange(B, device=logits.device)   # rows of the original batch still generating
        window = 2 + max((len(s) for s in (stop_strings or ())), default=0)
        for step in range(max_new_tokens):
            tok = _sample_next(logits, temperature, top_k, top_p, generator,
                               [row // k for row in alive.tolist()] if per_question else None, sampler)
            keep = []
            for j, (row, t) in enumerate(zip(alive.tolist(), tok.tolist())):
                if t in eos:
                    finish[row] = "eos" if stop_at[row] is None else "stop"
                    end_step[row] = end_step[row] or step + 1
                    continue
                gen[row].append(t)
                if stop_strings and stop_at[row] is None:
                    tail = tokenizer.decode(gen[row][-window:], skip_special_tokens=False)
                    if find_stop(tail, stop_strings) is not None:
                        stop_at[row], end_step[row] = len(gen[row]), step + 1
                        if not keep_going_after_stop:
                            finish[row] = "stop"
                            continue
                keep.append(j)
            if progress is not None:
                progress.update(1)
            if not keep or step == max_new_tokens - 1:
                break
            keep_t = torch.tensor(keep, device=logits.device)
            if len(keep) < len(alive):
                decoder.keep_rows(keep_t)
                att, next_pos, alive, tok = att[keep_t], next_pos[keep_t], alive[keep_t], tok[keep_t]
            att = torch.cat([att, att.new_ones(len(keep), 1)], 1)
            logits = decoder.step(tok, att, next_pos)
            next_pos = next_pos + 1
    rollout = _rollout(tokenizer, enc, k, gen, finish, stop_at, end_step, stop_strings)
    rollout.decoder = "latro" if own_decoder else "transformers"
    return rollout


class _TransformersSteps:
    """transformers' decode step over its own (prefilled) cache, behind :class:`~latro_core.decoder.LlamaDecoder`'s
    two calls: ``keep_rows(rows)`` and ``step(tokens, attention_mask, positions) -> logits (B, V)``."""

    def __init__(self, model, cache):
        self.model, self.cache = model, cache

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)

    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=positions,
                          past_key_values=self.cache, use_cache=True).logits[:, -1]


def _decode_steps(model, cache, own_decoder: bool, rows: int, capacity: int):
    """Who takes the decode steps after the prefill: latro's :class:`~latro_core.decoder.LlamaDecoder`
    (the prefilled cache copied into its static buffers of ``capacity`` positions), or transformers'."""
    if not own_decoder:
        return _TransformersSteps(model, cache)
    from .decoder import LlamaDecoder
    decoder = LlamaDecoder(model, rows, capacity)
    decoder.from_cache(cache)
    return decoder


def _rollout(tokenizer, enc, k, gen, finish, stop_at, end_step, stop_strings) -> Rollout:
    """The Rollout of a finished decode: z is each row's tokens up to its stop string (cut to the
    longest prefix whose text ends before it); a row that met its stop string and ran on to L counts
    as stopped."""
    finish = ["stop" if stop_at[row] is not None and f == "length" else f for row, f in enumerate(finish)]
    rationales = []
    for row, g in enumerate(gen):
        z = g[:stop_at[row]] if stop_at[row] is not None else g
        if stop_strings and stop_at[row] is not None:
            z, _ = _cut_at_stop(tokenizer, z, stop_strings)
        rationales.append(z)
    return Rollout(
        prompt_ids=[e for e in enc for _ in range(k)],
        rationale_ids=rationales,
        truncated=torch.tensor([f == "length" for f in finish]),
        finish=finish,
        texts=tokenizer.batch_decode(rationales, skip_special_tokens=True),
        k=k,
        full_texts=[tokenizer.decode(g, skip_special_tokens=True) for g in gen],
        new_tokens=sum(len(g) for g in gen),
        generated_ids=gen,
        end_steps=end_step,
    )
