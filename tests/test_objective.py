"""Tests for latro_core.objective: RLOO, truncation penalty, self-reward, the Eq. 4 loss, and an
exact-enumeration check that the estimator's expected gradient is the true gradient of J(θ)."""

import copy
import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
import torch

from latro_core.errors import ConfigError
from latro_core.logprobs import mean_answer_probability, pack, sequence_logprobs
from latro_core.objective import (REWARDS, RewardInput, TRUNCATION_RULES, k_sample_bound, latro_loss, micro_batch_loss,
                                  penalize_truncated, rloo_advantages, self_reward)

sys.path.insert(0, str(Path(__file__).parent))      # tests/toy_reward.py

# ----------------------------------------------------------------------------- RLOO


def test_rloo_rows_sum_to_zero_and_match_leave_one_out_formula():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a = rloo_advantages(r)
    assert a.shape == r.shape
    # float64 algebra on K = 4 standard-normal rewards: exact to ~1e-15 (measured 4e-16); a baseline that includes
    # the sample itself is off by (r_k − mean)/(K−1), ~0.3
    torch.testing.assert_close(a.sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    K = r.shape[1]
    explicit = torch.stack([r[:, k] - torch.cat([r[:, :k], r[:, k + 1:]], 1).mean(1) for k in range(K)], 1)
    torch.testing.assert_close(a, explicit, atol=1e-12, rtol=0)
    # the identity in the docstring: K/(K-1) (r_k - mean_j r_j)
    torch.testing.assert_close(a, K / (K - 1) * (r - r.mean(1, keepdim=True)), atol=1e-12, rtol=0)


def test_rloo_k2_is_pairwise_difference():
    r = torch.tensor([[1.0, -3.0], [0.5, 0.25]])
    # default fp32 tolerances: binary fractions, computed exactly
    torch.testing.assert_close(rloo_advantages(r), torch.tensor([[4.0, -4.0], [0.25, -0.25]]))


@pytest.mark.parametrize("k", [3, 4, 6, 16])
def test_rloo_identical_rewards_give_exactly_zero_advantages(k):
    """Every rationale cut at L under the batch-mean rule gives K equal rewards: exactly 0, not the
    rounding noise of Σ_j r_j − r_k (which the uncentred formula leaves for such values)."""
    for v in (-2.75, -61.354312, -0.1, 123.456789):
        r = torch.full((3, k), v)
        assert torch.equal(rloo_advantages(r), torch.zeros(3, k)), v


def test_rloo_needs_two_samples():
    with pytest.raises(ConfigError):
        rloo_advantages(torch.randn(4, 1))


# ----------------------------------------------------------------------------- truncation


def test_penalize_truncated_batch_mean_uses_mean_before_penalty():
    r = torch.tensor([-1.0, -2.0, -3.0, -6.0])
    tr = torch.tensor([False, True, False, True])
    out = penalize_truncated(r, tr, "batch_mean", gamma=2.0)
    m = r.mean()  # -3.0, over all rewards, truncated ones included, before any replacement
    # default fp32 tolerances here and below: small integers and binary fractions, computed exactly
    torch.testing.assert_close(out, torch.tensor([-1.0, 2 * m, -3.0, 2 * m]))
    assert torch.equal(r, torch.tensor([-1.0, -2.0, -3.0, -6.0]))  # input not modified


def test_penalize_truncated_batch_mean_given():
    """A micro-batch penalises with the whole step's mean when it is given, not its own."""
    r = torch.tensor([-1.0, -2.0])
    out = penalize_truncated(r, torch.tensor([False, True]), "batch_mean", gamma=2.0, batch_mean=-5.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, -10.0]))


def test_penalize_truncated_constant():
    r = torch.tensor([-1.0, -2.0, -3.0])
    tr = torch.tensor([True, False, True])
    torch.testing.assert_close(penalize_truncated(r, tr, "constant", gamma=-7.5),
                               torch.tensor([-7.5, -2.0, -7.5]))


def test_penalize_truncated_none_and_no_truncation_are_identity():
    r = torch.tensor([-1.0, -2.0, -3.0])
    assert torch.equal(penalize_truncated(r, torch.tensor([True, True, False]), "none", gamma=5.0), r)
    for rule in TRUNCATION_RULES:
        assert torch.equal(penalize_truncated(r, torch.zeros(3, dtype=torch.bool), rule, gamma=5.0), r)


def test_penalize_truncated_unknown_rule_raises():
    with pytest.raises(ConfigError):
        penalize_truncated(torch.zeros(2), torch.ones(2, dtype=torch.bool), "mean", gamma=1.0)


# ----------------------------------------------------------------------------- reward and loss


def test_self_reward_formula_and_detached():
    ly = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    lz = torch.tensor([-4.0, -3.0, -6.0], requires_grad=True)
    lref = torch.tensor([-5.0, -3.5, -4.0])
    r = self_reward(ly, lz, lref, beta=0.25)
    # default fp32 tolerances: the same two fp32 operations on binary fractions, exact (measured equal)
    torch.testing.assert_close(r, ly.detach() - 0.25 * (lz.detach() - lref))
    assert not r.requires_grad
    torch.testing.assert_close(self_reward(ly, lz, lref, beta=0.0), ly.detach())
    torch.testing.assert_close(self_reward(ly, lz, None, beta=0.3), ly.detach())


def test_latro_loss_formula_and_advantages_detached():
    g = torch.Generator().manual_seed(3)
    lz = torch.randn(6, generator=g, requires_grad=True)
    ly = torch.randn(6, generator=g, requires_grad=True)
    adv = torch.randn(6, generator=g, requires_grad=True)
    lam = 0.7
    loss, terms = latro_loss(lz, ly, adv, direct_weight=lam)
    expect = -(adv.detach() * lz.detach()).mean() - lam * ly.detach().mean()
    # default fp32 tolerances (atol 1e-5, rtol 1.3e-6): the formula's fp32 operations on 6 standard-normal values,
    # equal to an ulp (measured <= 1.5e-8); a wrong sign, mean or λ moves terms of ~0.3 by O(1) of themselves
    torch.testing.assert_close(loss.detach(), expect)
    torch.testing.assert_close(terms["policy_loss"], -(adv.detach() * lz.detach()).mean())
    torch.testing.assert_close(terms["answer_loss"], -lam * ly.detach().mean())
    loss.backward()
    assert adv.grad is None  # no gradient flows into the advantages
    torch.testing.assert_close(lz.grad, -adv.detach() / 6)
    torch.testing.assert_close(ly.grad, torch.full((6,), -lam / 6))


# ----------------------------------------------------------------------------- exactness
#
# A toy policy small enough to enumerate every rationale. Vocabulary {0, 1, 2, EOS=3}; a rationale
# is up to L=3 tokens: either it ends with EOS (the EOS counts as one of its tokens and in its
# probability) or it is 3 ordinary tokens (truncated). That is 1+3+9+27 = 40 rationales per prompt,
# whose πθ(z|x) sum to 1. y = [1, EOS] (EOS is also the pad id, as with SmolLM2). All log-probs come
# from latro_core.logprobs.sequence_logprobs on pack(...).
#
#   J(θ) = mean_x Σ_z πθ(z|x) [ log πθ(y|x⊕z) − β (log πθ(z|x) − log π0(z|x)) ]
#
# ∇J is taken by autograd through the exact sum. The estimator is latro_loss(rloo_advantages(
# self_reward(...))) on K sampled rationales per prompt; its gradient is assembled by the chain rule
# from ∂loss/∂logp (autograd through the real functions) and per-rationale gradients ∇log π, and is
# averaged over M independent batches.

V, EOS, L = 4, 3, 3
PROMPTS = [[0, 1], [2]]
ANSWER = [1, EOS]
K, M = 3, 20000
Z_TOL = 4.5          # every component within 4.5 standard errors of the MC mean ...
ABS_EPS = 1e-6       # ... plus a tiny absolute slack (fp32 log-probs)
REL_TOL = 0.02       # and ‖mean − ∇J‖ / ‖∇J‖ below 2% (the MC noise level here is ~0.3%)


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads]).double()


TEMPERATURES = [1.0, 0.7]     # the paper's T = 1, and a tempered policy: z ~ softmax(logits / T)


@pytest.fixture(scope="module", params=TEMPERATURES, ids=lambda t: f"T={t}")
def toy(request):
    return _toy(request.param)


def _toy_models():
    """(π0 frozen, πθ = θ0 + a perturbation so that KL ≠ 0, πθ's parameters): a one-layer Llama in float64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                      tie_word_embeddings=False, initializer_range=0.5,
                      bos_token_id=0, eos_token_id=EOS, pad_token_id=EOS)
    ref = LlamaForCausalLM(cfg).double().eval()               # π0, frozen
    for p in ref.parameters():
        p.requires_grad_(False)
    model = copy.deepcopy(ref)                                 # θ = θ0 + perturbation, so KL ≠ 0
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return ref, model, list(model.parameters())


def _rationales():
    """Every rationale of at most L tokens over {0, 1, 2}: shorter ones end in EOS, length-L ones are cut."""
    return ([list(s) + [EOS] for m in range(L) for s in itertools.product(range(3), repeat=m)]
            + [list(s) for s in itertools.product(range(3), repeat=L)])


def _toy(T):
    ref, model, params = _toy_models()
    rats = _rationales()
    S, Q = len(rats), len(PROMPTS)
    xs = [x for x in PROMPTS for _ in rats]
    zs = [z for _ in PROMPTS for z in rats]
    batch = pack(xs, zs, [ANSWER] * len(xs), pad_id=EOS)
    # z scored under the tempered policy π_T = softmax(logits / T) that samples it (πθ and π0 alike)
    logp_z, logp_y = sequence_logprobs(model, batch, chunk=7, temperature=T)
    with torch.no_grad():
        ref_z, _ = sequence_logprobs(ref, batch, temperature=T)
    # the enumeration is complete: Σ_z π_T,θ(z|x) = 1 for every prompt; exp of fp32 log-probs (|log p| <= 28, but
    # mass-weighted ~u·|log p| ~ 1e-7 relative): measured |Σ − 1| <= 1.4e-7, ~70x inside 1e-5
    torch.testing.assert_close(logp_z.detach().double().exp().view(Q, S).sum(1),
                               torch.ones(Q, dtype=torch.float64), atol=1e-5, rtol=0)
    # per-rationale gradients, rows [∇log πθ(z_s|x) for all s] + [∇log πθ(y|x⊕z_s) for all s]
    G = torch.stack([_flat(torch.autograd.grad(v, params, retain_graph=True))
                     for v in list(logp_z) + list(logp_y)])
    # what the other rewards read: the toy's "answer checker" (a rationale is right when it starts with
    # token 1), y's mean per-token probability after z and without z (RLPR), and log πθ(y|x) (the
    # information gain's baseline, kept with its gradient for the objective that would differentiate it)
    no_z = pack(xs, [[] for _ in xs], [ANSWER] * len(xs), pad_id=EOS)
    logp_y_without_z = sequence_logprobs(model, no_z, chunk=7)[1]
    info = {"answer_right": torch.tensor([z[:1] == [1] for z in zs]),
            "answer_prob": mean_answer_probability(model, batch).double(),
            "answer_prob_without_z": mean_answer_probability(model, no_z).double(),
            "answer_logp_without_z": logp_y_without_z.detach()}
    toy = dict(params=params, logp_z=logp_z, logp_y=logp_y, ref_z=ref_z, G=G, S=S, Q=Q, T=T,
               truncated=torch.tensor([z[-1] != EOS for z in zs]), info=info, logp_y_without_z=logp_y_without_z)
    if T != 1.0:   # the same rationales scored untempered, for the estimator that forgets T
        plain_z, _ = sequence_logprobs(model, batch, chunk=7)
        with torch.no_grad():
            plain_ref, _ = sequence_logprobs(ref, batch)
        G_plain = torch.stack([_flat(torch.autograd.grad(v, params, retain_graph=True))
                               for v in list(plain_z) + list(logp_y)])
        toy["plain"] = dict(logp_z=plain_z, ref_z=plain_ref, G=G_plain)
    return toy


def _own_answer_toy():
    """The verifier's toy (T = 1): the action is z⊕ŷ, ŷ the model's own one-token answer after z (any of
    the V tokens, so Σ_ŷ πθ(ŷ|x⊕z) = 1), checked right when ŷ = 1. Its rows are the (z, ŷ) pairs, sampled
    with probability πθ(z|x)·πθ(ŷ|x⊕z) (``sample_logp``); ``logp_y`` = log πθ(ŷ|x⊕z)."""
    ref, model, params = _toy_models()
    pairs = [(z, [a]) for z in _rationales() for a in range(V)]
    S, Q = len(pairs), len(PROMPTS)
    xs = [x for x in PROMPTS for _ in pairs]
    zs, ys = [z for _ in PROMPTS for z, _ in pairs], [y for _ in PROMPTS for _, y in pairs]
    batch = pack(xs, zs, ys, pad_id=EOS)
    logp_z, logp_y = sequence_logprobs(model, batch, chunk=7)
    with torch.no_grad():
        ref_z, _ = sequence_logprobs(ref, batch)
    # complete: Σ_{z,ŷ} πθ(z|x)·πθ(ŷ|x⊕z) = 1 for every prompt (fp32 log-probs; as the toy above)
    torch.testing.assert_close((logp_z + logp_y).detach().double().exp().view(Q, S).sum(1),
                               torch.ones(Q, dtype=torch.float64), atol=1e-5, rtol=0)
    G = torch.stack([_flat(torch.autograd.grad(v, params, retain_graph=True))
                     for v in list(logp_z) + list(logp_y)])
    return dict(params=params, logp_z=logp_z, logp_y=logp_y, ref_z=ref_z, G=G, S=S, Q=Q, T=1.0,
                sample_logp=logp_z + logp_y, truncated=torch.tensor([z[-1] != EOS for z in zs]),
                info={"answer_right": torch.tensor([y == [1] for y in ys])})


@pytest.fixture(scope="module")
def own_toy():
    return _own_answer_toy()


def _answer_reward(toy, reward):
    """R(z) of each enumerated rationale, as a differentiable function of θ (module doc of objective)."""
    ly, info = toy["logp_y"], toy["info"]
    if reward == "rlpr":     # held fixed: RLPR's estimator is a semi-gradient (objective.REWARDS)
        return (info["answer_prob"] - info["answer_prob_without_z"]).clamp(0, 1)
    if reward == "information_gain":     # log πθ(y|x) held fixed, as RLP's no-think baseline
        return ly - info["answer_logp_without_z"]
    if reward == "information_gain_differentiated":     # the objective that would differentiate it
        return ly - toy["logp_y_without_z"]
    return {"latro": ly, "probability": ly.exp(), "verifier": info["answer_right"].double(),
            "verifier_z_only": info["answer_right"].double(), "sqrt_probability": (ly / 2).exp()}[reward]


def _expected_k_sample_bound(toy, k=K):
    """(Q,) E_{z_1..z_k ~ πθ(·|x)}[log (1/k) Σ_j πθ(y|x⊕z_j)] per prompt, exactly: a sum over all S^k tuples,
    each weighted by Π_j πθ(z_j|x) (``objective.k_sample_bound`` of its k log-probabilities)."""
    Q, S = toy["Q"], toy["S"]
    tuples = torch.cartesian_prod(*[torch.arange(S)] * k).view(-1, k)                  # (S^k, k)
    lz, ly = toy["logp_z"].view(Q, S), toy["logp_y"].view(Q, S)
    return torch.stack([(lz[q][tuples].sum(-1).exp() * k_sample_bound(ly[q][tuples])).sum() for q in range(Q)])


def _exact_grad(toy, beta, reward="latro"):
    lz = toy["logp_z"]
    # J = Σ_x Σ_a π(a|x)·(R(a) − β·log(πθ(z|x)/π0(z|x))), a = z (or z⊕ŷ in the own-answer toy)
    weight = toy.get("sample_logp", lz).exp()
    if reward == "k_sample_bound":   # J = Σ_x (E[log (1/K) Σ_k πθ(y|x⊕z_k)] − β·KL), not a mean of a per-sample R
        kl = (weight * (lz - toy["ref_z"])).view(toy["Q"], toy["S"]).sum(1)
        J = (_expected_k_sample_bound(toy) - beta * kl).mean()
    else:
        J = (weight * (_answer_reward(toy, reward) - beta * (lz - toy["ref_z"]))).view(toy["Q"], toy["S"]).sum(1).mean()
    return _flat(torch.autograd.grad(J, toy["params"], retain_graph=True))


def _estimator_moments(toy, beta, *, lam=1.0, advantages="rloo", kl_in_reward=True, seed=1, scored=None,
                       reward="latro"):
    """Mean and standard error, per parameter, of the gradient estimate −∇loss over M batches.
    Rationales are always sampled from the toy's (tempered) policy; ``scored`` (default: that
    policy) supplies the log π(z|x), log π0(z|x) and ∇log π(z|x) the estimator is given."""
    Q, S = toy["Q"], toy["S"]
    scored = scored or toy
    G, ref_z = scored["G"], scored["ref_z"]
    R = Q * S
    lz_all, ly_all = scored["logp_z"].detach(), toy["logp_y"].detach()
    g = torch.Generator().manual_seed(seed)
    p = toy.get("sample_logp", toy["logp_z"]).detach().double().exp().view(Q, S)     # the sampling distribution
    # sampled rationale rows, (M, Q, K): batch m holds K samples z ~ πθ(·|x_q) for each prompt
    idx = torch.stack([torch.multinomial(p[q], M * K, replacement=True, generator=g).view(M, K) + q * S
                       for q in range(Q)], 1)
    rows = idx.reshape(-1)
    lz = lz_all[rows].clone().requires_grad_(True)
    ly = ly_all[rows].clone().requires_grad_(True)
    info = {k: v[rows] for k, v in toy["info"].items()}
    if advantages == "rloo" and kl_in_reward:    # the library's own update, as the trainer calls it
        loss, _ = micro_batch_loss(lz, ly, ref_z[rows], toy["truncated"][rows], K, beta=beta, lam=lam,
                                   truncation="none", reward=reward, extras=info)
    else:
        spec = REWARDS[reward]
        answer_reward = spec.function(RewardInput(ly.detach(), lam, info))
        r = self_reward(answer_reward.value, lz, ref_z[rows] if kl_in_reward else None, beta)
        if advantages == "rloo":
            adv = rloo_advantages(r.view(M * Q, K)).view(-1)
        else:  # deliberately wrong: baseline includes the sample itself
            rr = r.view(M * Q, K)
            adv = (rr - rr.mean(-1, keepdim=True)).view(-1)
        # all M batches in one call: loss = mean over M of the per-batch losses, so ∂loss_m = M ∂loss
        loss, _ = latro_loss(lz + ly if spec.own_answer else lz, ly, adv, answer_reward.direct_weight)
    dz, dy = torch.autograd.grad(loss, [lz, ly])
    b = torch.arange(M).repeat_interleave(Q * K)
    C = torch.zeros(M, 2 * R, dtype=torch.float64)   # estimate_m = C[m] @ G  (= −∇loss_m)
    C.index_put_((b, rows), -M * dz.double(), accumulate=True)
    C.index_put_((b, rows + R), -M * dy.double(), accumulate=True)
    mean_c = C.mean(0)
    Cc = C - mean_c
    cov = Cc.T @ Cc / (M - 1)
    var = torch.einsum("sp,st,tp->p", G, cov, G).clamp(min=0)
    return mean_c @ G, (var / M).sqrt()


def _check(exact, mean, se):
    """(ok, max z-score, relative error): ok when every component is within Z_TOL·SE + ABS_EPS."""
    diff = (mean - exact).abs()
    ok = bool((diff <= Z_TOL * se + ABS_EPS).all())
    z = (diff / se.clamp(min=1e-12)).max().item()
    return ok, z, ((mean - exact).norm() / exact.norm()).item()


@pytest.mark.parametrize("beta", [0.1, 0.0])
def test_latro_gradient_is_unbiased_by_exact_enumeration(toy, beta):
    exact = _exact_grad(toy, beta)
    assert exact.norm() > 1e-2
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta))
    assert ok, f"estimator mean differs from exact ∇J: max z-score {z:.2f}"
    assert rel < REL_TOL, rel


@pytest.mark.parametrize("reward", ["probability", "verifier", "rlpr", "k_sample_bound"])
def test_each_reward_of_the_family_estimates_the_gradient_of_its_own_objective(toy, own_toy, reward):
    """E_z[R(z)] − β·KL with R = πθ(y|x⊕z) (VeriFree's p_M), a checker's 0/1 on the model's own answer
    (RLVR: E_{z,ŷ}[1[ŷ right]], the score term over z⊕ŷ) or RLPR's debiased mean token probability
    (held fixed): the same sampling, RLOO and loss, only R, the direct term's weight and (the
    verifier) the scored answer differ (objective.REWARDS). And JEPO's K-sample bound
    E[log (1/K) Σ_k πθ(y|x⊕z_k)] − β·KL, not a per-sample R: its share-weighted direct term and VIMCO's
    leave-one-out score term against the exact ∇ over all 40³ triples of rationales."""
    beta = 0.1
    toy = own_toy if REWARDS[reward].own_answer else toy
    exact = _exact_grad(toy, beta, reward)
    assert exact.norm() > 1e-2 and (exact - _exact_grad(toy, beta)).norm() > 0.1 * exact.norm()   # not LaTRO's
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, reward=reward))
    assert ok, f"{reward}: estimator mean differs from exact ∇J: max z-score {z:.2f}"
    assert rel < REL_TOL, rel


def test_the_reward_checks_reject_wrong_variants(toy, own_toy, monkeypatch):
    beta = 0.1
    # the verifier whose score term covers z but not its own answer ŷ: it misses A·∇log πθ(ŷ|x⊕z)
    monkeypatch.setitem(REWARDS, "verifier_z_only", dataclasses.replace(REWARDS["verifier"], own_answer=False))
    ok, z, _ = _check(_exact_grad(own_toy, beta, "verifier"),
                      *_estimator_moments(own_toy, beta, reward="verifier_z_only"))
    assert not ok and z > 10, z
    # the probability reward without its direct term π(y|x⊕z)·∇log π(y|x⊕z) misses part of ∇p_M
    exact = _exact_grad(toy, beta, "probability")
    ok, z, _ = _check(exact, *_estimator_moments(toy, beta, reward="probability", lam=0.0))
    assert not ok and z > 10, z
    # the verifier and RLPR with a baseline that includes the sample itself: the score term shrinks by (K−1)/K
    for reward, t in (("verifier", own_toy), ("rlpr", toy)):
        exact = _exact_grad(t, beta, reward)
        ok, z, _ = _check(exact, *_estimator_moments(t, beta, reward=reward, advantages="mean_all"))
        assert not ok and z > 10, (reward, z)


def test_the_k_sample_bound_lies_between_latros_objective_and_log_p_M_and_rises_with_K(toy):
    """E[log (1/K) Σ_k πθ(y|x⊕z_k)] is LaTRO's E_z[log πθ(y|x⊕z)] at K = 1 and rises with K towards
    log p_M(y|x) = log E_z[πθ(y|x⊕z)] (the IWAE argument), exactly on both prompts of the toy."""
    Q, S = toy["Q"], toy["S"]
    with torch.no_grad():
        exact = dict(toy, logp_z=toy["logp_z"].double(), logp_y=toy["logp_y"].double())     # float64 sums
        p_z, ly = exact["logp_z"].exp().view(Q, S), exact["logp_y"].view(Q, S)
        latro, log_p_m = (p_z * ly).sum(1), (p_z * ly.exp()).sum(1).log()
        bounds = [_expected_k_sample_bound(exact, k) for k in (1, 2, 3)]
    # K = 1 is LaTRO's sum over the same 40 terms (float64, measured equal)
    torch.testing.assert_close(bounds[0], latro, atol=1e-12, rtol=0)
    # each rung above the last: prompt 0's likelihoods barely depend on z (its gaps are ≥ 1.5e-5 nats, far above
    # float64's 1e-15), prompt 1's do (gaps ≥ 0.14 nats)
    for lower, upper in zip(bounds, [*bounds[1:], log_p_m]):
        assert (upper - lower > 1e-9).all() and upper[1] - lower[1] > 0.1, (lower, upper)


def test_the_k_sample_bound_check_rejects_rloo_advantages_and_uniform_direct_weights(toy, monkeypatch):
    """The bound's estimator with LaTRO's pieces in place of its own is rejected against its exact ∇:
    RLOO of log πθ(y|x⊕z) as the score term's advantages (the score term of E_z[log πθ(y|x⊕z)], not of
    the bound), or the direct term without each rationale's share s_k (LaTRO's uniform λ); and with a
    baseline that includes z_k itself (L̂: the score term vanishes)."""
    bound = REWARDS["k_sample_bound"]
    variants = {
        "bound_with_rloo": lambda inp: dataclasses.replace(
            bound.function(inp), advantages=rloo_advantages(inp.logp_y.view(-1, inp.k)).view(-1)),
        "bound_without_shares": lambda inp: dataclasses.replace(bound.function(inp), direct_weight=inp.direct_scale),
        "bound_with_itself_as_baseline": lambda inp: dataclasses.replace(bound.function(inp), advantages=0.0)}
    exact = _exact_grad(toy, 0.1, "k_sample_bound")
    for name, function in variants.items():
        monkeypatch.setitem(REWARDS, name, dataclasses.replace(bound, name=name, function=function))
        ok, z, _ = _check(exact, *_estimator_moments(toy, 0.1, reward=name))
        assert not ok and z > 10, (name, z)


def test_the_information_gain_has_latros_gradient_and_not_that_of_a_differentiated_baseline(toy):
    """R = log πθ(y|x⊕z) − log πθ(y|x) with the baseline held fixed (RLP's no-think baseline): the same for
    a question's K rationales, so RLOO removes it and each batch's loss is LaTRO's (to rounding), the
    estimate unbiased for LaTRO's ∇J. Were log πθ(y|x) differentiated, ∇J would gain −∇log πθ(y|x),
    which this estimator does not estimate."""
    beta = 0.1
    exact = _exact_grad(toy, beta, "information_gain")
    # the same J up to a constant b = log πθ(y|x): its term b·∇Σ_z πθ(z|x) is 0 but for the fp32 log-probabilities'
    # rounding (Σ_z πθ(z|x) = 1 to ~1e-7, b ~ −3): measured ≤ 2.7e-7, against components up to ~1
    torch.testing.assert_close(exact, _exact_grad(toy, beta), atol=1e-6, rtol=0)
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, reward="information_gain"))
    assert ok and rel < REL_TOL, (z, rel)
    differentiated = _exact_grad(toy, beta, "information_gain_differentiated")
    assert (differentiated - exact).norm() > 0.1 * exact.norm()
    ok, z, _ = _check(differentiated, *_estimator_moments(toy, beta, reward="information_gain"))
    assert not ok and z > 10, z
    # one batch of K samples per prompt: the loss is LaTRO's, only the logged reward moves by log πθ(y|x)
    rows = torch.arange(K).repeat(toy["Q"]) + torch.arange(toy["Q"]).repeat_interleave(K) * toy["S"]
    lz, ly = toy["logp_z"][rows].detach(), toy["logp_y"][rows].detach()
    info = {name: v[rows] for name, v in toy["info"].items()}
    losses = {reward: micro_batch_loss(lz, ly, toy["ref_z"][rows], toy["truncated"][rows], K, beta=beta,
                                       truncation="none", reward=reward, extras=info) for reward in ("latro", "information_gain")}
    # default fp32 tolerances: the toy's fp32 log-probabilities, centred in another order by RLOO, an ulp apart
    # (measured 2.4e-7 on a loss of 3.0); a term left over from the baseline would be of its size, ~3
    torch.testing.assert_close(losses["information_gain"][0], losses["latro"][0])
    torch.testing.assert_close(losses["information_gain"][1]["reward"],
                               losses["latro"][1]["reward"] - info["answer_logp_without_z"])


def test_a_reward_registered_outside_latro_core_is_checked_exact_with_nothing_else_changed(toy, request):
    """A reward is one record (objective.REWARDS): tests/toy_reward.py adds φ = √, R = √πθ(y|x⊕z),
    from outside the library; the estimator built from that record alone has the mean ∇J of
    E_z[√πθ(y|x⊕z)] − β·KL, and without its direct term it has not."""
    sys.modules.pop("toy_reward", None)
    request.addfinalizer(lambda: REWARDS.pop("sqrt_probability", None))     # the other tests see four rewards
    import toy_reward                                                       # importing it registers it

    assert REWARDS["sqrt_probability"] is toy_reward.SQRT_PROBABILITY
    beta = 0.1
    exact = _exact_grad(toy, beta, "sqrt_probability")
    assert exact.norm() > 1e-2 and (exact - _exact_grad(toy, beta, "probability")).norm() > 0.1 * exact.norm()
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, reward="sqrt_probability"))
    assert ok and rel < REL_TOL, (z, rel)
    ok, z, _ = _check(exact, *_estimator_moments(toy, beta, reward="sqrt_probability", lam=0.0))
    assert not ok and z > 10, z


def test_exactness_check_rejects_wrong_estimators(toy):
    beta = 0.1
    exact = _exact_grad(toy, beta)
    # (a) baseline includes the sample itself: score term scaled by (K−1)/K
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, advantages="mean_all"))
    assert not ok and z > 10, z
    # (b) λ = 0: the answer term ∇log πθ(y|x⊕z) is dropped
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, lam=0.0))
    assert not ok and z > 10, z
    # (c) KL term left out of the reward although J has β > 0
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, kl_in_reward=False))
    assert not ok and z > 10, z
    # and the exact gradient itself depends on β (the KL term is not negligible here)
    assert (exact - _exact_grad(toy, 0.0)).norm() > 0.05 * exact.norm()


@pytest.mark.parametrize("beta", [0.1, 0.0])
def test_scoring_tempered_samples_untempered_is_biased(beta):
    # z ~ π_T with T = 0.7, but log πθ(z|x) (and log π0) scored at T = 1: the score function is then
    # that of another distribution, and the estimate misses ∇J of the tempered objective
    toy = _toy(0.7)
    exact = _exact_grad(toy, beta)
    ok, z, rel = _check(exact, *_estimator_moments(toy, beta, scored=toy["plain"]))
    assert not ok and z > 10, z
