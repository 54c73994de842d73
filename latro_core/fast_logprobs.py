"""The exact speed-ups behind :func:`latro_core.logprobs.sequence_logprobs`.

``logprobs.reference_logprobs`` is the definition: one unpadded x⊕z⊕y through the model, the full
log-softmax at every position, gathered at the next token. :func:`token_logprobs` computes the same
numbers for a padded batch. Three savings, all exact up to float rounding (tests/test_logprobs.py
holds them to it):

* The K samples of a question share their prompt x. The decoder runs over each distinct prompt
  once, and the K rationales continue from its KV cache (``share_prompt``); gradients reach the
  prompt's activations through that cache. (Off under gradient checkpointing, which drops caches.)
* Rows run in groups of similar length, each padded only to its own longest row
  (``length_buckets``): rationales of 30 and 128 tokens do not both cost 128.
* Only the rows of W h that are scored are computed, ``chunk`` at a time, and only logsumexp is
  kept: the (tokens x vocab) logits are never stored, and backward recomputes one chunk at a time.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _split_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, lm_head) of a causal LM, also through a peft wrapper (LoRA layers stay active)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


# ------------------------------------------------------------------ log-probabilities of targets

class LinearTargetLogProb(torch.autograd.Function):
    """log_softmax(h Wᵀ + b)[targets] for h (N, H), W (V, H), b (V,) or None, targets (N,) -> (N,) fp32.

    Forward keeps only lse = logsumexp(h Wᵀ + b) (N,). Backward recomputes the logits ``chunk`` rows
    at a time and uses  ∂ log p_t / ∂ logits = onehot(t) − softmax(logits),  in place, so one
    (chunk x V) buffer is all the vocabulary ever costs.
    """

    @staticmethod
    def _logits(h, weight, bias):
        return (h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())).float()

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int):
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        lse = torch.empty_like(out)
        for s in range(0, h.shape[0], chunk):
            logits = LinearTargetLogProb._logits(h[s:s + chunk], weight, bias)      # (c, V)
            lse[s:s + chunk] = torch.logsumexp(logits, -1)
            # log p_t = logits_t − logsumexp(logits)
            out[s:s + chunk] = logits.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - lse[s:s + chunk]
        ctx.save_for_backward(h, weight, bias, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        for s in range(0, h.shape[0], ctx.chunk):
            hc, tc = h[s:s + ctx.chunk], targets[s:s + ctx.chunk]
            # softmax = exp(logits − lse), then d logits = g · (onehot(t) − softmax)
            d = LinearTargetLogProb._logits(hc, weight, bias).sub_(lse[s:s + ctx.chunk, None]).exp_()
            d.scatter_add_(-1, tc[:, None], d.new_full((hc.shape[0], 1), -1.0))
            d = d.mul_(-grad_out[s:s + ctx.chunk, None]).to(h.dtype)
            if need_h:
                grad_h[s:s + ctx.chunk] = d @ weight          # ∂/∂h = d W
            if need_w:
                grad_w.addmm_(d.t(), hc)                       # ∂/∂W = dᵀ h
            if need_b:
                grad_b += d.sum(0)
        return grad_h, grad_w, grad_b, None, None


def _generic_target_logprobs(head: nn.Module, h: torch.Tensor, targets: torch.Tensor,
                             inv_temperature: torch.Tensor | None = None) -> torch.Tensor:
    """log_softmax(head(h) · s)[targets] for any head module: h (N, H), targets (N,), s (N,) or
    None -> (N,) in fp32."""
    logits = head(h).float()
    if inv_temperature is not None:
        logits = logits * inv_temperature[:, None]
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def target_logprobs(head: nn.Module, h: torch.Tensor, targets: torch.Tensor, chunk: int = 256,
                    inv_temperature: torch.Tensor | None = None) -> torch.Tensor:
    """log pi(target | h) = log_softmax(head(h) · s)[target] for h (N, H), targets (N,) -> (N,) fp32,
    ``chunk`` rows of vocabulary logits at a time; s = ``inv_temperature`` (N,) = 1/T per row (None:
    1). A plain ``nn.Linear`` head goes through :class:`LinearTargetLogProb` (bias-free: on h · s,
    since W (h s) = (W h) s); any other head (with a bias under T ≠ 1, wrapped by peft, or carrying
    hooks, e.g. accelerate's offloading ones, that calling its weight directly would skip) is
    checkpointed chunk by chunk, so its logits too are recomputed in backward rather than stored."""
    hooked = head._forward_hooks or head._forward_pre_hooks or hasattr(head, "_hf_hook")
    if type(head) is nn.Linear and not hooked and (inv_temperature is None or head.bias is None):
        hs = h if inv_temperature is None else h * inv_temperature[:, None].to(h.dtype)
        return LinearTargetLogProb.apply(hs, head.weight, head.bias, targets, chunk)
    parts = []
    for s in range(0, h.shape[0], chunk):
        hc, tc = h[s:s + chunk], targets[s:s + chunk]
        sc = None if inv_temperature is None else inv_temperature[s:s + chunk]
        if torch.is_grad_enabled() and hc.requires_grad:
            parts.append(checkpoint(_generic_target_logprobs, head, hc, tc, sc, use_reentrant=False))
        else:
            parts.append(_generic_target_logprobs(head, hc, tc, sc))
    return torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)


# ---------------------------------------------------------------------------- hidden states

# One more decoder call costs about as much as this many more tokens in a call (its Python and the
# smaller, less efficient matmuls); :func:`length_buckets` weighs padding against it.
BUCKET_CALL_TOKENS = 32


def length_buckets(lengths: list[int], call_tokens: int | None = None) -> list[list[int]]:
    """Split rows into groups that each run padded to their own longest row, not the batch's.

    With the rows sorted by length, l_1 >= l_2 >= ..., a group of rows i..j costs
    (j − i + 1)·l_i + call_tokens tokens; the split of minimal total cost is found by dynamic
    programming over the sorted rows. Returns lists of row indices (each in increasing order).
    Equal lengths, or padding worth less than a call, give one group: the whole batch.
    ``call_tokens`` defaults to :data:`BUCKET_CALL_TOKENS`.
    """
    call_tokens = BUCKET_CALL_TOKENS if call_tokens is None else call_tokens
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best, cut = [0.0], []                                 # best[j]: cost of the first j sorted rows
    for j in range(1, len(order) + 1):
        # the last group is sorted rows i..j-1, padded to its longest, lengths[order[i]]
        cost, i = min((best[i] + (j - i) * lengths[order[i]] + call_tokens, i) for i in range(j))
        best.append(cost)
        cut.append(i)
    groups, j = [], len(order)
    while j > 0:
        groups.append(sorted(order[cut[j - 1]:j]))
        j = cut[j - 1]
    return groups[::-1]


def _prompt_groups(input_ids: torch.Tensor, score_mask: torch.Tensor):
    """Rows whose unscored prefix (the prompt: every position before the first scored one) is the
    same token sequence: (prompt length per row (B,), group of each row (B,), the groups' prompts)."""
    starts = score_mask.int().argmax(1).tolist()
    keys = [tuple(input_ids[i, :n].tolist()) for i, n in enumerate(starts)]
    uniq = {k: g for g, k in enumerate(dict.fromkeys(keys))}
    return starts, torch.tensor([uniq[k] for k in keys], device=input_ids.device), list(uniq)


def can_share_prompt(decoder: nn.Module) -> bool:
    """A shared-prompt forward needs the decoder to keep its KV cache, which HF's gradient
    checkpointing drops in training mode."""
    ckpt = any(getattr(m, "gradient_checkpointing", False) for m in decoder.modules())
    return not (ckpt and decoder.training)


def _run_prompts(decoder, prompts: list[list[int]], device, mask_dtype):
    """Each distinct prompt through the decoder once, left-padded so that all end at column P-1.
    Returns (h (Q, H): the hidden state after each prompt's last token, its KV cache as a list of
    per-layer tuples (keys, values, ...) (Q, ..., P, ...), the prompts' attention mask (Q, P))."""
    from transformers import DynamicCache

    Q, P = len(prompts), max(len(p) for p in prompts)
    p_ids = torch.zeros(Q, P, dtype=torch.long, device=device)
    p_att = torch.zeros(Q, P, dtype=mask_dtype, device=device)
    for q, p in enumerate(prompts):
        p_ids[q, P - len(p):] = torch.tensor(p, device=device)
        p_att[q, P - len(p):] = 1
    cache = DynamicCache()
    h = decoder(input_ids=p_ids, attention_mask=p_att, position_ids=(p_att.cumsum(-1) - 1).clamp(min=0),
                past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
    return h, [tuple(layer) for layer in cache], p_att


def _suffix_hidden(decoder, prompt, input_ids, attention_mask, score_mask, starts, group, rows):
    """Hidden states of ``rows`` (a list of row indices) predicting their scored positions, each row
    continuing its prompt's KV cache (``prompt``, from :func:`_run_prompts`; group[i] is row i's
    prompt, starts[i] its length). Returns (h (N, H), targets (N,), row (N,), col (N,)): token
    input_ids[row, col] is predicted from h."""
    from transformers import DynamicCache

    h_prompt, kv, p_att = prompt
    dev = input_ids.device
    rows_t = torch.tensor(rows, device=dev)
    g = group[rows_t]
    starts_t = torch.tensor([starts[i] for i in rows], device=dev)
    lens = attention_mask[rows_t].sum(1)
    S = int((lens - starts_t).max())
    cols = starts_t[:, None] + torch.arange(S, device=dev)                                      # (b, S)
    mask = cols < lens[:, None]
    cols = cols.clamp(max=input_ids.shape[1] - 1)
    s_ids = input_ids[rows_t].gather(1, cols).masked_fill(~mask, 0)
    cache = DynamicCache([(k[g], v[g], *rest) for k, v, *rest in kv])   # row i continues prompt g[i]
    att = torch.cat([p_att[g], mask.to(p_att.dtype)], 1)
    h_suffix = decoder(input_ids=s_ids, attention_mask=att, position_ids=cols, past_key_values=cache,
                       use_cache=True).last_hidden_state                                       # (b, S, H)
    if cache.get_seq_length() != p_att.shape[1] + S:
        raise RuntimeError("the decoder did not extend the prompt's KV cache; call with share_prompt=False")
    # suffix token s is predicted from the hidden state before it: the prompt's last for s = 0
    h = torch.cat([h_prompt[g][:, None], h_suffix[:, :-1]], 1)
    keep = mask & score_mask[rows_t].gather(1, cols)
    return h[keep], s_ids[keep], rows_t[:, None].expand_as(cols)[keep], cols[keep]


def _full_hidden(decoder, input_ids, attention_mask, score_mask, rows):
    """As :func:`_suffix_hidden`, without a shared prompt: ``rows`` run whole, up to their last real
    token. Position t is predicted from the hidden state at t-1."""
    rows_t = torch.tensor(rows, device=input_ids.device)
    T = int(_ends(attention_mask[rows_t]).max())
    hidden = decoder(input_ids=input_ids[rows_t, :T], attention_mask=attention_mask[rows_t, :T],
                     use_cache=False).last_hidden_state                                        # (b, T, H)
    keep = score_mask[rows_t, 1:T]                                                             # (b, T-1)
    r, c = keep.nonzero(as_tuple=True)
    return hidden[:, :-1][keep], input_ids[rows_t, 1:T][keep], rows_t[r], c + 1


def _ends(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) one past each row's last attended column."""
    cols = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.bool() * cols).amax(1)


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   score_mask: torch.Tensor, chunk: int = 256, share_prompt: bool = True,
                   temperature: float = 1.0, tempered_mask: torch.Tensor | None = None,
                   length_groups: bool = True) -> torch.Tensor:
    """(B, T) log pi(s_t | s_<t) at positions where ``score_mask`` is True, 0 elsewhere; positions
    where ``tempered_mask`` (B, T) is True are scored at ``temperature``: log_softmax(logits / T).

    ``score_mask[:, 0]`` must be False (the first token has no context). With ``share_prompt``, rows
    with the same prompt (the tokens before their first scored position) run it through the decoder
    once. Rows run in groups of similar length (:func:`length_buckets`), each padded only to its own
    longest; ``length_groups=False`` runs them in one (a sharded model must make the same decoder
    calls on every process). Vocabulary logits are made ``chunk`` positions at a time (:func:`target_logprobs`).
    """
    decoder, head = _split_lm(model)
    B = input_ids.shape[0]
    groups = length_buckets if length_groups else (lambda lengths: [list(range(len(lengths)))])
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    prompts = None
    if share_prompt and bool(score_mask.any(1).all()) and can_share_prompt(decoder):
        starts, group, prompts = _prompt_groups(input_ids, score_mask)
    if prompts is not None and len(prompts) < B:
        prompt = _run_prompts(decoder, prompts, input_ids.device, attention_mask.dtype)
        suffix_lens = (attention_mask.sum(1) - torch.tensor(starts, device=input_ids.device)).tolist()
        parts = [_suffix_hidden(decoder, prompt, input_ids, attention_mask, score_mask, starts, group, rows)
                 for rows in groups(suffix_lens)]
    else:
        parts = [_full_hidden(decoder, input_ids, attention_mask, score_mask, rows)
                 for rows in groups(_ends(attention_mask).tolist())]
    h, targets, rows, cols = (torch.cat(x) for x in zip(*parts))
    inv_t = None
    if temperature != 1.0 and tempered_mask is not None:
        if not temperature > 0:
            raise ValueError(f"scoring needs a temperature > 0, got {temperature}")
        # log π_T(s_t) = log_softmax(logits / T)[s_t] on tempered positions, T = 1 elsewhere
        inv_t = torch.where(tempered_mask[rows, cols], 1.0 / temperature, 1.0).float()
    out[rows, cols] = target_logprobs(head, h, targets, chunk, inv_t)
    return out
