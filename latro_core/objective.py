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

``tests/test_objective.py`` checks each estimator's mean against ∇J by exact enumeration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import ConfigError

TRUNCATION_RULES = ("batch_mean", "constant", "none")


@dataclass(frozen=True)
class Reward:
    """One reward of the family (module doc). ``value(logp_y, info)``: R_k, (N,) detached, ``info``
    holding what else it needs ("correct": the checker's verdicts; "answer_prob", "answer_prob_without_z":
    mean per-token probabilities of y with and without z); ``direct(logp_y, lam)``: w_k, the weight on
    ∇log πθ(y|x⊕z_k) (a float or (N,) detached; 0: none); ``checker``: R needs the task's answer
    checker (the rollout then goes on after the template to the model's own answer);
    ``token_probs``: R needs the mean per-token probabilities; ``negative``: R ≤ 0, so the "batch_mean"
    truncation rule (γ × mean R) makes a cut rationale worse, as it must; ``own_answer``: the answer
    scored (``logp_y``) is the model's own continuation ŷ after z, not the gold y, and the score term
    is A·log πθ(z⊕ŷ|x) = A·(log πθ(z|x) + log πθ(ŷ|x⊕z)) (the KL stays on z)."""

    name: str
    value: Callable
    direct: Callable
    checker: bool = False
    token_probs: bool = False
    negative: bool = False
    own_answer: bool = False
    objective: str = ""


REWARDS = {
    "latro": Reward("latro", value=lambda ly, info: ly, direct=lambda ly, lam: lam, negative=True,
                    objective="E_z[log πθ(y|x⊕z)] − β·KL  (LaTRO, Eq. 3 with β; Eq. 4 at λ = 1)"),
    "probability": Reward("probability", value=lambda ly, info: ly.exp(), direct=lambda ly, lam: lam * ly.exp(),
                          objective="E_z[πθ(y|x⊕z)] − β·KL = p_M(y|x) − β·KL  (VeriFree's objective at β = 0)"),
    "verifier": Reward("verifier", value=lambda ly, info: info["correct"].to(ly.dtype), direct=lambda ly, lam: 0.0,
                       checker=True, own_answer=True,
                       objective="E_{z,ŷ}[1[ŷ checked right]] − β·KL(z)  (RLVR, RLOO advantages over z⊕ŷ)"),
    # R = clip(p̄(y|x⊕z) − p̄(y|x), 0, 1)
    "rlpr": Reward("rlpr", value=lambda ly, info: (info["answer_prob"] - info["answer_prob_without_z"]).clamp(0, 1)
                   .to(ly.dtype), direct=lambda ly, lam: 0.0, token_probs=True,
                   objective="semi-gradient of E_z[clip(p̄(y|x⊕z) − p̄(y|x), 0, 1)] − β·KL  (RLPR's debiased reward)"),
}


def register_reward(reward: Reward) -> Reward:
    """Add ``reward`` to :data:`REWARDS`: ``latro train --reward <name>`` then trains with it
    (``tests/toy_reward.py`` adds one from outside the library)."""
    REWARDS[reward.name] = reward
    return reward


def reward_spec(name: str) -> Reward:
    """The registered reward ``name``; ConfigError naming the known ones if there is none."""
    if name not in REWARDS:
        raise ConfigError(f"reward {name!r} is not one of {', '.join(REWARDS)}")
    return REWARDS[name]


def self_reward(logp_y: torch.Tensor, logp_z: torch.Tensor, ref_logp_z: torch.Tensor | None,
                beta: float) -> torch.Tensor:
    """r = R − β·(log πθ(z|x) − log π0(z|x)); all (N,), returns (N,) detached. R (``logp_y``) is the
    answer's reward: LaTRO's log πθ(y|x⊕z) (the self-reward), or another member of :data:`REWARDS`."""
    # r_k = R_k − β·log(πθ(z_k|x) / π0(z_k|x))
    kl = (logp_z - ref_logp_z) if (ref_logp_z is not None and beta != 0) else torch.zeros_like(logp_z)
    return (logp_y - beta * kl).detach()


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
               lam: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 4 as a loss to minimise; logp_z, logp_y, advantages (N,) for N = Q·K samples.

    loss = −mean_k(A_k · log πθ(z_k|x)) − mean_k(w_k · log πθ(y|x⊕z_k)),  A and w detached,
    w = λ for LaTRO: λ = 1 is the paper's Eq. 4; λ = 0 is the released code (``sft_penalty`` = 0);
    ``lam`` may be a per-sample (N,) weight (the direct term of another reward, :data:`REWARDS`).
    Returns (loss, {"policy_loss", "answer_loss"}).
    """
    # −1/N Σ_k A_k · log πθ(z_k|x)
    policy_loss = -(advantages.detach() * logp_z).mean()
    # −1/N Σ_k w_k · log πθ(y|x⊕z_k)
    w = lam.detach() if isinstance(lam, torch.Tensor) else lam
    answer_loss = -(w * logp_y).mean()
    return policy_loss + answer_loss, {"policy_loss": policy_loss.detach(), "answer_loss": answer_loss.detach()}


def latro_update(logp_z: torch.Tensor, logp_y: torch.Tensor, ref_logp_z: torch.Tensor | None,
                 truncated: torch.Tensor, k: int, *, beta: float, lam: float = 1.0, truncation: str = "batch_mean",
                 gamma: float = 2.0, batch_mean: torch.Tensor | float | None = None, reward: str = "latro",
                 info: dict | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One LaTRO update on scored samples: the loss to back-propagate and its per-sample pieces.

    logp_z, logp_y (N,) with gradients, N = Q·K question-major; ref_logp_z (N,) from π0 (None when
    β = 0); truncated (N,) bool, cut at L; ``reward``: a member of :data:`REWARDS`, ``info`` what else
    its R needs (:class:`Reward`). The trainer, the benchmarks and notebook 04 all call this:
        r = R − β·(log πθ(z|x) − log π0(z|x)),  R = log πθ(y|x⊕z) for LaTRO   (self_reward)
        r ← γ·mean(r) (or γ, or r) where cut at L                              (penalize_truncated)
        A = r_k − mean_{j≠k} r_j, per question                                 (rloo_advantages)
        loss = −mean(A · log πθ(z|x)) − mean(w · log πθ(y|x⊕z)),  w = λ        (latro_loss, Eq. 4)
    (the verifier: y = ŷ, the model's own answer, and A multiplies log πθ(z⊕ŷ|x); w = 0)
    Returns (loss, {"reward" (after the penalty), "adv", "policy_loss", "answer_loss"}).
    """
    spec = reward_spec(reward)
    ly = logp_y.detach()
    r = penalize_truncated(self_reward(spec.value(ly, info or {}), logp_z, ref_logp_z, beta), truncated, truncation,
                           gamma, batch_mean)
    adv = rloo_advantages(r.view(-1, k)).view(-1)
    # the score term's log-probability: of z, or of z⊕ŷ when the answer scored is the model's own
    logp_action = logp_z + logp_y if spec.own_answer else logp_z
    loss, terms = latro_loss(logp_action, logp_y, adv, spec.direct(ly, lam))
    return loss, {"reward": r, "adv": adv, **terms}
