"""The training loop that LaTRO (Eq. 4) and the SFT and rejection-sampling (RFT/STaR) baselines share;
each method's step is in :mod:`latro_core.methods`.

One config dataclass (:class:`TrainConfig`) drives all three; the CLI (``latro train|sft|rft``) and
a notebook's papermill parameters fill it. One optimizer step of LaTRO:

1. take the next ``questions_per_step`` questions (a seeded permutation per epoch, so the data
   position is a function of the step and resuming needs only the step number);
2. sample K rationales per question with the current policy (no gradients), each question from its
   own generator seeded by (seed, step, its position in the global batch);
3. for each micro-batch of whole questions: one forward over x⊕z⊕y gives log πθ(z|x) and
   log πθ(y|x⊕z) with gradients; one no-grad pass gives log π0(z|x) (adapter disabled under LoRA,
   else a frozen copy); rewards → truncation penalty → RLOO advantages → loss → backward;
4. clip, AdamW step, linear-decay schedule; metrics to ``metrics.jsonl``; atomic checkpoints.

Scale-out: the same code runs under ``accelerate launch`` on several processes, each taking its
share of the step's questions: DDP (and DeepSpeed, untested) through accelerate, FSDP2 parameter
sharding by :mod:`latro_core.sharding` (``shard``, or the FSDP accelerate config).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .checkpoint import (MODELS, RUN_FILES, _load_weights, _read_back, _truncate_metrics, check_writable,
                         checkpoint_step, hold_folder, resume_changes, save_checkpoint, write_folder_atomically)
from .errors import ConfigError, NumericalError, check_finite, writing
from .logprobs import PolicyScorer, sequence_logprobs
from .methods import StepContext, get_method
from .models import LoraSpec, add_lora, enable_checkpointing, frozen_copy, load_model, save_model
from .objective import TRUNCATION_RULES, reward_spec
from .rollout import sample_rationales
from .sharding import (full_optimizer_state, full_state_dict, full_tensor, gathered, load_full_optimizer_state, shard,
                       sharding_requested)
from .tasks import load_task

@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults: a CPU-sized LaTRO run of the embedded model."""

    method: str = "latro"              # a registered method (methods.METHODS): latro | sft | rft
    model: str | None = None           # hub id, folder, .gguf, or None for the embedded SmolLM2-135M
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
    test_max_new_tokens: int | None = None   # that evaluation's budget (None: L + evaluate.ANSWER_TOKENS = L + 32)
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

    def validate(self, world_size: int = 1) -> None:
        """Raise ConfigError, with the numbers, for settings that cannot work."""
        method = get_method(self.method)
        if self.truncation not in TRUNCATION_RULES:
            raise ConfigError(f"truncation={self.truncation!r} is not one of {TRUNCATION_RULES}")
        spec = reward_spec(self.reward)
        if spec.token_probs and self.shard:
            raise ConfigError(f"reward={self.reward!r} scores y in extra passes outside the sharded root module; "
                              f"train it unsharded.")
        if method.reward and self.truncation == "batch_mean" and not spec.negative:
            raise ConfigError(f"truncation='batch_mean' sets a cut rationale's reward to γ × the mean reward, which "
                              f"penalises only negative rewards (log-probabilities); reward={self.reward!r} is ≥ 0, so "
                              f"use --truncation none or --truncation constant --gamma 0.")
        for name in ("steps", "questions_per_step", "max_new_tokens", "micro_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if method.samples and self.k < method.min_k:
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
        _mixed_precision(self.mixed_precision)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.device not in ("auto", "cpu"):
            from .models import resolve_device
            resolve_device(self.device)     # a device that is not there is an error, not a silent CPU run
        if method.samples and self.temperature == 0:
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


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once the checkpoint is safely written."""


# ---------------------------------------------------------------- data order

def question_indices(step: int, n_questions: int, per_step: int, seed: int) -> list[int]:
    """Indices of the questions used at optimizer step ``step`` (0-based): a fresh seeded
    permutation every epoch, consumed in order. Pure function of the step, so resume is exact."""
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(pos, n_questions)
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        out.append(int(torch.randperm(n_questions, generator=g)[i]))
    return out


def sampling_generator(seed: int, step: int, question: int, device="cpu") -> torch.Generator:
    """The generator that samples the K rationales of the ``question``-th question (its position in
    the step's global batch) at optimizer step ``step`` (0-based): seeded by (seed, step, question),
    not by the process, so a run samples the same rationales whatever the number of processes."""
    g = torch.Generator(device=device)
    return g.manual_seed(((seed * 1_000_003 + step) * 1_000_033 + question) % (2 ** 63))


# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, config: TrainConfig, model=None, tokenizer=None, task=None):
        from accelerate import Accelerator

        self.cfg = config
        if not torch.distributed.is_initialized():    # one process: each run its own precision (accelerate's
            from accelerate.state import AcceleratorState   # state is a process-wide singleton)
            AcceleratorState._reset_state()
        # one scheduler step per optimizer step: with the default (step_scheduler_with_optimizer=True)
        # accelerate steps the schedule num_processes times per call, so N processes decayed N x faster
        self.acc = Accelerator(cpu=config.device == "cpu", step_scheduler_with_optimizer=False,
                               mixed_precision=_mixed_precision(config.mixed_precision),
                               log_with=_tracker(config.tracker), project_dir=config.out_dir)
        config.validate(self.acc.num_processes)
        self.sharded = sharding_requested(config.shard)
        self.method = get_method(config.method)
        if self.sharded and (config.lora or not self.method.shardable or not torch.distributed.is_initialized()):
            why = ("LoRA adapters are small, train them unsharded (configs/accelerate_ddp.yaml)" if config.lora else
                   f"{self.method.label} keeps a different number of rationales on each process, so the processes "
                   "would make different numbers of sharded forwards; train it unsharded"
                   if not self.method.shardable else
                   "sharding needs several processes: run under accelerate launch (configs/accelerate_fsdp.yaml) or torchrun")
            raise ConfigError("shard: " + why)
        torch.manual_seed(config.seed)
        self.out = Path(config.out_dir)
        self.ckpt = self.out / "checkpoint"
        # one owner per run folder, taken before anything is written (the main process holds it for
        # the group); released when training ends, or by the kernel when the process dies
        self._lock = hold_folder(self.out) if self.acc.is_main_process else None
        try:
            self._set_up(config, model, tokenizer, task)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the run folder up (another run may then write into it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _set_up(self, config: TrainConfig, model, tokenizer, task) -> None:
        check_writable(self.out)
        resume_from = self.ckpt if (config.resume and checkpoint_step(self.ckpt) is not None) else None
        self.changes = resume_changes(config, resume_from) if resume_from is not None else {}
        if resume_from is None:
            self._start_over(config)
        self.task = task if task is not None else load_task(config.task, config.split, data_dir=config.data_dir,
                                                            **config.task_kwargs)
        if config.train_limit:
            self.task = self.task.subset(config.train_limit, seed=config.seed)
        if model is None:
            model, tokenizer = load_model(config.model, dtype=config.dtype, device="cpu")
        elif tokenizer is None:
            raise ConfigError("Trainer(model=...) also needs the model's tokenizer (tokenizer=...).")
        self.tok = tokenizer
        self._build_policy(model, resume_from)
        self._build_optimizer(resume_from)
        self._stop_signal = None
        self.best = None            # keep_best: {"step", "eval_accuracy", ...} of the model in best/
        if resume_from is not None and (self.out / "best.json").exists():
            self.best = _read_back(self.out / "best.json", lambda f: json.loads(Path(f).read_text()))

    def _build_policy(self, model, resume_from: Path | None) -> None:
        """π0 (``self.ref``, a scorer around the frozen copy) and the trainable scorer around πθ (``self.scorer``): a LoRA adapter or the
        full weights, read back from the checkpoint when resuming, sharded when asked."""
        config = self.cfg
        # π0 is the *starting* model (passed in, or loaded by name), also when resuming: with LoRA
        # the adapter is switched off; otherwise a frozen copy taken before any checkpoint weights load
        # z is scored at the sampling temperature (πθ and π0 alike): the samples' own policy
        T = config.temperature if self.method.tempered_scoring else 1.0
        self.ref = None
        if self.method.reference and config.beta != 0 and not config.lora:
            ref_lm = frozen_copy(model).to(self.acc.device)
            self.ref = PolicyScorer(ref_lm, temperature=T, length_groups=not self.sharded)
            if self.sharded:      # π0 sharded like πθ, scored through its own root module
                self.ref = shard(self.ref, ref_lm, self.acc.device, self.acc.mixed_precision == "bf16")
        if config.lora:
            spec = LoraSpec(r=config.lora_r, alpha=config.lora_alpha)
            model = (_with_adapter(model, spec, None) if resume_from is None else
                     _read_back(resume_from / "model", lambda folder: _with_adapter(model, spec, folder)))
        elif resume_from is not None:
            _load_weights(model, resume_from / "model")
        if config.gradient_checkpointing:      # sampling runs in eval mode, so it keeps its KV cache
            enable_checkpointing(model)
        self.scorer = PolicyScorer(model, temperature=T, length_groups=not self.sharded)
        if self.sharded:
            self.scorer = shard(self.scorer, model, self.acc.device, self.acc.mixed_precision == "bf16")

    def _build_optimizer(self, resume_from: Path | None) -> None:
        """AdamW on the trainable parameters and the linear schedule, with their state (and the RNG
        state and step) read back when resuming."""
        config = self.cfg
        params = [p for p in self.scorer.parameters() if p.requires_grad]
        # fused AdamW updates in place: no temporaries, ~5x faster per step on CPU (results/adamw_step.md)
        fused = {"fused": True} if self.acc.device.type in ("cpu", "cuda") else {}
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _linear_schedule(config.warmup_steps, config.steps))
        if self.sharded:    # sharded by latro itself (sharding.py): accelerate wraps nothing
            self.opt, self.sched = opt, sched
        else:
            self.scorer, self.opt, self.sched = self.acc.prepare(self.scorer, opt, sched)
        self.step = 0
        if resume_from is not None:
            state = _read_back(resume_from / "state.pt", lambda f: torch.load(f, weights_only=False))
            self._load_optimizer(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            if "cuda_rng" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.step = checkpoint_step(resume_from)

    def _start_over(self, config: TrainConfig) -> None:
        """A new run: refuse an out_dir that holds one, unless ``overwrite`` (then delete it)."""
        found = [name for name in RUN_FILES if (self.out / name).exists()]
        self.acc.wait_for_everyone()
        if not found:
            return
        models = [name for name in found if name in MODELS]
        if config.resume and not config.overwrite:
            if models:   # a finished run without resume state (--keep-resume-state false): never deleted
                raise ConfigError(
                    f"{self.out} holds a run with {', '.join(models)} but no resume state (it was trained with "
                    f"--keep-resume-state false), so --resume cannot continue it; nothing was changed. Train "
                    f"further from its model into a new folder (--model {self.out / models[0]} --out-dir NEW), "
                    f"or start over here with --overwrite (deletes it).")
            # killed before its first checkpoint: only records, which any resume drops beyond its checkpoint
            if self.acc.is_main_process:
                print(f"latro: {self.out} has no checkpoint to resume from; starting the run over "
                      f"(deletes {', '.join(found)}).", flush=True)
        elif not config.overwrite:
            raise ConfigError(f"{self.out} already holds a run ({', '.join(found)}); continue it with --resume, "
                              f"or start over with --overwrite (deletes it), or pick another --out-dir.")
        elif self.acc.is_main_process:
            print(f"latro: --overwrite deletes {', '.join(found)} in {self.out}", flush=True)
        if self.acc.is_main_process:
            for name in found:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.acc.wait_for_everyone()

    # -- helpers
    @property
    def lm(self):
        return self.scorer.lm if self.sharded else self.acc.unwrap_model(self.scorer).lm

    def _autocast(self):
        """The precision of the prepared scorer's forward (accelerate's autocast under mixed_precision)
        for every other pass too: sampling, π0, evaluation. Sharded runs cast in FSDP2's policy instead."""
        return nullcontext() if self.sharded else self.acc.autocast()

    @property
    def policy(self):
        """The module to sample from: the LM, or under sharding the sharded root (``sharding.gathered``)."""
        return self.scorer if self.sharded else self.lm

    def ref_logp_z(self, batch):
        with torch.no_grad(), self._autocast():
            T = self.cfg.temperature
            if self.cfg.lora:
                with self.lm.disable_adapter():
                    return sequence_logprobs(self.lm, batch, temperature=T)[0]
            return self.ref(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)[0]

    def _model_state(self) -> dict | None:
        """The policy's weights to save: None (the model's own) unless sharded, then gathered to
        process 0 (a collective)."""
        return full_state_dict(self.scorer, prefix="lm.") if self.sharded else None

    def _optimizer_state(self) -> dict:
        return full_optimizer_state(self.scorer, self.opt) if self.sharded else self.opt.state_dict()

    def _load_optimizer(self, state: dict) -> None:
        if self.sharded:
            load_full_optimizer_state(self.scorer, self.opt, state)
        else:
            self.opt.load_state_dict(state)

    # -- the pieces each method's step (methods.py) calls
    def step_context(self) -> StepContext:
        """The narrow view of this trainer a method's step receives."""
        needs_ref = self.method.reference and self.cfg.beta != 0
        return StepContext(cfg=self.cfg, tokenizer=self.tok, task=self.task, acc=self.acc,
                           questions=self.my_questions, sample=self.sample, scorer=self.scorer,
                           reference_logp_z=self.ref_logp_z if needs_ref else None, lm=self.lm, sync=self.sync,
                           samples_log=self.out / "samples.jsonl", how_to_go_on=self._how_to_go_on)

    def my_questions(self, step: int):
        """(position of this process's first question in the step's global batch, its questions)."""
        idx = question_indices(step, len(self.task), self.cfg.questions_per_step, self.cfg.seed)
        share = len(idx) // self.acc.num_processes
        first = self.acc.process_index * share
        return first, [self.task[i] for i in idx[first:first + share]]

    def sample(self, step: int, first: int, exs, **kw):
        """K rationales per question, in one batch, each question drawing from its own generator
        (see :func:`sampling_generator`)."""
        try:
            with gathered(self.policy) as policy, self._autocast():
                return sample_rationales(policy, self.tok, [self.task.prompt(e, self.tok) for e in exs], k=self.cfg.k,
                                         max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                                         top_k=self.cfg.top_k, top_p=self.cfg.top_p,
                                         generator=[sampling_generator(self.cfg.seed, step, first + i, self.acc.device)
                                                    for i in range(len(exs))], **kw)
        except RuntimeError as e:
            if "probability tensor contains" not in str(e):
                raise
            raise NumericalError(f"non-finite sampling probabilities at step {step + 1}: the model's weights "
                                 f"or logits hold NaN/inf; the run stopped and the last good checkpoint is "
                                 f"kept. Check the starting model, lower the learning rate or use fp32.") from None

    def sync(self, last: bool):
        """Context for one micro-batch's backward: no gradient all-reduce until the step's last one
        (DDP/FSDP ``no_sync``; under DeepSpeed, whose backward also steps, no step before the last)."""
        from accelerate.utils import DistributedType

        if self.sharded:      # FSDP2: micro-batches before the last accumulate unreduced gradients
            self.scorer.set_requires_gradient_sync(last)
            return nullcontext()
        if self.acc.distributed_type == DistributedType.DEEPSPEED:
            self.acc.sync_gradients = last
            return nullcontext()
        return nullcontext() if last else self.acc.no_sync(self.scorer)

    # -- the loop
    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def train(self) -> dict:
        """Run the remaining steps: each is the method's step (its micro-batches' backward), then one
        clipped optimizer step (:meth:`_optimizer_step`), its metrics to metrics.jsonl (and the
        tracker), a checkpoint every ``save_every`` steps, at the end and on SIGINT/SIGTERM. Returns
        the last step's metrics; the model goes to ``final/``."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            self._write_config()
            _truncate_metrics(self.out / "metrics.jsonl", self.step)
            _truncate_metrics(self.out / "samples.jsonl", self.step)
        if cfg.tracker:     # the project name is TensorBoard's folder under out_dir (accelerate's project_dir)
            self.acc.init_trackers("tensorboard" if cfg.tracker == "tensorboard" else "latro",
                                   config={k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        step_fn, context = self.method.step, self.step_context()
        bar = None
        if cfg.progress and self.acc.is_main_process:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.method} {self.task.name}", unit="step")
        last = {}
        try:
            if cfg.eval_at_start and self.step == 0 and cfg.eval_every:
                self._record({"step": 0, **self.evaluate()}, None)     # the starting model, as step 0 of the curves
            self.scorer.train()
            while self.step < cfg.steps:
                t0 = time.time()
                m = self._optimizer_step(step_fn(context, self.step))
                self.step += 1
                m.update(step=self.step, lr=self.sched.get_last_lr()[0], step_s=time.time() - t0)
                m["samples_per_s"] = m["samples"] / m["step_s"]
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    m.update(self.evaluate())
                last = self._record(m, bar)
                if self._stop_signal is not None or self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
                if self._stop_signal is not None:
                    raise TrainingInterrupted(f"stopped by signal {self._stop_signal} after step {self.step}; "
                                              f"checkpoint saved in {self.ckpt}; continue with --resume")
            state = self._model_state()
            if self.acc.is_main_process:
                with writing(f"the final model to {self.out / 'final'}", self._how_to_go_on):
                    write_folder_atomically(self.out / "final",
                                            lambda tmp: save_model(self.lm, self.tok, tmp, state_dict=state))
                self._finish_best()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if cfg.tracker:
                self.acc.end_training()
            self.release()
        return last

    def _how_to_go_on(self) -> str:
        """After a failed write: what is intact and how to continue (the second half of the error)."""
        kept = checkpoint_step(self.ckpt)
        if kept is None:
            return ("no checkpoint was written before it (--keep-resume-state false, or before the first save), so "
                    "free space (or fix the folder's permissions) and rerun with --overwrite.")
        return (f"the checkpoint of step {kept} in {self.ckpt} is intact: free space (or fix the folder's "
                f"permissions) and continue with --resume.")

    def _optimizer_step(self, m: dict) -> dict:
        """After a step's backward: the total gradient norm (clipped to ``grad_clip``; a non-finite one
        stops the run before the optimizer writes NaN into the weights), AdamW, the schedule. An RFT
        step that kept no rationale takes no optimizer step. Returns the metrics as floats."""
        self.acc.sync_gradients = True
        if "samples" in m and (m.get("kept", 1) > 0):
            norm = self._clip_grad_norm(self.cfg.grad_clip or float("inf"))
            if norm is not None:    # DeepSpeed clips (and steps) inside backward
                m["grad_norm"] = norm
                check_finite(self.step, grad_norm=torch.as_tensor(norm))
            t1 = time.time()
            self.opt.step()
            m["optim_s"] = time.time() - t1
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return {k: float(v) for k, v in m.items()}

    def _record(self, m: dict, bar) -> dict:
        """A step's metrics to metrics.jsonl, the progress bar and the tracker (process 0 writes)."""
        if self.acc.is_main_process:
            with writing(f"{self.out / 'metrics.jsonl'} (step {m.get('step')})", self._how_to_go_on), \
                    open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(m) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: round(m[k], 3) for k in ("reward_mean", "logp_y_mean", "sft_loss", "eval_accuracy") if k in m})
        self._track(m)
        return m

    def _clip_grad_norm(self, max_norm: float):
        """Clip to ``max_norm`` and return the total gradient norm (None where DeepSpeed clips)."""
        if self.sharded:
            params = [p for p in self.scorer.parameters() if p.grad is not None]
            return full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return self.acc.clip_grad_norm_(self.scorer.parameters(), max_norm)

    def _track(self, m: dict) -> None:
        """The step's metrics to the tracker (``tracker``), at the optimizer step."""
        if self.cfg.tracker:
            self.acc.log({k: v for k, v in m.items() if k != "step"}, step=int(m["step"]))

    def _write_config(self) -> None:
        """config.json: the settings in force, and under "resumes" every resume that changed some
        (the step it resumed at and {field: [old, new]}), so the record says what each step used."""
        path = self.out / "config.json"
        try:
            resumes = json.loads(path.read_text()).get("resumes", []) if self.step else []
        except (OSError, ValueError):
            resumes = []
        if self.changes:
            resumes.append({"step": self.step, "changed": self.changes})
        with writing(f"{path}", self._how_to_go_on):
            path.write_text(json.dumps({**asdict(self.cfg), **({"resumes": resumes} if resumes else {})}, indent=1))

    def save(self):
        if not self.cfg.keep_resume_state:
            return
        self.acc.wait_for_everyone()
        model_state, opt_state = self._model_state(), self._optimizer_state()
        if self.acc.is_main_process:    # atomic: a failed write leaves the previous checkpoint as it was
            with writing(f"the checkpoint of step {self.step} to {self.ckpt}", self._how_to_go_on):
                save_checkpoint(self.ckpt, self.lm, opt_state, self.sched, self.step, self.cfg, tokenizer=self.tok,
                                model_state=model_state)

    def evaluate(self) -> dict:
        """Greedy on the first ``eval_limit`` questions of ``eval_split``: eval_accuracy, and beside
        it eval_frac_truncated, eval_mean_length, eval_accuracy_finished (format vs answers); with
        ``test_limit``, test_accuracy on the first test questions too. With ``keep_best`` a new best
        eval_accuracy writes the model to ``best/`` at once (so an interrupted run keeps it)."""
        from . import answers as ev
        cfg = self.cfg
        direct = self.method.direct_prompt and self.task.sft_direct
        budget_default = cfg.max_new_tokens + ev.ANSWER_TOKENS

        def greedy(split, limit, budget):
            task = load_task(cfg.task, split, data_dir=cfg.data_dir, **cfg.task_kwargs)
            with gathered(self.policy) as policy, self._autocast():
                return ev.greedy_report(policy, self.tok, task.subset(limit, seed=0), max_new_tokens=budget,
                                        direct=direct, batch_questions=50)

        m = {f"eval_{k}": v for k, v in greedy(cfg.eval_split, cfg.eval_limit, budget_default).items()
             if k != "n"}
        if cfg.test_limit:
            m["test_accuracy"] = greedy("test", cfg.test_limit, cfg.test_max_new_tokens or budget_default)["accuracy"]
        if cfg.keep_best and (self.best is None or m["eval_accuracy"] > self.best["eval_accuracy"]):
            self.best = {"step": self.step, "eval_split": cfg.eval_split, **m}
            state = self._model_state()
            if not self.acc.is_main_process:
                return m
            with writing(f"the best model so far to {self.out / 'best'}", self._how_to_go_on):
                write_folder_atomically(self.out / "best", lambda tmp: save_model(self.lm, self.tok, tmp, state_dict=state))
                (self.out / "best.json").write_text(json.dumps(self.best, indent=1))
        return m

    def _finish_best(self) -> None:
        """The best model is the final one: drop the copy (``run_report`` then points at final/)."""
        if self.best is not None and self.best["step"] == self.step:
            shutil.rmtree(self.out / "best", ignore_errors=True)


def _with_adapter(model, spec: LoraSpec, adapter_dir: Path | None):
    """``model`` with a trainable LoRA adapter: a fresh one, or the one saved in ``adapter_dir``
    (resume). A model that is already a peft model keeps its adapter (weights from ``adapter_dir``)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if adapter_dir is not None:
            from peft.utils import load_peft_weights, set_peft_model_state_dict
            res = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir)))
            if getattr(res, "unexpected_keys", None):
                raise ConfigError(f"the adapter in {adapter_dir} does not fit the model "
                                  f"(unexpected keys {res.unexpected_keys[:3]}...)")
        return model
    return add_lora(model, spec, str(adapter_dir) if adapter_dir is not None else None)


def _mixed_precision(name: str) -> str | None:
    """accelerate's ``mixed_precision`` for ``TrainConfig.mixed_precision`` ("" -> None: the launch
    config's), or ConfigError before accelerate sees a value it cannot take."""
    if name not in ("", "no", "bf16"):
        raise ConfigError(f"mixed_precision={name!r} is not one of '', 'no', 'bf16' "
                          "(fp16 would need a loss scaler; bf16 does not)")
    return name or None


def _tracker(name: str):
    """accelerate's ``log_with`` for ``TrainConfig.tracker`` ("" -> None), or ConfigError saying what to
    install when the tracker's package is missing."""
    if not name:
        return None
    from accelerate.utils import LoggerType, is_tensorboard_available

    known = sorted(t.value for t in LoggerType if t.value != "all")
    if name not in known:
        raise ConfigError(f"tracker={name!r} is not one of accelerate's trackers: {', '.join(known)}")

    if name == "tensorboard" and not is_tensorboard_available():
        raise ConfigError("tracker='tensorboard' needs the tensorboardX (or tensorboard) package: pip install tensorboardX")
    return name


def _linear_schedule(warmup: int, total: int):
    """lr multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def train(config: TrainConfig, **kw) -> dict:
    """Run training from a config; returns the last step's metrics."""
    return Trainer(config, **kw).train()
