"""log pi(z|x) and log pi(y|x+z) for a padded batch.

Every sample is the token sequence  x ⊕ z ⊕ y  (prompt, rationale, answer). We right-pad the
batch, so real tokens sit at positions 0..len-1 and need no position-id fix-up, and mark which
positions hold z and which hold y. With h_t the decoder's hidden state after token t,

    log pi(s_t | s_<t) = log_softmax(W h_{t-1})[s_t] = (W h_{t-1})[s_t] − logsumexp(W h_{t-1})
    log pi(z|x)   = sum_{t in z} log pi(s_t | s_<t)
    log pi(y|x⊕z) = sum_{t in y} log pi(s_t | s_<t)

:func:`reference_logprobs` computes exactly this for one sequence, the slow way: it is the
definition. :func:`sequence_logprobs` computes the same for a batch through the exact speed-ups of
``latro_core/fast_logprobs.py`` (tests/test_logprobs.py holds the two equal to float rounding).

A policy sampled at temperature T ≠ 1 is the distribution softmax(W h / T), and its score
function is the gradient of *that* log-probability; ``temperature`` scores z under it, for πθ and
π0 alike, so Eq. 4 estimates the gradient of the objective of the policy that drew the samples
(``tests/test_objective.py`` checks it by enumeration at T ≠ 1, and that untempered scoring fails):

    log π_T(z_t | s_<t) = log_softmax(W h_{t-1} / T)[z_t],   W (h / T) = (W h) / T.

y is scored at T = 1: the self-reward is the model's own probability of the answer at any T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .fast_logprobs import token_logprobs


def reference_logprobs(model: nn.Module, x: list[int], z: list[int], y: list[int],
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition that :func:`sequence_logprobs` computes faster (tests/test_logprobs.py holds them equal):
    one unpadded sequence x⊕z⊕y (token id lists) through the model, the full log-softmax at every
    position, gathered at the next token. Returns (log π_T(z|x), log π(y|x⊕z)): z at ``temperature``,
    y at T = 1. Slow (tokens × vocabulary logits), for checking."""
    ids = torch.tensor([x + z + y], device=next(model.parameters()).device)
    logits = model(ids).logits[0].float()

    def score(lg):   # score(lg)[t - 1] = log_softmax(lg[t - 1])[s_t]: token t given the tokens before it
        return lg.log_softmax(-1)[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
    nx, nz = len(x), len(z)
    return score(logits / temperature)[nx - 1:nx + nz - 1].sum(), score(logits)[nx + nz - 1:].sum()


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



def sequence_logprobs(model: nn.Module, batch: PackedBatch, chunk: int = 256, share_prompt: bool = True,
                      temperature: float = 1.0, length_groups: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over x⊕z⊕y: returns (log π_T(z|x), log π(y|x⊕z)), each (B,) fp32 token
    sums; z is scored at ``temperature`` (the policy that sampled it), y at T = 1."""
    tlp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.z_mask | batch.y_mask, chunk,
                         share_prompt, temperature, batch.z_mask, length_groups)
    return (tlp * batch.z_mask).sum(1), (tlp * batch.y_mask).sum(1)


@torch.no_grad()
def mean_answer_probability(model: nn.Module, batch: PackedBatch, length_groups: bool = True) -> torch.Tensor:
    """(B,) the mean over y's tokens of π(y_t | x⊕z⊕y_<t) (at T = 1), no gradient: RLPR's reward
    before debiasing, (1/|y|) Σ_t exp(log π(y_t | ·)). A batch packed with empty z gives it without z."""
    tlp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.y_mask, length_groups=length_groups)
    # (1/|y|) Σ_t exp(log π(y_t | x⊕z⊕y_<t))
    return (tlp.exp() * batch.y_mask).sum(1) / batch.y_mask.sum(1).clamp(min=1)


class PolicyScorer(nn.Module):
    """The trainable module: wraps a causal LM so that ``forward`` returns the two log-probabilities.

    Training calls the LM through this module's ``forward`` so that accelerate's DDP wrapper and
    FSDP2's hooks (which hook ``forward``) see every pass. ``self.lm`` is the language model itself.
    Called without ``z_mask`` it is the LM (``self.lm(input_ids, attention_mask, **kw)``): sampling
    from a sharded policy goes through the same root module (``sharding.gathered``).
    """

    def __init__(self, lm: nn.Module, temperature: float = 1.0, length_groups: bool = True):
        super().__init__()
        self.lm = lm
        self.temperature = temperature     # z is scored under the policy that sampled it
        self.length_groups = length_groups

    @property
    def generation_config(self):
        return self.lm.generation_config

    def forward(self, input_ids, attention_mask, z_mask=None, y_mask=None, **lm_kwargs):
        if z_mask is None:
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, **lm_kwargs)
        return sequence_logprobs(self.lm, PackedBatch(input_ids, attention_mask, z_mask, y_mask),
                                 temperature=self.temperature, length_groups=self.length_groups)
