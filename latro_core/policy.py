"""The policy a method's step works with: πθ to sample from and to score, π0 to score against.

A step needs four things of the two models, and :class:`Policy` is exactly those four:

    policy.sample(step, first, questions, task)   z_k ~ πθ(·|x) at T, K per question   (rollout)
    policy.score(batch)                           log π_T,θ(z|x), log πθ(y|x⊕z), with gradients
    policy.reference_logp_z(batch)                log π_T,0(z|x), no gradients (None: no π0)
    policy.answer_probability(batch)              (1/|y|) Σ_t πθ(y_t|x⊕z⊕y_<t), no gradients

z is scored at ``scoring_temperature``: the sampling temperature T for a method that scores the
policy that drew z (LaTRO's KL term), else 1; πθ and π0 alike (:mod:`latro_core.logprobs`).

Each question's K rationales draw from their own generator, seeded by (seed, step, the question's
position in the step's global batch) (:func:`sampling_generator`), so a run samples the same
rationales on 1 or N processes. What sharding needs is given, not imported: ``weights_for_sampling``
gathers a sharded πθ's parameters for the decode (:func:`latro_core.sharding.gathered`), and
``precision`` is the forward's autocast (accelerate's mixed precision), so this module stays below
the training layer that knows about processes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import NumericalError
from .logprobs import PackedBatch, mean_answer_probability, pack, sequence_logprobs
from .rollout import Rollout, sample_rationales
from .tasks import Example, Task


def sampling_generator(seed: int, step: int, question: int, device="cpu") -> torch.Generator:
    """The generator that samples the K rationales of the ``question``-th question (its position in
    the step's global batch) at optimizer step ``step`` (0-based): seeded by (seed, step, question),
    not by the process, so a run samples the same rationales whatever the number of processes."""
    g = torch.Generator(device=device)
    return g.manual_seed(((seed * 1_000_003 + step) * 1_000_033 + question) % (2 ** 63))


@dataclass(frozen=True)
class SamplingSettings:
    """How rationales are drawn: ``k`` per question, at most ``max_new_tokens`` (L) tokens each, at
    ``temperature`` T (top-k / top-p off when None), generators seeded from ``seed``, tokens drawn by
    ``sampler`` (:data:`latro_core.rollout.SAMPLERS`), decoded by ``decoder`` (``rollout.DECODERS``)."""

    k: int
    max_new_tokens: int
    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    sampler: str = "inverse_cdf"
    decoder: str = "auto"


def _pass_through(module: nn.Module) -> AbstractContextManager[nn.Module]:
    return nullcontext(module)


@dataclass
class Policy:
    """πθ (trainable) and π0 (frozen), as a step samples and scores them.

    ``scorer``: the trainable module whose forward gives (log πθ(z|x), log πθ(y|x⊕z)) (a
    :class:`~latro_core.logprobs.PolicyScorer`, maybe wrapped by accelerate or sharded);
    ``lm``: the language model inside it; ``sampling_module``: what to decode from (``lm``, or a
    sharded root); ``reference``: π0's scorer, or None; ``reference_is_adapter_off``: π0 is ``lm``
    with its LoRA adapter switched off; ``scoring_temperature``: the T at which z is scored."""

    scorer: nn.Module
    lm: nn.Module
    tokenizer: object
    sampling: SamplingSettings
    scoring_temperature: float = 1.0
    reference: nn.Module | None = None
    reference_is_adapter_off: bool = False
    sampling_module: nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Callable[[], AbstractContextManager] = nullcontext
    weights_for_sampling: Callable[[nn.Module], AbstractContextManager[nn.Module]] = _pass_through

    def sample(self, step: int, first_question: int, questions: list[Example], task: Task, *,
               keep_going_after_stop: bool = False) -> Rollout:
        """K rationales per question in one batch, from the task's prompt, stopped at its stop strings
        (or, with ``keep_going_after_stop``, going on to EOS or L after them); question i draws from
        the generator of question ``first_question + i`` of step ``step`` (:func:`sampling_generator`)."""
        s = self.sampling
        prompts = [task.prompt(q, self.tokenizer) for q in questions]
        generators = [sampling_generator(s.seed, step, first_question + i, self.device) for i in range(len(prompts))]
        try:
            with self.weights_for_sampling(self.sampling_module or self.lm) as module, self.precision():
                return sample_rationales(module, self.tokenizer, prompts, k=s.k, max_new_tokens=s.max_new_tokens,
                                         temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                         stop_strings=task.stop_strings, keep_going_after_stop=keep_going_after_stop,
                                         generator=generators, sampler=s.sampler, decoder=s.decoder)
        except RuntimeError as e:
            if "probability tensor contains" not in str(e):
                raise
            raise NumericalError(f"non-finite sampling probabilities at step {step + 1}: the model's weights "
                                 f"or logits hold NaN/inf; the run stopped and the last good checkpoint is "
                                 f"kept. Check the starting model, lower the learning rate or use fp32.") from None

    def pack(self, prompts: list[list[int]], rationales: list[list[int]], answers: list[list[int]]) -> PackedBatch:
        """x_i ⊕ z_i ⊕ y_i (token id lists) right-padded into one batch on the policy's device."""
        return pack(prompts, rationales, answers, self.tokenizer.pad_token_id).to(self.device)

    def score(self, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π_T,θ(z|x), log πθ(y|x⊕z)), both (B,), with gradients, through the trainable module's
        forward (so DDP's and FSDP2's hooks see the pass)."""
        return self.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)

    @torch.no_grad()
    def reference_logp_z(self, batch: PackedBatch) -> torch.Tensor | None:
        """log π_T,0(z|x) (B,) at the scoring temperature, no gradients; None when there is no π0."""
        with self.precision():
            if self.reference_is_adapter_off:        # LoRA: π0 is the same weights with the adapter off
                with self.lm.disable_adapter():
                    return sequence_logprobs(self.lm, batch, temperature=self.scoring_temperature)[0]
            if self.reference is None:
                return None
            return self.reference(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)[0]

    @torch.no_grad()
    def answer_probability(self, batch: PackedBatch) -> torch.Tensor:
        """(B,) the mean per-token probability of y after x⊕z under πθ, no gradients (RLPR's p̄)."""
        return mean_answer_probability(self.lm, batch)
