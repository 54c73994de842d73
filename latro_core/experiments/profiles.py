"""Every notebook's parameters, per profile, in one place.

A notebook's parameters cell names a profile (``profile = "smoke"``; papermill: ``-p profile demo``)
and optional ``overrides``, and its next cell reads ``notebook_settings("<notebook>", profile, overrides)``:

- ``smoke``  each notebook in about a minute on a CPU: a couple of steps, a handful of questions,
  a few tokens. Checks that everything runs, says nothing about accuracy (tests, CI).
- ``demo``   the CPU reproduction with the embedded SmolLM2-135M-Instruct: LaTRO, RFT and SFT on the
  generated arithmetic task (3 training seeds each), small GSM8K / ARC-Challenge evaluations.
  Target: about 60 min on 2 cores; measured: 57 min from a clean clone, notebook 04 39 min of it (README).
- ``gpu``    one 16-24 GB GPU (Colab's T4 or L4): Qwen2.5-0.5B-Instruct from the hub on GSM8K with
  LoRA, K = 8, L = 256, Base / SFT / RFT / LaTRO (notebook 04), sized by estimate for about 1-2 h;
  no GPU has run it yet (README "Paper scale"). Its smoke form, ``gpu-smoke``, runs on a CPU.
- ``paper``  the paper's settings (arXiv 2411.04282, Section 5): Phi-3.5-mini, Mistral-7B and
  Llama-3.1-8B, K = 16, L = 500, T = 1, lr 5e-7, beta 0.05 (GSM8K) / 0.25 (ARC), 6 / 12 epochs,
  trained through ``accelerate launch`` on GPUs (``latro reproduce`` refuses it without one).

The demo's training recipe was measured (results/latro_recipe.md); its sizes are set by the ~60 min
budget, not by accuracy saturating. Values marked ``ASSUMED`` are paper settings we could not pin
down from the paper text and chose ourselves. Change a number here, not in a notebook.

The dictionaries use the field names of :class:`~latro_core.train_config.TrainConfig` (``train``,
``sft``, ``latro``, ``short``) and :class:`~latro_core.evaluate.EvalConfig` (``eval`` and friends),
so a notebook can pass them straight through: ``TrainConfig(**S["latro"], seed=s, out_dir=...)``.
"""

from __future__ import annotations

import copy
import math
import time

from ..errors import ConfigError
from ..provenance import git_commit

PROFILES: tuple[str, ...] = ("smoke", "demo", "long", "gpu", "paper")
GPU_PROFILES: tuple[str, ...] = ("gpu", "paper")     # latro reproduce refuses these without a CUDA GPU
SMOKE_SUFFIX = "-smoke"      # "<profile>-smoke": that profile's settings with every size cut to smoke's
NOTEBOOKS: tuple[str, ...] = ("01_variational_bound", "02_rloo_estimator", "03_self_rewarding",
                              "04_train_latro", "05_arc_challenge", "06_ablations", "07_after_latro")

# ----------------------------------------------------------------------------- paper constants

PAPER_MODELS: tuple[str, ...] = ("microsoft/Phi-3.5-mini-instruct", "mistralai/Mistral-7B-Instruct-v0.3",
                                 "meta-llama/Llama-3.1-8B-Instruct")
GSM8K_TRAIN_SIZE, GSM8K_TEST_SIZE = 7473, 1319
ARC_TRAIN_SIZE, ARC_TEST_SIZE = 1119, 1172
# questions per optimizer step. The paper (Section 5.1) states "an effective batch size of 48": 3 questions
# x K = 16 rationales per update. The released GSM8K script (scripts/training.sh of SalesforceAIResearch/LaTRO)
# takes per_device_train_batch_size 4 x gradient_accumulation_steps 12 / rloo_k 16 = 3 questions per
# process and launches configs/8gpu.yaml: 24 if that is 8 processes (ASSUMED: the yaml was not read).
# The `paper` profile follows the released code (24), not the text's 3: 8x fewer steps per epoch.
PAPER_BATCH = 24
PAPER_EPOCHS = {"gsm8k": 6,            # the released GSM8K script's NUM_EPOCHS
                "arc_challenge": 12}    # ASSUMED: the released ARC-Challenge SFT baseline's epochs (no ARC LaTRO script)
ACCELERATE_CONFIG = "configs/accelerate_fsdp.yaml"


def paper_steps(train_size: int, epochs: int, batch: int = PAPER_BATCH) -> int:
    """Optimizer steps for ``epochs`` passes over ``train_size`` questions, ``batch`` per step:
    ceil(train_size / batch) * epochs."""
    if min(train_size, epochs, batch) < 1:
        raise ConfigError(f"need train_size, epochs, batch >= 1, got {train_size}, {epochs}, {batch}")
    return math.ceil(train_size / batch) * epochs


def _paper_train(task: str, beta: float, train_size: int) -> dict:
    return dict(task=task, steps=paper_steps(train_size, PAPER_EPOCHS[task]), questions_per_step=PAPER_BATCH,
                k=16, max_new_tokens=500, temperature=1.0, beta=beta, lr=5e-7, micro_batch=16,
                # fp32 master weights, bf16 compute from the accelerate config: AdamW steps of 5e-7
                # vanish below bf16 resolution if the weights themselves are bf16
                dtype="fp32",
                save_every=100, eval_every=paper_steps(train_size, 1), eval_limit=2000)   # eval_limit 2000: the whole split


_PAPER_LAUNCH = dict(launch="accelerate", accelerate_config=ACCELERATE_CONFIG)

# ----------------------------------------------------------------------------- one GPU

# Qwen2.5-0.5B-Instruct: an instruct model with a chat template that writes step-by-step GSM8K
# solutions, small enough for fp32 weights + LoRA on a 16 GB T4 (2 GB of weights; the T4 has no
# fast bf16, so fp32 runs on every card; add mixed_precision="bf16" on an L4/A100). SmolLM2-360M is
# smaller but, like the 135M demo model, far weaker at multi-step arithmetic; 1.7B-class models
# leave less room for K x L activations on 16 GB. Sizes: ~1,600 training questions (200 steps x 8)
# at K = 8, L = 256, then greedy accuracy on 500 test questions and maj@8 for Base and LaTRO:
# about 1-2 h by a rough estimate, not yet measured on a GPU (scripts/tools/gpu_check.sh measures the
# decode and update rates that would settle it).
GPU_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
GPU_LATRO = dict(task="gsm8k", lora=True, lr=1e-4,   # ASSUMED: a usual LoRA lr (the 135M sweep's LoRA run used 1e-3)
                 steps=200, questions_per_step=8, k=8, max_new_tokens=256, temperature=1.0, beta=0.05,
                 truncation="batch_mean", micro_batch=16, save_every=50,
                 eval_every=0, eval_split="test", eval_limit=100)   # no selection: the final model (GSM8K has no validation split)
GPU_SFT = dict(task="gsm8k", lora=True, lr=1e-4, steps=200, questions_per_step=8, max_new_tokens=256,
               micro_batch=8, save_every=50, eval_every=0, eval_split="test", eval_limit=100)
GPU_RFT = dict(GPU_LATRO)   # the LaTRO sampler and schedule
GPU_RFT.pop("beta"), GPU_RFT.pop("truncation")
GPU_EVAL = dict(task="gsm8k", split="test", limit=500, max_new_tokens=288, k=8, batch_questions=50, auroc=False)
_GPU_RUN = dict(launch="inline", parallel=1, keep_resume_state=True, test_limit=0, test_max_new_tokens=288)

# ----------------------------------------------------------------------------- demo training

# The one LaTRO recipe of the CPU demo; notebooks 04 and 06 share it (06 trains its short-L model
# with the same recipe and L = short_L). Chosen from measurements: the base model's self-reward
# signal (results/self_reward_signal.md: at T = 0.5, 25% of questions have a right and finished
# sample among 8 at L = 64, against 9% at T = 1) and the recipe sweep (results/latro_recipe.md,
# greedy validation accuracy, n = 200, base 16.5%: lr 2e-5 at T = 0.7 reached 50.0% by step 6, at
# T = 0.5 37.5%, at T = 1 (lr 5e-5) 12.5%; lr 5e-5 and 1e-4 at T = 0.5 collapsed the rationales to
# a restated number or nothing). Half that learning rate did better on three seeds
# (results/latro_recipe_seeds.md: lr 1e-5 49.7% against lr 2e-5 41.7%, paired +8.0 points [+3.8, +12.2]),
# so the demo uses lr 1e-5. Only LaTRO's learning rate was swept: SFT and RFT keep lr 2e-5.
DEMO_LATRO = dict(task="arithmetic", steps=12, questions_per_step=2, k=8,
                  max_new_tokens=64,                 # L: 86% of the base model's T=0.5 samples are cut at 64
                  lr=1e-5, beta=0.05, truncation="batch_mean", temperature=0.7, micro_batch=16, save_every=10_000,
                  eval_every=6, eval_split="validation",
                  eval_limit=100)                    # selection only; 100 halves its cost (the sweep used 200)
DEMO_SFT = dict(task="arithmetic", steps=16, questions_per_step=4, lr=2e-5,
                max_new_tokens=64,                   # only sets the validation budget (L + 32), as for LaTRO
                micro_batch=4, save_every=10_000, eval_every=8, eval_split="validation", eval_limit=100)
DEMO_RFT = dict(task="arithmetic", steps=12,
                questions_per_step=2, k=8,           # the LaTRO sampler's batch: the same sampling budget
                max_new_tokens=64, temperature=0.7,  # L and T, as LaTRO
                lr=2e-5, micro_batch=16, save_every=10_000, eval_every=6, eval_split="validation", eval_limit=100)
DEMO_SEEDS = [0, 1, 2]

# ----------------------------------------------------------------------------- the table

_SETTINGS: dict[str, dict[str, dict]] = {
    # ---- 01-03: the knobs each notebook unpacks from notebook_settings (tune them here) -----------
    "01_variational_bound": {
        "smoke": dict(seed=0, n_votes=1000, ks=[1, 2, 4, 8, 16, 32, 64], n_marginal=20_000, n_path=21),
        "demo": dict(seed=0, n_votes=10_000, ks=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128],
                     n_marginal=200_000, n_path=51),
        "paper": dict(seed=0, n_votes=10_000, ks=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128],
                      n_marginal=200_000, n_path=51),
    },
    "02_rloo_estimator": {
        "smoke": dict(seed=0, beta=0.1, n_batches=4000, ks=[2, 4, 8, 16, 32], model=None, task="arithmetic",
                      n_questions=2, k=4, max_new_tokens=32, temperature=1.0, repeats=1, backward="last_block",
                      dtype="fp32", device="auto"),
        "demo": dict(seed=0, beta=0.1, n_batches=20_000, ks=[2, 4, 8, 16, 32], model=None, task="arithmetic",
                     n_questions=3, k=8, max_new_tokens=96, temperature=1.0, repeats=2, backward="all",
                     dtype="fp32", device="auto"),
        "paper": dict(seed=0, beta=0.05, n_batches=20_000, ks=[2, 4, 8, 16, 32], model=PAPER_MODELS[0],
                      task="gsm8k", n_questions=8, k=16, max_new_tokens=500, temperature=1.0, repeats=4,
                      backward="last_block", dtype="bf16", device="auto"),
    },
    "03_self_rewarding": {
        "smoke": dict(model=None, task="arithmetic", limit=6, k=4, max_new_tokens=48, temperature=1.0, seed=0,
                      n_boot=500, n_cases=2, dtype="fp32", device="auto",
                      signal=dict(limit=3, k=2, temperatures="1.0,0.5", budgets="8,16", greedy_limit=2, n_boot=100)),
        # the live demo samples where the base model's signal shows (results/self_reward_signal.md: at T = 0.5,
        # L = 96, 37.5% of arithmetic questions have a right and finished sample among 8); GSM8K at 135M has
        # few right rationales at any setting, so the demo leaves it out ({"task": "gsm8k"} adds it back)
        "demo": dict(model=None, task="arithmetic", limit=24, k=8, max_new_tokens=96, temperature=0.5,
                     seed=0, n_boot=2000, n_cases=3, dtype="fp32", device="auto",
                     signal="results"),             # the committed study: ~1 h of CPU (results/self_reward_signal.md)
        "paper": dict(model=PAPER_MODELS[0], task="gsm8k", limit=None, k=8, max_new_tokens=500,
                      temperature=1.0, seed=0, n_boot=2000, n_cases=3, dtype="bf16", device="auto",
                      signal=dict(model=PAPER_MODELS[0], task="gsm8k", limit=200, k=8, temperatures="1.0,0.7",
                                  budgets="200,500", greedy_limit=0, dtype="bf16")),
    },
    # ---- 04: LaTRO vs SFT vs base (the paper's Table 2, GSM8K column) -----------------------
    # run: options of runs.train_run. test_limit / test_max_new_tokens: also log greedy test
    # accuracy at every evaluation (the first test_limit of the table's questions, same L), only to
    # report the paper's selection rule next to ours (validation). seeds: the training seeds of
    # every method, unless seeds_by_method names others. maj_methods / maj_seeds: the models that
    # also get the maj@k sampling pass (the base model when "base" is listed, and the runs of
    # maj_seeds of the listed methods); the others are evaluated greedily only. inline_steps: the
    # LaTRO steps the notebook takes on the page (Trainer.take_step) before the full runs.
    # unseen_limit: every model also answers that many questions of the arithmetic task's unseen-
    # numbers split greedily (0: off; GSM8K has no such split).
    "04_train_latro": {
        "smoke": dict(
            models=[None], seeds=[0],
            latro=dict(task="arithmetic", steps=2, questions_per_step=2, k=2, max_new_tokens=16, lr=1e-5,
                       micro_batch=4, save_every=10_000, eval_every=2, eval_split="validation", eval_limit=2),
            sft=dict(task="arithmetic", steps=2, questions_per_step=2, lr=1e-5, max_new_tokens=16, micro_batch=2,
                     save_every=10_000, eval_every=2, eval_split="validation", eval_limit=2),
            rft=dict(task="arithmetic", steps=2, questions_per_step=2, k=2, lr=1e-5, max_new_tokens=16, micro_batch=4,
                     save_every=10_000, eval_every=2, eval_split="validation", eval_limit=2),
            eval=dict(task="arithmetic", split="test", limit=4, max_new_tokens=24, k=2, batch_questions=4,
                      auroc=False),
            seeds_by_method={}, maj_methods=["base", "sft", "rft", "latro"], maj_seeds=[0], inline_steps=2,
            unseen_limit=2,
            run=dict(launch="inline", keep_resume_state=False, test_limit=2, test_max_new_tokens=24)),
        "demo": dict(
            models=[None], seeds=DEMO_SEEDS,
            latro=DEMO_LATRO, sft=DEMO_SFT, rft=DEMO_RFT,
            # greedy on 200 test questions for every model; no maj@8 pass here (8x the generation;
            # notebook 06 draws maj@k for Base and LaTRO)
            seeds_by_method={},
            eval=dict(task="arithmetic", split="test", limit=200, max_new_tokens=96, k=8, batch_questions=50,
                      auroc=False),
            maj_methods=[], maj_seeds=[0], inline_steps=4,
            unseen_limit=100,      # every model also on 100 questions of the unseen-numbers split (greedy)
            # two one-thread training processes at a time (results/latro_step_throughput.md)
            run=dict(launch="inline", parallel=2, keep_resume_state=False, test_limit=0, test_max_new_tokens=96)),
        "paper": dict(
            models=list(PAPER_MODELS), seeds=[0],
            # GSM8K has no validation split, so the per-epoch evaluation is on test: the paper's rule
            latro=dict(_paper_train("gsm8k", 0.05, GSM8K_TRAIN_SIZE), eval_split="test"),
            sft=dict(_paper_train("gsm8k", 0.05, GSM8K_TRAIN_SIZE), eval_split="test"),  # ASSUMED: SFT lr/epochs = LaTRO's
            rft=dict(_paper_train("gsm8k", 0.05, GSM8K_TRAIN_SIZE), eval_split="test"),  # ASSUMED: RFT = LaTRO's sampler and schedule
            eval=dict(task="gsm8k", split="test", limit=None, max_new_tokens=500, k=8, batch_questions=16,
                      dtype="bf16", auroc=False),
            seeds_by_method={}, maj_methods=["base", "sft", "rft", "latro"], maj_seeds=[0], inline_steps=1,
            unseen_limit=0, run=dict(_PAPER_LAUNCH)),
    },
    # ---- 05: ARC-Challenge (CoT for base/LaTRO, direct answers for SFT) --------------------
    "05_arc_challenge": {
        "smoke": dict(
            models=[None], seeds=[0],
            eval=dict(task="arc_challenge", split="test", limit=2, max_new_tokens=16, k=2, batch_questions=2,
                      auroc=False),
            direct_max_new_tokens=12,
            sft=dict(task="arc_challenge", steps=2, questions_per_step=2, lr=1e-5, max_new_tokens=8, micro_batch=2,
                     train_limit=8, save_every=10_000, eval_every=2, eval_split="validation", eval_limit=2),
            latro=dict(task="arc_challenge", steps=1, questions_per_step=2, k=2, max_new_tokens=16, lr=1e-5,
                       beta=0.25, micro_batch=4, train_limit=8, save_every=10_000, eval_every=1,
                       eval_split="validation", eval_limit=2),
            run=dict(launch="inline", keep_resume_state=False)),
        "demo": dict(
            models=[None], seeds=[0],
            eval=dict(task="arc_challenge", split="test", limit=50, max_new_tokens=96, k=0, batch_questions=25),
            direct_max_new_tokens=24,
            sft=dict(task="arc_challenge", steps=12, questions_per_step=4, lr=1e-5, max_new_tokens=8, micro_batch=4,
                     train_limit=200, save_every=10_000, eval_every=6, eval_split="validation", eval_limit=30),
            # a short LaTRO run (steps=0 leaves LaTRO out when the budget is short)
            latro=dict(task="arc_challenge", steps=5, questions_per_step=2, k=4, max_new_tokens=64, lr=1e-5,
                       beta=0.25, micro_batch=8, train_limit=200, save_every=10_000, eval_every=5,
                       eval_split="validation", eval_limit=20),
            run=dict(launch="inline", keep_resume_state=False)),
        "paper": dict(
            models=list(PAPER_MODELS), seeds=[0],
            eval=dict(task="arc_challenge", split="test", limit=None, max_new_tokens=500, k=8, batch_questions=16,
                      dtype="bf16", auroc=False),
            direct_max_new_tokens=32,
            sft=dict(_paper_train("arc_challenge", 0.25, ARC_TRAIN_SIZE), eval_split="validation"),  # ASSUMED
            latro=dict(_paper_train("arc_challenge", 0.25, ARC_TRAIN_SIZE), eval_split="validation"),
            run=dict(_PAPER_LAUNCH)),
    },
    # ---- 06: Figure 3a (accuracy vs inference L) and 3b (maj@k) --------------------------------
    # latro: the recipe of notebook 04 (trained here only when 04's seed-0 run is missing); the
    # short-L model is trained here with the same recipe and max_new_tokens = short_L.
    "06_ablations": {
        "smoke": dict(
            model=None, L_values=[8, 16], short_L=8,
            latro=dict(task="arithmetic", steps=1, questions_per_step=2, k=2, max_new_tokens=16, lr=1e-5,
                       micro_batch=4, save_every=10_000),
            eval=dict(task="arithmetic", split="test", limit=4, batch_questions=4),
            maj=dict(k=4, limit=2, max_new_tokens=16),
            run=dict(launch="inline", keep_resume_state=False)),
        "demo": dict(
            model=None, L_values=[16, 32, 64, 96],
            short_L=32,                                 # the LaTRO-200 analogue: half the demo's L=64
            latro=DEMO_LATRO,
            eval=dict(task="arithmetic", split="test", limit=32, batch_questions=32),
            maj=dict(k=8, limit=25, max_new_tokens=96),    # one sampling pass: maj@1,2,...,8
            run=dict(launch="inline", keep_resume_state=False)),
        "paper": dict(
            model=PAPER_MODELS[0], L_values=[100, 200, 300, 400, 500], short_L=200,
            latro=dict(_paper_train("gsm8k", 0.05, GSM8K_TRAIN_SIZE), eval_split="test"),
            eval=dict(task="gsm8k", split="test", limit=None, batch_questions=16, dtype="bf16"),
            maj=dict(k=32, limit=None, max_new_tokens=500),
            run=dict(_PAPER_LAUNCH)),
    },
}


# ---- 07: the reward family on the toy and on a few real questions (no training here) ------------
_SETTINGS["07_after_latro"] = {
    "smoke": dict(seed=0, beta=0.1, n_batches=2000, ks=[2, 4, 8], model=None, task="arithmetic", n_questions=1,
                  k=4, max_new_tokens=32, temperature=1.0, dtype="fp32", device="auto"),
    "demo": dict(seed=0, beta=0.1, n_batches=20_000, ks=[2, 4, 8, 16, 32], model=None, task="arithmetic",
                 n_questions=3, k=6, max_new_tokens=64, temperature=1.0, dtype="fp32", device="auto"),
    "paper": dict(seed=0, beta=0.05, n_batches=20_000, ks=[2, 4, 8, 16, 32], model=PAPER_MODELS[0], task="gsm8k",
                  n_questions=3, k=8, max_new_tokens=500, temperature=1.0, dtype="bf16", device="auto"),
}

_GPU: dict[str, dict] = {
    "01_variational_bound": _SETTINGS["01_variational_bound"]["demo"],          # exact toys: no GPU needed
    "02_rloo_estimator": dict(_SETTINGS["02_rloo_estimator"]["demo"], model=GPU_MODEL, task="gsm8k", n_questions=4,
                              k=8, max_new_tokens=256),
    "03_self_rewarding": dict(model=GPU_MODEL, task="gsm8k", limit=50, k=8, max_new_tokens=256, temperature=1.0, seed=0,
                              n_boot=2000, n_cases=3, dtype="fp32", device="auto",
                              signal=dict(model=GPU_MODEL, task="gsm8k", limit=100, k=8, temperatures="1.0,0.7",
                                          budgets="128,256", greedy_limit=0)),
    "04_train_latro": dict(models=[GPU_MODEL], seeds=[0], latro=GPU_LATRO, sft=GPU_SFT, rft=GPU_RFT, eval=GPU_EVAL,
                           seeds_by_method={}, maj_methods=["base", "latro"], maj_seeds=[0], inline_steps=2,
                           unseen_limit=0, run=_GPU_RUN),
    "05_arc_challenge": dict(
        models=[GPU_MODEL], seeds=[0],
        eval=dict(task="arc_challenge", split="test", limit=300, max_new_tokens=288, k=0, batch_questions=50),
        direct_max_new_tokens=32,
        sft=dict(task="arc_challenge", lora=True, lr=1e-4, steps=100, questions_per_step=8, max_new_tokens=16,
                 micro_batch=8, save_every=50, eval_every=50, eval_split="validation", eval_limit=100),
        latro=dict(task="arc_challenge", lora=True, lr=1e-4, steps=100, questions_per_step=8, k=8, max_new_tokens=256,
                   beta=0.25, micro_batch=16, save_every=50, eval_every=50, eval_split="validation", eval_limit=100),
        run=_GPU_RUN),
    "07_after_latro": dict(_SETTINGS["07_after_latro"]["demo"], model=GPU_MODEL, task="gsm8k", k=8,
                           max_new_tokens=256),
    "06_ablations": dict(model=GPU_MODEL, L_values=[64, 128, 192, 256], short_L=128, latro=GPU_LATRO,
                         eval=dict(task="gsm8k", split="test", limit=200, batch_questions=50),
                         maj=dict(k=8, limit=100, max_new_tokens=288), run=_GPU_RUN),
}
for _name, _chosen in _GPU.items():
    _SETTINGS[_name]["gpu"] = _chosen

# ---- long: the demo, except where its sizes are too small to read, at more CPU time than the demo's
# hour (`latro reproduce --profile long --notebooks 05`): ARC-Challenge on 200 test questions, not 50
_LONG = {"05_arc_challenge": dict(eval=dict(_SETTINGS["05_arc_challenge"]["demo"]["eval"], limit=200))}
for _name in NOTEBOOKS:
    _SETTINGS[_name]["long"] = copy.deepcopy({**_SETTINGS[_name]["demo"], **_LONG.get(_name, {})})

# the settings that are sizes (steps, questions, tokens, samples, seeds): what a profile's smoke form cuts
_SIZES = {"steps", "questions_per_step", "k", "max_new_tokens", "micro_batch", "eval_limit", "train_limit",
          "eval_every", "save_every", "limit", "batch_questions", "n_votes", "ks", "n_marginal", "n_path", "n_batches",
          "n_questions", "repeats", "n_boot", "n_cases", "greedy_limit", "budgets", "temperatures", "L_values",
          "short_L", "seeds", "maj_seeds", "inline_steps", "unseen_limit", "direct_max_new_tokens", "test_limit", "test_max_new_tokens"}


_OFF_WHEN_ZERO = ("eval_every", "unseen_limit")   # sizes whose 0 means "off": a smoke form keeps it off


def smoke_form(chosen: dict, smoke: dict) -> dict:
    """``chosen`` (a profile's settings) with every size (:data:`_SIZES`) taken from ``smoke`` (the
    smoke profile's settings at the same place), nested entries alike; everything else (model, task,
    LoRA, β, precision, launch) stays. An evaluation that ``chosen`` switches off (``eval_every`` or
    ``unseen_limit`` 0) stays off."""
    out = {}
    for key, value in chosen.items():
        small = smoke.get(key)
        if isinstance(value, dict) and isinstance(small, dict):
            out[key] = smoke_form(value, small)
        elif key in _SIZES and key in smoke and not (key in _OFF_WHEN_ZERO and not value):
            out[key] = copy.deepcopy(small)
        else:
            out[key] = value
    if "steps" in chosen:      # a training entry: also the sizes it leaves at their defaults (train_limit, ...)
        out.update({k: v for k, v in smoke.items() if k in _SIZES and k not in out and k != "eval_every"})
    return out


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES` or such a name + ``"-smoke"``, else :class:`ConfigError`."""
    base = profile[:-len(SMOKE_SUFFIX)] if profile.endswith(SMOKE_SUFFIX) else profile
    if base not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)} "
                          f"(or one of them + {SMOKE_SUFFIX!r}: its settings at smoke sizes).")
    return profile


def notebook_name(notebook: str) -> str:
    """``"notebooks/04_train_latro.ipynb"``, ``"04_train_latro.py"`` -> ``"04_train_latro"``."""
    name = str(notebook).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".ipynb", ".py"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


# which dataclass each nested settings entry fills (its keys must be that class's fields; an entry
# named after a registered method fills TrainConfig); "run": the options of runs.train_run / train_all
_TYPED = {"eval": "EvalConfig", "signal": "SignalConfig"}
_RUN_OPTIONS = {"launch", "parallel", "keep_resume_state", "test_limit", "test_max_new_tokens", "accelerate_config",
                "num_processes"}


def check_settings(chosen: dict, where: str = "") -> dict:
    """``chosen`` if every nested entry's keys are fields of the dataclass it fills (a method's name,
    ``latro``/``sft``/``rft``: TrainConfig, ``eval``: EvalConfig, ``signal``: SignalConfig, ``run``: train_run's options),
    else ConfigError naming the misspelt key: a typo fails when the notebook starts, not 30 min in."""
    import dataclasses

    from ..evaluate import EvalConfig
    from ..methods import METHODS
    from ..train_config import TrainConfig
    from .reward_signal import SignalConfig

    classes = {"TrainConfig": TrainConfig, "EvalConfig": EvalConfig, "SignalConfig": SignalConfig}
    typed = {**{m: "TrainConfig" for m in METHODS}, **_TYPED}
    for key, value in chosen.items():
        if not isinstance(value, dict):
            continue
        if key in typed:
            allowed = {f.name for f in dataclasses.fields(classes[typed[key]])}
        elif key == "run":
            allowed = _RUN_OPTIONS
        else:
            continue
        if unknown := sorted(set(value) - allowed):
            raise ConfigError(f"settings{' of ' + where if where else ''}: {key}={{{', '.join(unknown)}: ...}} "
                              f"{'is' if len(unknown) == 1 else 'are'} not among the fields of "
                              f"{typed.get(key, 'train_run')}; see latro_core/experiments/profiles.py")
    return chosen


def settings(notebook: str, profile: str) -> dict:
    """The parameters of ``notebook`` (e.g. ``"04_train_latro"``) under ``profile`` (a fresh copy,
    with ``"profile"`` and ``"notebook"`` added). Unknown profile or notebook: :class:`ConfigError`."""
    check_profile(profile)
    name = notebook_name(notebook)
    if name not in _SETTINGS:
        raise ConfigError(f"no settings for notebook {notebook!r}; known: {', '.join(_SETTINGS)}.")
    base = profile[:-len(SMOKE_SUFFIX)] if profile.endswith(SMOKE_SUFFIX) else profile
    chosen = copy.deepcopy(_SETTINGS[name][base])
    if base != profile:
        chosen = smoke_form(chosen, _SETTINGS[name]["smoke"])
    chosen = check_settings(chosen, f"{name} ({profile})")
    return {**chosen, "profile": profile, "notebook": name}


def table(profile: str) -> dict[str, dict]:
    """{notebook: settings} for every notebook under ``profile``."""
    return {nb: settings(nb, profile) for nb in _SETTINGS}


def _same_kind(held, given) -> bool:
    """Whether an override ``given`` may replace the profile's ``held``: the same kind of value (an int
    for a float, None where None is held, either way, also count)."""
    if held is None or given is None:
        return True
    if isinstance(held, bool) or isinstance(given, bool):
        return isinstance(held, bool) and isinstance(given, bool)
    if isinstance(held, (int, float)) and isinstance(given, (int, float)):
        return True
    return isinstance(given, type(held)) or isinstance(held, type(given))


def notebook_settings(notebook: str, profile: str, overrides: dict | None = None) -> dict:
    """What every notebook's second cell calls: ``settings(notebook, profile)`` with ``overrides``
    (the notebook's parameter, e.g. ``{"seeds": [0]}``) put over its top-level entries. An override
    the notebook has no setting for is a ConfigError naming the ones it has."""
    chosen = settings(notebook, profile)
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a dict of settings, e.g. {{\"seeds\": [0]}}; got a "
                          f"{type(overrides).__name__}: {overrides!r}")
    for key, value in (overrides or {}).items():      # a value of the kind the profile holds there
        if key in chosen and not _same_kind(chosen[key], value):
            raise ConfigError(f"overrides: {key}={value!r} is a {type(value).__name__} where {chosen['notebook']} "
                              f"holds a {type(chosen[key]).__name__} ({key}={chosen[key]!r}); give one of that kind")
    unknown = sorted(set(overrides or {}) - set(chosen) - {"profile", "notebook"})
    if unknown:
        known = ", ".join(k for k in chosen if k not in ("profile", "notebook"))
        raise ConfigError(f"overrides {unknown} are not settings of {chosen['notebook']}; it has: {known}")
    chosen = check_settings({**chosen, **(overrides or {})}, f"{chosen['notebook']} ({profile})")
    # the visible line every notebook's outputs open with: which settings and which code made them
    commit = git_commit()
    print(f"{chosen['notebook']}: profile {profile!r}, latro at commit {commit[:12] if commit else 'unknown'}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    return chosen
