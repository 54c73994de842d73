"""latro's own decode step for the Llama family (Llama, SmolLM2, Qwen2, Mistral): one token per row
through RMSNorm, rotary embeddings, grouped-query attention over a static KV cache, and SwiGLU, in
plain torch with one loop over the layers.

For the hidden state h (B, 1, d) of a row's newest token at position p, each layer computes

    a = RMSNorm(h),   [q | k | v] = a · W_qkvᵀ (+ b_qkv)       (one fused matmul; Qwen2's bias)
    q, k ← rotate(q, k; p)                                    (the model's own rotary embedding)
    K[:, :, n], V[:, :, n] = k, v                             (the static cache, written in place)
    h ← h + softmax(q·Kᵀ / √d_head + mask) · V · W_oᵀ          (GQA: KV heads shared by H / H_kv queries)
    m = RMSNorm(h),   [g | u] = m · W_guᵀ,   h ← h + (silu(g) ⊙ u) · W_downᵀ

and the logits are RMSNorm(h) · W_vocabᵀ. The prompt is prefilled by transformers (its cache then
copied into ours), so only the decode steps run here; their logits equal transformers' to float
rounding (tests/test_decoder.py: the tiny model and SmolLM2, padded prompts of different lengths,
LoRA adapters applied or merged). Weights are the model's own tensors (views) except the fused
q/k/v and gate/up matrices and LoRA's merged W + scaling·B·A, made once per decode; on a CPU in fp32
the matmuls run on oneDNN's prepacked kernel, as :mod:`latro_core.cpu_kernels` does for transformers.

:func:`supported` says which models it serves (others, and sharded or quantised ones, keep
transformers' decode: ``rollout`` chooses and records which one ran).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import effective_weight, linear_kernel

FAMILY = ("llama", "qwen2", "mistral")


def _inner(model: nn.Module) -> nn.Module:
    """The causal LM inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supported(model: nn.Module) -> str | None:
    """Why latro's decoder cannot run ``model`` (None: it can): not a Llama-family causal LM, a
    sliding attention window, an MLP other than SwiGLU without bias, LoRA variants (DoRA), or
    parameters that are not plain tensors on one device (sharded, offloaded)."""
    lm = _inner(model)
    cfg = getattr(lm, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in FAMILY:
        return f"model_type {kind!r} is not one of {', '.join(FAMILY)}"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "a sliding attention window"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return "an MLP other than SwiGLU without bias"
    if not all(hasattr(getattr(lm, "model", None), a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "not the Llama module layout"
    if any(getattr(m, "lora_variant", None) or getattr(m, "use_dora", {}) and any(m.use_dora.values())
           for m in lm.modules() if hasattr(m, "lora_A")):
        return "a LoRA variant (DoRA)"
    params = list(lm.parameters())
    if any(type(p.data).__name__ == "DTensor" for p in params) or len({p.device for p in params}) != 1:
        return "sharded or offloaded parameters"
    return None


def _bias(m: nn.Module) -> torch.Tensor | None:
    bias = getattr(getattr(m, "base_layer", m), "bias", None)
    return None if bias is None else bias.detach()


class LlamaDecoder:
    """A decode over ``rows`` rows of at most ``capacity`` positions (prompt and new tokens) with
    ``model``'s weights; ``from_cache`` takes transformers' prefilled cache."""

    def __init__(self, model: nn.Module, rows: int, capacity: int):
        lm = _inner(model)
        cfg, body = lm.config, lm.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps, self.capacity = cfg.rms_norm_eps, capacity
        self.embed, self.rotary = body.embed_tokens.weight, body.rotary_emb
        self.final_norm = body.norm.weight
        self.vocab = linear_kernel(effective_weight(lm.lm_head), None, rows)
        self.layers = [self._layer(layer, rows) for layer in body.layers]

    def _layer(self, layer: nn.Module, rows: int) -> dict:
        """One layer's weights: the norms' (views), fused q/k/v and gate/up, o and down."""
        att, mlp = layer.self_attn, layer.mlp
        qkv = [att.q_proj, att.k_proj, att.v_proj]
        biases = [_bias(p) for p in qkv]
        bias = torch.cat(biases) if all(b is not None for b in biases) else None
        return {"norm_in": layer.input_layernorm.weight, "norm_post": layer.post_attention_layernorm.weight,
                "qkv": linear_kernel(torch.cat([effective_weight(p) for p in qkv]), bias, rows),
                "o": linear_kernel(effective_weight(att.o_proj), _bias(att.o_proj), rows),
                "gate_up": linear_kernel(torch.cat([effective_weight(mlp.gate_proj), effective_weight(mlp.up_proj)]),
                                         None, rows),
                "down": linear_kernel(effective_weight(mlp.down_proj), None, rows)}

    def from_cache(self, cache) -> None:
        """Copy transformers' filled cache (its layers' keys / values, (B, H_kv, n, d)) into static
        buffers of ``capacity`` positions: ``self.keys[i]`` / ``self.values[i]`` (B, H_kv, capacity, d)."""
        self.keys, self.values = [], []
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            self.length = k.shape[-2]
            buf_k = k.new_empty(*k.shape[:2], self.capacity, k.shape[-1])
            buf_v = v.new_empty(*v.shape[:2], self.capacity, v.shape[-1])
            buf_k[:, :, :self.length], buf_v[:, :, :self.length] = k, v
            self.keys.append(buf_k)
            self.values.append(buf_v)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Only ``rows`` (indices into the current batch) go on decoding."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # RMSNorm(x) = w ⊙ x / √(mean(x²) + ε), in fp32 as transformers computes it
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens (B,) at ``positions`` (B, 1); ``attention_mask`` (B, n + 1) over the cache and the new
        token (0: left padding). Writes the new keys and values at cache position n; returns the
        logits (B, V)."""
        n, B = self.length, tokens.shape[0]
        h = F.embedding(tokens[:, None], self.embed)                                   # (B, 1, d)
        cos, sin = self.rotary(h, positions)                                           # (B, 1, d_head) each
        cos, sin = cos[:, None], sin[:, None]                                          # (B, 1, 1, d_head)
        # the additive mask: 0 where a row may attend, −inf on its left padding: (B, 1, 1, n + 1)
        mask = torch.zeros(attention_mask.shape, dtype=h.dtype, device=h.device)
        mask = mask.masked_fill(attention_mask == 0, float("-inf"))[:, None, None]
        H, Hkv, D = self.heads, self.kv_heads, self.head_dim
        for w, keys, values in zip(self.layers, self.keys, self.values):
            qkv = w["qkv"](self._rms_norm(h, w["norm_in"]))                           # (B, 1, (H + 2H_kv)·D)
            q, k, v = qkv.view(B, 1, H + 2 * Hkv, D).transpose(1, 2).split([H, Hkv, Hkv], dim=1)
            # rotate(x) = x·cos + (−x₂, x₁)·sin: (B, H or H_kv, 1, D)
            q = q * cos + torch.cat([-q[..., D // 2:], q[..., :D // 2]], -1) * sin
            k = k * cos + torch.cat([-k[..., D // 2:], k[..., :D // 2]], -1) * sin
            keys[:, :, n:n + 1], values[:, :, n:n + 1] = k, v
            # softmax(q·Kᵀ/√D + mask)·V over the n + 1 cached positions, KV heads shared: (B, H, 1, D)
            o = F.scaled_dot_product_attention(q, keys[:, :, :n + 1], values[:, :, :n + 1], attn_mask=mask,
                                               enable_gqa=H != Hkv)
            h = h + w["o"](o.transpose(1, 2).reshape(B, 1, H * D))                    # (B, 1, d)
            gate, up = w["gate_up"](self._rms_norm(h, w["norm_post"])).chunk(2, dim=-1)   # (B, 1, d_ff) each
            h = h + w["down"](F.silu(gate) * up)                                       # (B, 1, d)
        self.length = n + 1
        return self.vocab(self._rms_norm(h, self.final_norm))[:, -1]                  # (B, V)
