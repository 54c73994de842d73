"""The configuration of a training run (:class:`TrainConfig`): every setting of ``latro train|sft|rft``,
a notebook's papermill parameters and a study's cells, with the checks that refuse settings that
cannot work before anything is loaded (:meth:`TrainConfig.validate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .errors import ConfigError
from .methods.registry import get_method
from .objective import TRUNCATION_RULES, get_reward
from .rollout import DECODERS, SAMPLERS


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults: a CPU-sized LaTRO run of the embedded model."""

    method: str = "latro"              # a registered method (methods.METHODS): latro | sft | rft
    model: str | None = None           # hub id, folder, .gguf, or None for the embedded SmolLM2-135M
    reference_model: str | None = None  # π0, the KL anchor: None = the starting model (the paper); a hub id,
                                       # folder or "embedded" anchors elsewhere (e.g. the base model under a trained --model)
    task: str = "arithmetic"           # arithmetic | gsm8k | arc_challenge
    split: str = "train"
    data_dir: str | None = None        # GSM8K/ARC JSONL folder; None: $LATRO_DATA_DIR, else the hub
    train_limit: int | None = None     # use only the first n (shuffled) training questions
    out_dir: str = "runs/latro"        # metrics.jsonl, checkpoint/, final/
    steps: int = 100                   # optimizer steps
    questions_per_step: int = 4        # global batch of questions per optimizer step
    k: int = 4                         # rationales per question (paper: 16)
    max_new_tokens: int = 96           # L, rationale budget (paper: 500)
    temperature: float = 1.0           # T (paper: 1); LaTRO scores z under the same tempered policy
    top_k: int | None = None           # off by default: pure sampling, as the paper
    top_p: float | None = None
    sampler: str = "inverse_cdf"       # how a token is drawn from softmax(logits / T): inverse_cdf (one uniform
                                       # per row) | multinomial (the sampler before it; the same distribution)
    decoder: str = "auto"              # whose decode step samples: auto (latro's own for the Llama family, else
                                       # transformers') | latro | transformers; samples.jsonl records which ran
    beta: float = 0.05                 # KL weight β (paper: 0.05 GSM8K, 0.25 ARC)
    lam: float = 1.0                   # λ on Σ∇log π(y|x⊕z) (Eq. 4: 1; released code: 0)
    reward: str = "latro"              # LaTRO's step with another reward R (objective.REWARDS): latro (log π(y|x⊕z)),
                                       # probability (π(y|x⊕z), VeriFree), verifier (checked answer right: 1, else 0),
                                       # rlpr (debiased mean token probability of y, RLPR)
    truncation: str = "batch_mean"     # penalty for rationales cut at L: batch_mean | constant | none
    gamma: float = 2.0                 # batch_mean: r = γ·mean(r); constant: r = γ
    lr: float = 1e-5                   # AdamW; paper 5e-7 is for 7-8B models; 135M: results/latro_recipe.md
    weight_decay: float = 0.0
    warmup_steps: int = 0              # linear warm-up, then linear decay to 0 (paper: none)
    micro_batch: int = 16              # samples per forward/backward (a multiple of k)
    grad_clip: float | None = 1.0      # max gradient norm (None: off)
    dtype: str = "fp32"                # fp32 measured fastest on CPUs without AMX (results/precision.md)
    mixed_precision: str = ""          # "bf16": compute in bf16 autocast on fp32 weights (GPUs; also without
                                       # accelerate launch); "no": off; "": the accelerate config's, else off
    device: str = "auto"               # auto | cpu | cuda (accelerate decides under accelerate launch)
    lora: bool = False                 # train a LoRA adapter; π0 = the same weights, adapter off
    lora_r: int = 16
    lora_alpha: int = 32
    gradient_checkpointing: bool = False   # recompute decoder layers in backward: ~0.5x peak memory, slower
                                           # backward (results/benchmark_latro_update*.md)
    seed: int = 0
    save_every: int = 50               # checkpoint every N steps (and at the end, and on SIGINT/SIGTERM)
    eval_every: int = 0                # greedy accuracy on eval_split every N steps (0: off)
    eval_split: str = "validation"     # the hook's split (model selection on it, never on test)
    eval_limit: int = 100              # questions for the hook (first n of a seed-0 shuffle)
    eval_at_start: bool = False        # also evaluate the starting model (logged as step 0)
    keep_best: bool = False            # keep the model with the best eval_accuracy in out_dir/best (+ best.json);
                                       # ties keep the earlier step; never selected on test unless eval_split is
    test_limit: int = 0                # at each evaluation also log greedy accuracy on the first n test questions
                                       # (test_accuracy: reports the paper's rule of picking on test; selects nothing)
    test_max_new_tokens: int | None = None   # that evaluation's budget (None: L + answers.ANSWER_TOKENS = L + 32)
    keep_resume_state: bool = True     # write checkpoint/ (optimizer state, ~3x the model on disk; needed for --resume)
    log_samples: int = 1               # questions per step whose K rationales go to samples.jsonl (0: none)
    resume: bool = False               # continue exactly from out_dir/checkpoint
    overwrite: bool = False            # start over in an out_dir that holds a run (deletes its records and models)
    change: str = ""                   # with --resume: comma-separated settings allowed to differ from the
                                       # checkpoint's (e.g. "lr,beta"); each change is recorded in config.json
    progress: bool = True              # progress bar
    shard: bool = False                # FSDP2: shard weights, gradients and AdamW state across processes
                                       # (also on under accelerate launch with configs/accelerate_fsdp.yaml)
    tracker: str = ""                  # also log the metrics to an experiment tracker through accelerate:
                                       # "tensorboard" (files in out_dir/tensorboard), "wandb", "mlflow", ...; "": off
    task_kwargs: dict = field(default_factory=dict)   # arithmetic difficulty, e.g. {"steps": 2, "high": 20}

    def _check_truncation(self, spec) -> None:
        """The truncation rule penalises a cut rationale under reward ``spec`` (a registered Reward), else
        ConfigError saying what to use."""
        if self.truncation == "batch_mean" and not spec.negative:
            raise ConfigError(f"truncation='batch_mean' sets a cut rationale's reward to γ × the mean reward, which "
                              f"penalises only negative rewards (log-probabilities); reward={self.reward!r} is ≥ 0, so "
                              f"use --truncation none or --truncation constant --gamma 0.")
        if self.truncation == "constant" and self.gamma > 0:
            # γ > 0 scores a cut rationale above a wrong finished one under every registered reward: above
            # every log-probability (≤ 0), above a probability or check that failed (0), above an
            # information gain of 0 (a rationale that adds nothing)
            raise ConfigError(f"truncation='constant' sets a cut rationale's reward to γ = {self.gamma:g}, but "
                              + (f"reward={self.reward!r} is a log-probability (≤ 0), so that is a bonus, not a "
                                 f"penalty; use a negative γ (e.g. --gamma -50) or --truncation batch_mean --gamma 2."
                                 if spec.negative else
                                 f"under reward={self.reward!r} that scores it above a finished rationale that got "
                                 f"nothing (reward 0), a bonus, not a penalty; use --gamma 0 or a negative γ."))

    def validate(self, world_size: int = 1) -> None:
        """Raise ConfigError, with the numbers, for settings that cannot work."""
        method = get_method(self.method)
        if self.reference_model is not None and (self.lora or not method.reference):
            raise ConfigError(f"reference_model={self.reference_model!r}: " + (
                "with LoRA π0 is the same weights with the adapter off; drop one of the two." if self.lora else
                f"{method.label} has no π0 to set."))
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder={self.decoder!r} is not one of {', '.join(DECODERS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.truncation not in TRUNCATION_RULES:
            raise ConfigError(f"truncation={self.truncation!r} is not one of {TRUNCATION_RULES}")
        if method.reward:
            self._check_truncation(get_reward(self.reward))
        for name in ("steps", "questions_per_step", "max_new_tokens", "micro_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if method.draws_rationales and self.k < method.min_k:
            raise ConfigError(f"k must be >= {method.min_k} for {method.label} (leave-one-out needs two samples), "
                              f"got k={self.k}" if method.min_k > 1 else f"k must be >= 1, got k={self.k}")
        if self.questions_per_step % world_size:
            raise ConfigError(f"questions_per_step={self.questions_per_step} does not divide among "
                              f"{world_size} processes; use a multiple of {world_size}.")
        if method.whole_questions and self.micro_batch % self.k:
            raise ConfigError(
                f"micro_batch={self.micro_batch} samples is not a multiple of k={self.k}: a micro-batch must hold "
                f"whole questions (k samples each) for the leave-one-out baseline; e.g. micro_batch={self.k * max(1, self.micro_batch // self.k)}.")
        for name, lo, hi in NUMERIC_RANGES:
            v = getattr(self, name)
            if v is None and name in ("top_p", "grad_clip", "top_k"):
                continue
            if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise ConfigError(f"{name}={v!r} is out of range: it must be a finite number in [{lo}, {hi}].")
        mixed_precision(self.mixed_precision)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.device not in ("auto", "cpu"):
            from .models import resolve_device
            resolve_device(self.device)     # a device that is not there is an error, not a silent CPU run
        if method.draws_rationales and self.temperature == 0:
            raise ConfigError(f"{self.method} samples its rationales: temperature must be > 0 "
                              "(T = 0 is greedy: K identical rationales, no learning signal); e.g. 1.0 or 0.7.")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


# (field, lowest, highest): every number is checked where it enters (validate)
NUMERIC_RANGES = (("temperature", 0.0, 10.0), ("top_k", 1, 10**9), ("top_p", 1e-9, 1.0), ("beta", 0.0, 1e6),
                  ("lam", 0.0, 1e6), ("gamma", -1e6, 1e6), ("lr", 0.0, 1.0), ("weight_decay", 0.0, 10.0),
                  ("grad_clip", 1e-9, 1e9), ("warmup_steps", 0, 10**9), ("lora_r", 1, 4096), ("lora_alpha", 1, 1e6),
                  ("eval_every", 0, 10**9), ("eval_limit", 1, 10**9), ("save_every", 1, 10**9), ("seed", 0, 2**63 - 1),
                  ("log_samples", 0, 10**6), ("k", 0, 10**6))


def mixed_precision(name: str) -> str | None:
    """accelerate's ``mixed_precision`` for ``TrainConfig.mixed_precision`` ("" -> None: the launch
    config's), or ConfigError before accelerate sees a value it cannot take."""
    if name not in ("", "no", "bf16"):
        raise ConfigError(f"mixed_precision={name!r} is not one of '', 'no', 'bf16' "
                          "(fp16 would need a loss scaler; bf16 does not)")
    return name or None
