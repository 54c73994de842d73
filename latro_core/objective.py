"""The LaTRO objective: self-reward, truncation penalty, RLOO advantages and the Eq. 4 loss.

LaTRO maximises, per question x with gold answer y,

    J(θ) = E_{z~πθ(·|x)} [ log πθ(y|x⊕z) ] − β · KL( πθ(z|x) ‖ π0(z|x) ).

Its gradient (the paper's Eq. 4), estimated with K sampled rationales z_1..z_K, is

    ∇J ≈ 1/K Σ_k [ ∇log πθ(z_k|x) · A_k + ∇log πθ(y|x⊕z_k) ],
    r_k = log πθ(y|x⊕z_k) − β·(log πθ(z_k|x) − log π0(z_k|x)),
    A_k = r_k − 1/(K−1) Σ_{j≠k} r_j                     (REINFORCE leave-one-out).

(The −β∇log πθ(z|x) piece of ∇KL has zero mean, E_z[∇log πθ(z|x)] = 0, so only the score
term carries β; ``tests/test_objective.py`` checks this against exact enumeration.)

**The reward family** (:data:`REWARDS`). LaTRO's Proposition 1 says majority voting targets
p_M(y|x) = E_{z~πθ}[πθ(y|x⊕z)] and proposes surrogates E_z[φ(πθ(y|x⊕z))] for a monotone φ. With
ℓ(z) = log πθ(y|x⊕z) and R(z) = φ(πθ(y|x⊕z)) (or a checker's 0/1), every member maximises

    J(θ) = E_{z~πθ(·|x)} [ R(z) ] − β · KL( πθ(z|x) ‖ π0(z|x) ),

    ∇J ≈ 1/K Σ_k [ ∇log πθ(z_k|x) · A_k + w_k · ∇log πθ(y|x⊕z_k) ],   r_k = R(z_k) − β·log(πθ/π0),

A_k the RLOO advantages of r, and w_k = ∂R/∂ℓ at z_k, the "direct" term (∇R = w·∇ℓ):

    latro        R = ℓ                 w = λ (1: Eq. 4)           φ = log: the bound below log p_M
    probability  R = πθ(y|x⊕z) = e^ℓ   w = λ·e^ℓ (1: exact)       φ = identity: p_M itself (VeriFree: at
                 λ = 1, β = 0 its released run.sh, reward_source p, sft_coef_source reward, RLOO; it
                 sets a cut response's reward to 0: here --truncation constant --gamma 0)
    verifier     R = 1[ŷ checked right], ŷ the model's own answer after z;  w = 0;  the score term
                 covers z⊕ŷ, A·∇log πθ(z⊕ŷ|x), as RLVR's policy gradient covers the whole response
    rlpr         R = clip(p̄(y|x⊕z) − p̄(y|x), 0, 1),  p̄ the mean per-token probability;  w = 0, and R
                 held fixed (no gradient through it): the estimator targets E_z[R(z)·∇log πθ(z|x)] − β∇KL,
                 a semi-gradient, as RLPR uses its reward (our reading of arXiv 2506.18254; the mean
                 per-token probability minus the no-reasoning one as in the RLPR code line's reward
                 manager; its prompt filter is left out: it guards std-normalised GRPO advantages,
                 and RLOO's do not divide by the spread, README "LaTRO and its successors")
    k_sample_bound   R = L̂ = log (1/K) Σ_j πθ(y|x⊕z_j), the question's;  w_k = λ·K·s_k;  its own
                 advantages K·(L̂ − L̂_{−k}), VIMCO's (below)
    information_gain  R = ℓ(z) − log πθ(y|x), the log-likelihood the rationale adds to answering at once
                 (RLP's information gain, arXiv 2510.01265);  w = λ.  The baseline log πθ(y|x) is held fixed,
                 as RLP holds its no-think EMA teacher and RLPR its p̄(y|x): it is the same for a question's K
                 rationales, so RLOO removes it and the estimator is LaTRO's (∇J the same); it differs from
                 LaTRO's only where a rule reads R's level: a cut rationale's penalty (--truncation constant:
                 r = γ, γ nats below answering without z, where LaTRO's γ is an absolute log-likelihood; not
                 batch_mean, R has no sign) and the logged reward.  Were log πθ(y|x) to carry gradient,
                 ∇J would gain −∇log πθ(y|x) (unlearn the direct answer): not what RLP does, and not this.

**The K-sample bound** (``k_sample_bound``, as JEPO, arXiv 2503.19618, uses it; the IWAE argument).
A question's K rationales together give L̂ = log (1/K) Σ_k πθ(y|x⊕z_k), and

    log p_M(y|x) ≥ E[L̂_K] ≥ E[L̂_{K−1}] ≥ … ≥ E[L̂_1] = E_z[log πθ(y|x⊕z)]     (LaTRO's first term)

(log p_M its K → ∞ limit). R is not per-sample, so its score term is not RLOO of an R:

    ∇E[L̂] = E[ Σ_k s_k·∇ℓ(z_k) + Σ_k (L̂ − L̂_{−k})·∇log πθ(z_k|x) ],   s_k = πθ(y|x⊕z_k) / Σ_j πθ(y|x⊕z_j),

L̂_{−k} VIMCO's leave-one-out baseline (Mnih & Rezende 2016): L̂ with πθ(y|x⊕z_k) swapped for the
geometric mean of the other K−1, independent of z_k, so it leaves the mean unchanged. In the family's
per-sample mean (1/K Σ_k) that is w_k = λ·K·s_k and the reward's own advantages K·(L̂ − L̂_{−k})
(:class:`RewardOutput` ``advantages``); R = L̂ for each of the question's samples, which RLOO removes,
so stage 4's RLOO of r = R − β·log(πθ/π0) carries only the KL's part and the truncation penalty
(a cut rationale: r = γ·mean(r), or γ, against the others' L̂ − β·KL; its VIMCO advantage and share
stay those of its πθ(y|x⊕z), as LaTRO keeps a cut rationale's direct term).

What was checked against the papers (through the search tool), and what is our reading:
- JEPO: the latent-rationale view and Jensen's bound on log πθ(y*|x) with a supervised (direct) term
  beside a REINFORCE term, and a multi-sample variant that tightens it (arXiv 2503.19618 v2's abstract
  and the alphaXiv overview's "single-sample JEPO, and multi-sample JEPO gradient structures").
  Its exact multi-sample baseline we could not read there: VIMCO's is our choice, defined as
  tensorflow/probability's ``tfp.vi.csiszar_vimco_helper`` documents it (log_sooavg_u: the average
  with u_i swapped for the geometric average of the others). β·KL to π0 and the factor K are ours.
- RLP: r(c_t) = S_pred − S_ema, log-likelihood of the next token with the thought minus that of a
  no-think EMA copy of the model (φ ← 0.999φ + 0.001θ), group-relative advantages, and only the thought
  tokens updated (arXiv 2510.01265's abstract; the paper notes at en.papernotes.org and a summary at
  yaaang.notion.site). So no gradient through the baseline (ours: πθ itself, no grad, at the step);
  RLP has no direct term (w = 0): that is ``--lam 0`` here, which is also the released LaTRO code's.

``tests/test_objective.py`` checks each estimator's mean against ∇J by exact enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from .rollout import Rollout
    from .tasks import Example, Task

TRUNCATION_RULES = ("batch_mean", "constant", "none")


@dataclass
class RewardInput:
    """What a reward reads, for the N = Q·K samples of one micro-batch (sample i answers question i // K).

    ``logp_y`` (N,) log πθ(y|x⊕z), detached (log πθ(ŷ|x⊕z) for a reward that scores the model's own
    answer ŷ); ``direct_scale`` λ, the method's weight on the direct term; ``extras``: what else the step
    can compute, each when first read: "answer_right" (N,) bool, the task's checker on the model's own
    answer after z (rewards with ``own_answer``); "answer_prob" and "answer_prob_without_z" (N,), the mean
    per-token probability of y after x⊕z and after x alone; "answer_logp_without_z" (N,), log πθ(y|x).
    ``rollout``, ``rows`` (its rows in this micro-batch), ``questions`` and ``task``: the samples themselves
    (token ids, texts), for a reward that reads them; None in the exactness tests, which give ``extras``
    directly. ``k``: K, the samples per question, for a reward that reads a question's K together."""

    logp_y: torch.Tensor
    direct_scale: float | torch.Tensor = 1.0
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    rollout: Rollout | None = None
    rows: slice | None = None
    questions: Sequence[Example] = ()
    task: Task | None = None
    k: int = 1


@dataclass
class RewardOutput:
    """``value`` R_k (N,), detached; ``direct_weight`` w_k = ∂R/∂ℓ, the weight on ∇log πθ(y|x⊕z_k)
    (a float or (N,) detached; 0: no direct term); ``advantages``: the score term's own advantages (N,)
    detached, for a reward that is not per-sample (the K-sample bound's VIMCO term), added to the RLOO
    advantages of r = R − β·log(πθ/π0) (R then the same for a question's K samples, which RLOO removes);
    0 for a per-sample reward, whose score term is RLOO's alone."""

    value: torch.Tensor
    direct_weight: float | torch.Tensor = 0.0
    advantages: float | torch.Tensor = 0.0


def log_likelihood_reward(inp: RewardInput) -> RewardOutput:
    """LaTRO: R = log πθ(y|x⊕z), w = λ."""
    return RewardOutput(inp.logp_y, inp.direct_scale)


def probability_reward(inp: RewardInput) -> RewardOutput:
    """VeriFree: R = πθ(y|x⊕z) = e^ℓ, w = λ·e^ℓ."""
    p = inp.logp_y.exp()
    return RewardOutput(p, inp.direct_scale * p)


def verifier_reward(inp: RewardInput) -> RewardOutput:
    """RLVR: R = 1[ŷ checked right], no direct term."""
    return RewardOutput(inp.extras["answer_right"].to(inp.logp_y.dtype), 0.0)


def rlpr_reward(inp: RewardInput) -> RewardOutput:
    """RLPR: R = clip(p̄(y|x⊕z) − p̄(y|x), 0, 1), held fixed, no direct term."""
    # R = clip(p̄(y|x⊕z) − p̄(y|x), 0, 1)
    debiased = inp.extras["answer_prob"] - inp.extras["answer_prob_without_z"]
    return RewardOutput(debiased.clamp(0, 1).to(inp.logp_y.dtype), 0.0)


def information_gain_reward(inp: RewardInput) -> RewardOutput:
    """RLP's information gain: R = log πθ(y|x⊕z) − log πθ(y|x), the baseline held fixed; w = λ."""
    # R = ℓ(z) − log πθ(y|x)
    gain = inp.logp_y - inp.extras["answer_logp_without_z"].to(inp.logp_y.dtype)
    return RewardOutput(gain, inp.direct_scale)


def k_sample_bound(logp_y_by_question: torch.Tensor) -> torch.Tensor:
    """The K-sample bound of each question: (Q, K) log πθ(y|x⊕z_k) -> (Q,) L̂ = log (1/K) Σ_k πθ(y|x⊕z_k).

    E[L̂] ≤ log p_M(y|x), rising with K to it; at K = 1 it is LaTRO's E_z[log πθ(y|x⊕z)] (module doc)."""
    # L̂ = log Σ_k e^{ℓ_k} − log K
    return torch.logsumexp(logp_y_by_question, -1) - math.log(logp_y_by_question.shape[-1])


def vimco_advantages(logp_y_by_question: torch.Tensor) -> torch.Tensor:
    """VIMCO's (Mnih & Rezende 2016) leave-one-out learning signals, (Q, K) -> (Q, K): L̂ − L̂_{−k}, where
    L̂_{−k} is the bound with ℓ_k swapped for the mean of the other K−1 (their probabilities' geometric
    mean), which does not depend on z_k."""
    K = logp_y_by_question.shape[-1]
    if K < 2:
        raise ConfigError("the K-sample bound's leave-one-out baseline needs K >= 2 rationales per question.")
    # mean_{j≠k} ℓ_j, (Q, K)
    others = (logp_y_by_question.sum(-1, keepdim=True) - logp_y_by_question) / (K - 1)
    # row k of the last two dims: ℓ with ℓ_k replaced by mean_{j≠k} ℓ_j, (Q, K, K)
    eye = torch.eye(K, dtype=torch.bool, device=logp_y_by_question.device)
    swapped = torch.where(eye, others[..., None], logp_y_by_question[..., None, :])
    # L̂ − L̂_{−k}, L̂_{−k} = log (1/K)(Σ_{j≠k} e^{ℓ_j} + e^{mean_{j≠k} ℓ_j})
    return k_sample_bound(logp_y_by_question)[..., None] - k_sample_bound(swapped)


def k_sample_bound_reward(inp: RewardInput) -> RewardOutput:
    """JEPO's K-sample bound with VIMCO's baseline: R = L̂ (each of the question's K samples), w_k = λ·K·s_k,
    advantages K·(L̂ − L̂_{−k}); K·: the family averages over the K samples where ∇E[L̂] sums."""
    logp_y = inp.logp_y.view(-1, inp.k)                                  # (Q, K)
    # s_k = πθ(y|x⊕z_k) / Σ_j πθ(y|x⊕z_j), each rationale's share
    share = logp_y.softmax(-1)
    bound = k_sample_bound(logp_y).repeat_interleave(inp.k)              # (N,)
    return RewardOutput(bound, inp.direct_scale * inp.k * share.reshape(-1),
                        inp.k * vimco_advantages(logp_y).reshape(-1))


@dataclass(frozen=True)
class Reward:
    """One reward of the family (module doc): ``function`` maps a :class:`RewardInput` to R and w;
    ``negative``: R ≤ 0, so the "batch_mean" truncation rule (γ × mean R) makes a cut rationale worse,
    as it must; ``own_answer``: the rollout goes on after the answer template to the model's own answer
    ŷ, which is what ``logp_y`` scores (not the gold y), and the score term is A·log πθ(z⊕ŷ|x) =
    A·(log πθ(z|x) + log πθ(ŷ|x⊕z)) (the KL stays on z); ``objective``: the J it estimates ∇ of."""

    name: str
    function: Callable[[RewardInput], RewardOutput]
    objective: str = ""
    negative: bool = False
    own_answer: bool = False


REWARDS: dict[str, Reward] = {}


def register_reward(reward: Reward) -> Reward:
    """Add ``reward`` to :data:`REWARDS`: ``latro train --reward <name>`` then trains with it
    (``tests/toy_reward.py`` adds one from outside the library, ``--plugin`` from the shell)."""
    REWARDS[reward.name] = reward
    return reward


def get_reward(name: str) -> Reward:
    """The registered reward ``name``; ConfigError naming the known ones if there is none."""
    if name not in REWARDS:
        raise ConfigError(f"reward {name!r} is not one of {', '.join(REWARDS)}")
    return REWARDS[name]


register_reward(Reward("latro", log_likelihood_reward, negative=True,
                       objective="E_z[log πθ(y|x⊕z)] − β·KL  (LaTRO, Eq. 3 with β; Eq. 4 at λ = 1)"))
register_reward(Reward("probability", probability_reward,
                       objective="E_z[πθ(y|x⊕z)] − β·KL = p_M(y|x) − β·KL  (VeriFree's objective at β = 0)"))
register_reward(Reward("verifier", verifier_reward, own_answer=True,
                       objective="E_{z,ŷ}[1[ŷ checked right]] − β·KL(z)  (RLVR, RLOO advantages over z⊕ŷ)"))
register_reward(Reward("rlpr", rlpr_reward,
                       objective="semi-gradient of E_z[clip(p̄(y|x⊕z) − p̄(y|x), 0, 1)] − β·KL  (RLPR's debiased reward)"))
register_reward(Reward("k_sample_bound", k_sample_bound_reward, negative=True,
                       objective="E[log (1/K) Σ_k πθ(y|x⊕z_k)] − β·KL, between LaTRO's objective and log p_M  "
                                 "(JEPO's multi-sample bound, VIMCO's baseline)"))
register_reward(Reward("information_gain", information_gain_reward,
                       objective="E_z[log πθ(y|x⊕z) − log πθ(y|x)] − β·KL, the baseline held fixed: LaTRO's ∇J  "
                                 "(RLP's information gain)"))


def self_reward(answer_reward: torch.Tensor, logp_z: torch.Tensor, ref_logp_z: torch.Tensor | None,
                beta: float) -> torch.Tensor:
    """r = R − β·(log πθ(z|x) − log π0(z|x)); all (N,), returns (N,) detached. ``answer_reward`` R is
    LaTRO's log πθ(y|x⊕z) (the self-reward), or another member of :data:`REWARDS`."""
    # r_k = R_k − β·log(πθ(z_k|x) / π0(z_k|x))
    kl = (logp_z - ref_logp_z) if (ref_logp_z is not None and beta != 0) else torch.zeros_like(logp_z)
    return (answer_reward - beta * kl).detach()


def penalize_truncated(rewards: torch.Tensor, truncated: torch.Tensor, rule: str = "batch_mean",
                       gamma: float = 2.0, batch_mean: torch.Tensor | float | None = None) -> torch.Tensor:
    """Rewards (N,) with those of rationales cut at L replaced.

    rule "batch_mean" (the authors' released code): r_trunc = γ · mean(r over the batch); rewards are
        log-probabilities (< 0), so γ = 2 makes a cut rationale twice as bad as the average one.
        ``batch_mean``: that mean when ``rewards`` is only part of the batch (a micro-batch, one
        process's share); default ``rewards.mean()``.
    rule "constant" (the paper's text): r_trunc = γ, a fixed (negative) reward.
    rule "none": no penalty.
    """
    if rule not in TRUNCATION_RULES:
        raise ConfigError(f"truncation rule {rule!r} is not one of {TRUNCATION_RULES}")
    if rule == "none" or not bool(truncated.any()):
        return rewards
    # batch mean taken before penalising, as in the released trainer
    mean = rewards.mean() if batch_mean is None else torch.as_tensor(batch_mean, dtype=rewards.dtype)
    value = gamma * mean if rule == "batch_mean" else torch.tensor(gamma, dtype=rewards.dtype)
    return torch.where(truncated.to(rewards.device), value.to(rewards.device), rewards)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages. rewards (Q, K) -> (Q, K), each row sums to zero.

    A_k = r_k − 1/(K−1) Σ_{j≠k} r_j = K/(K−1) · (r_k − mean_j r_j)

    A is unchanged by adding a constant to a row, so each row is first shifted by its first reward:
    equal rewards (e.g. every rationale cut at L under the batch-mean rule) then give exactly 0,
    not float noise that log π(z|x) ~ −10² would scale up in the loss.
    """
    K = rewards.shape[-1]
    if K < 2:
        raise ConfigError("RLOO needs K >= 2 rationales per question (the baseline leaves one out).")
    centred = rewards - rewards[..., :1]
    # A_k = r_k − (Σ_j r_j − r_k) / (K − 1)
    return centred - (centred.sum(-1, keepdim=True) - centred) / (K - 1)


def latro_loss(logp_z: torch.Tensor, logp_y: torch.Tensor, advantages: torch.Tensor,
               direct_weight: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 4 as a loss to minimise; logp_z, logp_y, advantages (N,) for N = Q·K samples.

    loss = −mean_k(A_k · log πθ(z_k|x)) − mean_k(w_k · log πθ(y|x⊕z_k)),  A and w detached,
    ``direct_weight`` w = λ for LaTRO: λ = 1 is the paper's Eq. 4; λ = 0 is the released code
    (``sft_penalty`` = 0); a per-sample (N,) weight for another reward (:class:`RewardOutput`).
    Returns (loss, {"policy_loss", "answer_loss"}).
    """
    # −1/N Σ_k A_k · log πθ(z_k|x)
    policy_loss = -(advantages.detach() * logp_z).mean()
    # −1/N Σ_k w_k · log πθ(y|x⊕z_k)
    w = direct_weight.detach() if isinstance(direct_weight, torch.Tensor) else direct_weight
    answer_loss = -(w * logp_y).mean()
    return policy_loss + answer_loss, {"policy_loss": policy_loss.detach(), "answer_loss": answer_loss.detach()}


def micro_batch_loss(logp_z: torch.Tensor, logp_y: torch.Tensor, ref_logp_z: torch.Tensor | None,
                     truncated: torch.Tensor, k: int, *, beta: float, lam: float = 1.0, truncation: str = "batch_mean",
                     gamma: float = 2.0, batch_mean: torch.Tensor | float | None = None, reward: str = "latro",
                     extras: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stages 3–5 of LaTRO's step (:mod:`latro_core.methods.latro`) on scored samples: the loss to
    back-propagate and its per-sample pieces, for the exactness tests, the benchmarks and notebook 04.

    logp_z, logp_y (N,) with gradients, N = Q·K question-major; ref_logp_z (N,) from π0 (None when
    β = 0); truncated (N,) bool, cut at L; ``reward``: a member of :data:`REWARDS`, ``extras`` what
    else its R reads (:class:`RewardInput`):
        R, w = reward(log πθ(y|x⊕z), λ, extras)                                (REWARDS)
        r = R − β·(log πθ(z|x) − log π0(z|x))                                  (self_reward)
        r ← γ·mean(r) (or γ, or r) where cut at L                              (penalize_truncated)
        A = r_k − mean_{j≠k} r_j, per question, + the reward's own advantages  (rloo_advantages)
        loss = −mean(A · log πθ(z|x)) − mean(w · log πθ(y|x⊕z))                (latro_loss, Eq. 4)
    (the verifier: y = ŷ, the model's own answer, and A multiplies log πθ(z⊕ŷ|x); w = 0)
    Returns (loss, {"reward" (after the penalty), "adv", "policy_loss", "answer_loss"}).
    """
    spec = get_reward(reward)
    answer_reward = spec.function(RewardInput(logp_y.detach(), lam, extras or {}, k=k))
    r = penalize_truncated(self_reward(answer_reward.value, logp_z, ref_logp_z, beta), truncated, truncation,
                           gamma, batch_mean)
    adv = rloo_advantages(r.view(-1, k)).view(-1) + answer_reward.advantages
    # the score term's log-probability: of z, or of z⊕ŷ when the answer scored is the model's own
    logp_action = logp_z + logp_y if spec.own_answer else logp_z
    loss, terms = latro_loss(logp_action, logp_y, adv, answer_reward.direct_weight)
    return loss, {"reward": r, "adv": adv, **terms}
