"""log pi(z|x) and log pi(y|x+z) for a padded batch, in one forward pass.

Every sample is the token sequence  x ⊕ z ⊕ y  (prompt, rationale, answer). We right-pad the
batch, so real tokens sit at positions 0..len-1 and need no position-id fix-up, and mark which
positions hold z and which hold y. With h_t the decoder's hidden state after token t,

    log pi(s_t | s_<t) = log_softmax(W h_{t-1})[s_t]
    log pi(z|x)   = sum_{t in z} log pi(s_t | s_<t)
    log pi(y|x⊕z) = sum_{t in y} log pi(s_t | s_<t)

Only the rows of W h that are needed are computed, in chunks, and under autograd each chunk is
checkpointed: the (tokens x vocab) logits are never stored, only recomputed in backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class PackedBatch:
    """Right-padded x⊕z⊕y sequences. All tensors (B, T); masks are bool, True on z / y tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    z_mask: torch.Tensor
    y_mask: torch.Tensor

    def to(self, device) -> "PackedBatch":
        return PackedBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.z_mask, self.y_mask)))


def pack(prompts: list[list[int]], rationales: list[list[int]], answers: list[list[int]],
         pad_id: int) -> PackedBatch:
    """Concatenate x_i ⊕ z_i ⊕ y_i and right-pad to the longest. Lists of token ids, one per sample."""
    if not (len(prompts) == len(rationales) == len(answers)):
        raise ValueError("prompts, rationales and answers must have the same length")
    if any(len(x) == 0 for x in prompts):
        raise ValueError("every prompt needs at least one token (the first z/y token is predicted from it)")
    seqs = [list(x) + list(z) + list(y) for x, z, y in zip(prompts, rationales, answers)]
    T = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros(B, T, dtype=torch.long)
    zm = torch.zeros(B, T, dtype=torch.bool)
    ym = torch.zeros(B, T, dtype=torch.bool)
    for i, (x, z, y) in enumerate(zip(prompts, rationales, answers)):
        n = len(seqs[i])
        ids[i, :n] = torch.tensor(seqs[i], dtype=torch.long)
        att[i, :n] = 1
        zm[i, len(x):len(x) + len(z)] = True
        ym[i, len(x) + len(z):n] = True
    return PackedBatch(ids, att, zm, ym)


def _split_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, lm_head) of a causal LM, also through a peft wrapper (LoRA layers stay active)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _gather_logprobs(head: nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(head(h))[targets]: h (N, H), targets (N,) -> (N,) in fp32."""
    logits = head(h).float()
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   score_mask: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(B, T) log pi(s_t | s_<t) at positions where ``score_mask`` is True, 0 elsewhere.

    ``score_mask[:, 0]`` must be False (the first token has no context). Vocab-sized logits are
    made ``chunk`` positions at a time and, when gradients are on, recomputed in backward.
    """
    decoder, head = _split_lm(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    # position t is predicted from hidden state t-1
    pred_mask = score_mask[:, 1:]                                   # (B, T-1)
    h = hidden[:, :-1][pred_mask]                                   # (N, H)
    targets = input_ids[:, 1:][pred_mask]                           # (N,)
    parts = []
    for s in range(0, h.shape[0], chunk):
        hc, tc = h[s:s + chunk], targets[s:s + chunk]
        if torch.is_grad_enabled() and hc.requires_grad:
            parts.append(checkpoint(_gather_logprobs, head, hc, tc, use_reentrant=False))
        else:
            parts.append(_gather_logprobs(head, hc, tc))
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    if parts:
        out[:, 1:][pred_mask] = torch.cat(parts)
    return out


def sequence_logprobs(model: nn.Module, batch: PackedBatch, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over x⊕z⊕y: returns (log pi(z|x), log pi(y|x⊕z)), each (B,) fp32 token sums."""
    tlp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.z_mask | batch.y_mask, chunk)
    return (tlp * batch.z_mask).sum(1), (tlp * batch.y_mask).sum(1)


class PolicyScorer(nn.Module):
    """The trainable module: wraps a causal LM so that ``forward`` returns the two log-probabilities.

    Training calls the LM through this module's ``forward`` so that accelerate's DDP/FSDP wrapper
    (which hooks ``forward``) sees every pass. ``self.lm`` is the language model itself.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, z_mask, y_mask):
        return sequence_logprobs(self.lm, PackedBatch(input_ids, attention_mask, z_mask, y_mask))
