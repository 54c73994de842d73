"""The training loop that LaTRO (Eq. 4) and the SFT and rejection-sampling (RFT/STaR) baselines share;
each method's step is in :mod:`latro_core.methods`, its settings in :mod:`latro_core.train_config`.

A run is built, part by part, by one function each (the run folder, :func:`build_task`,
:func:`build_model`, :func:`build_reference` π0, :func:`build_policy` πθ, :func:`build_optimizer`,
the resumed state), called in order by :class:`Trainer`; its loop then repeats the method's step,
the clipped optimizer step, the records and the checkpoints. One optimizer step of LaTRO:

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
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoint import (load_weights, read_back, truncate_records, checkpoint_step, hold_folder, open_run_folder,
                         read_best, restore_training_state, save_checkpoint, write_folder_atomically)
from .errors import ConfigError, check_finite, writing
from .logprobs import PolicyScorer
from .methods import StepInputs, StepOutput, get_method
from .models import LoraSpec, add_lora, enable_checkpointing, freeze, frozen_copy, load_model, save_model
from .policy import Policy, SamplingSettings
from .processes import Processes
from .sharding import gathered, shard, sharding_requested
from .tasks import load_task
from .train_config import TrainConfig, mixed_precision

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


# ---------------------------------------------------------------- building a run: one function per part

def build_accelerator(config: TrainConfig):
    """The accelerator: its device, processes, precision and tracker."""
    from accelerate import Accelerator

    if not torch.distributed.is_initialized():    # one process: each run its own precision (accelerate's
        from accelerate.state import AcceleratorState   # state is a process-wide singleton)
        AcceleratorState._reset_state()
    # one scheduler step per optimizer step: with the default (step_scheduler_with_optimizer=True)
    # accelerate steps the schedule num_processes times per call, so N processes decayed N x faster
    return Accelerator(cpu=config.device == "cpu", step_scheduler_with_optimizer=False,
                       mixed_precision=mixed_precision(config.mixed_precision),
                       log_with=_tracker(config.tracker), project_dir=config.out_dir)


def check_sharding(config: TrainConfig, method, sharded: bool) -> None:
    """ConfigError when sharding is asked for a run it cannot serve."""
    if sharded and (config.lora or not method.shardable or not torch.distributed.is_initialized()):
        why = ("LoRA adapters are small, train them unsharded (configs/accelerate_ddp.yaml)" if config.lora else
               f"{method.label} keeps a different number of rationales on each process, so the processes "
               "would make different numbers of sharded forwards; train it unsharded"
               if not method.shardable else
               "sharding needs several processes: run under accelerate launch (configs/accelerate_fsdp.yaml) or torchrun")
        raise ConfigError("shard: " + why)


def build_task(config: TrainConfig, task=None):
    """The training questions: ``task`` or the one ``config`` names, cut to ``train_limit``."""
    if task is None:
        task = load_task(config.task, config.split, data_dir=config.data_dir, **config.task_kwargs)
    return task.subset(config.train_limit, seed=config.seed) if config.train_limit else task


def build_model(config: TrainConfig, model=None, tokenizer=None):
    """(model, tokenizer): the ones passed in, or the model ``config`` names, on the CPU."""
    if model is None:
        return load_model(config.model, dtype=config.dtype, device="cpu")
    if tokenizer is None:
        raise ConfigError("Trainer(model=...) also needs the model's tokenizer (tokenizer=...).")
    return model, tokenizer


def _scoring_temperature(config: TrainConfig, method) -> float:
    # z is scored at the sampling temperature (πθ and π0 alike), the samples' own policy, when the
    # method's record asks for it (LaTRO's KL term); else at T = 1
    return config.temperature if method.tempered_scoring else 1.0


def build_reference(config: TrainConfig, method, model, tokenizer, device, sharded: bool, bf16: bool):
    """π0's scorer around a frozen copy of the *starting* model (also when resuming), or of
    ``reference_model`` when set; or None: the method needs none, β = 0, or LoRA (π0 is then the same
    weights with the adapter switched off)."""
    if not (method.reference and config.beta != 0 and not config.lora):
        return None
    if config.reference_model is None:
        ref_lm = frozen_copy(model).to(device)
    else:
        ref_lm, ref_tok = load_model(config.reference_model, dtype=config.dtype, device="cpu")
        if ref_tok.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"reference_model={config.reference_model!r} has another vocabulary than the model "
                              f"it anchors: log π0(z|x) must score the same tokens.")
        ref_lm = freeze(ref_lm).to(device)
    ref = PolicyScorer(ref_lm, temperature=_scoring_temperature(config, method), length_groups=not sharded)
    return shard(ref, ref_lm, device, bf16) if sharded else ref     # π0 sharded like πθ, its own root module


def build_policy(config: TrainConfig, method, model, resume_from: Path | None, device, sharded: bool, bf16: bool):
    """πθ's trainable scorer: a LoRA adapter or the full weights, read back from the checkpoint when
    resuming, with gradient checkpointing and sharding when asked."""
    if config.lora:
        spec = LoraSpec(r=config.lora_r, alpha=config.lora_alpha)
        model = (_with_adapter(model, spec, None) if resume_from is None else
                 read_back(resume_from / "model", lambda folder: _with_adapter(model, spec, folder)))
    elif resume_from is not None:
        load_weights(model, resume_from / "model")
    if config.gradient_checkpointing:      # sampling runs in eval mode, so it keeps its KV cache
        enable_checkpointing(model)
    scorer = PolicyScorer(model, temperature=_scoring_temperature(config, method), length_groups=not sharded)
    return shard(scorer, model, device, bf16) if sharded else scorer


def build_optimizer(config: TrainConfig, scorer, device):
    """AdamW on the trainable parameters and the linear schedule (warm-up, then decay to 0)."""
    params = [p for p in scorer.parameters() if p.requires_grad]
    # fused AdamW updates in place: no temporaries, ~5x faster per step on CPU (results/adamw_step.md)
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, _linear_schedule(config.warmup_steps, config.steps))


# ---------------------------------------------------------------- the trainer

class Trainer:
    """One training run: the parts :func:`train` builds (below), the loop over the steps, and what
    it writes. ``Trainer(config)`` loads the model and task ``config`` names; tests and notebooks
    pass their own ``model``, ``tokenizer`` and ``task``. ``policy`` is what a step samples and
    scores (:class:`~latro_core.policy.Policy`), ``processes`` the adapter over DDP, FSDP2 and
    DeepSpeed (:class:`~latro_core.processes.Processes`)."""

    def __init__(self, config: TrainConfig, model=None, tokenizer=None, task=None):
        self.cfg = config
        self.acc = build_accelerator(config)
        config.validate(self.acc.num_processes)
        self.method = get_method(config.method)
        self.sharded = sharding_requested(config.shard)
        check_sharding(config, self.method, self.sharded)
        torch.manual_seed(config.seed)
        self.out = Path(config.out_dir)
        self.ckpt = self.out / "checkpoint"
        # one owner per run folder, taken before anything is written (the main process holds it for
        # the group); released when training ends, or by the kernel when the process dies
        self._lock = hold_folder(self.out) if self.acc.is_main_process else None
        try:
            self._build(config, model, tokenizer, task)
        except BaseException:
            self.release()
            raise

    def _build(self, config: TrainConfig, model, tokenizer, task) -> None:
        """The run's parts, each made by one function, in this order: the run folder (fresh, or the
        checkpoint to resume from), the task, the model, π0, πθ's scorer, AdamW and its schedule
        (prepared by accelerate unless sharded), the policy and processes, then the resumed state."""
        resume_from, self.changes = open_run_folder(config, self.out, self.acc)
        self.task = build_task(config, task)
        model, self.tok = build_model(config, model, tokenizer)
        bf16 = self.acc.mixed_precision == "bf16"
        # π0 before πθ: the frozen copy is taken from the starting weights, before a checkpoint's load
        reference = build_reference(config, self.method, model, self.tok, self.acc.device, self.sharded, bf16)
        scorer = build_policy(config, self.method, model, resume_from, self.acc.device, self.sharded, bf16)
        opt, sched = build_optimizer(config, scorer, self.acc.device)
        # sharded by latro itself (sharding.py): accelerate wraps nothing
        scorer, self.opt, self.sched = (scorer, opt, sched) if self.sharded else self.acc.prepare(scorer, opt, sched)
        self.processes = Processes(self.acc, scorer, self.sharded)
        self.policy = build_step_policy(config, self.method, scorer, reference, self.tok, self.processes)
        self.step = (restore_training_state(resume_from, lambda state: self.processes.load_optimizer_state(self.opt, state),
                                            self.sched) if resume_from else 0)
        self.best = read_best(self.out) if resume_from else None  # keep_best: {"step", "eval_accuracy", ...} of best/
        self._stop_signal = None

    def release(self) -> None:
        """Give the run folder up (another run may then write into it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def step_inputs(self, step: int) -> StepInputs:
        """What the method's step at ``step`` (0-based) receives: this process's share of the step's
        questions (a seeded permutation per epoch, :func:`question_indices`), the policy, the processes."""
        idx = question_indices(step, len(self.task), self.cfg.questions_per_step, self.cfg.seed)
        share = len(idx) // self.acc.num_processes
        first = self.acc.process_index * share
        return StepInputs(step=step, first_question=first, questions=[self.task[i] for i in idx[first:first + share]],
                          policy=self.policy, processes=self.processes, task=self.task, config=self.cfg)

    # -- the loop
    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def train(self) -> dict:
        """Run the remaining steps: each is the method's step (its micro-batches' backward), then one
        clipped optimizer step (:meth:`take_step`), its metrics to metrics.jsonl (and the tracker), a
        checkpoint every ``save_every`` steps, at the end and on SIGINT/SIGTERM. Returns the last
        step's metrics; the model goes to ``final/``."""
        cfg = self.cfg
        self._start_records()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if cfg.progress and self.acc.is_main_process:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.method} {self.task.name}", unit="step")
        last = {}
        try:
            if cfg.eval_at_start and self.step == 0 and cfg.eval_every:
                self._record({"step": 0, **self.evaluate()}, None)     # the starting model, as step 0 of the curves
            while self.step < cfg.steps:
                m = self.take_step()
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    m.update(self.evaluate())
                last = self._record(m, bar)
                if self._stop_signal is not None or self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
                if self._stop_signal is not None:
                    raise TrainingInterrupted(f"stopped by signal {self._stop_signal} after step {self.step}; "
                                              f"checkpoint saved in {self.ckpt}; continue with --resume")
            self._save_final()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if cfg.tracker:
                self.acc.end_training()
            self.release()
        return last

    def _start_records(self) -> None:
        """config.json, the records cut back to the resumed step, the tracker."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.acc.is_main_process:
            self._write_config()
            truncate_records(self.out / "metrics.jsonl", self.step)
            truncate_records(self.out / "samples.jsonl", self.step)
        if cfg.tracker:     # the project name is TensorBoard's folder under out_dir (accelerate's project_dir)
            self.acc.init_trackers("tensorboard" if cfg.tracker == "tensorboard" else "latro",
                                   config={k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})

    def take_step(self) -> dict:
        """One step of the loop: the method's step (for LaTRO: sample, score, reward, RLOO, loss,
        backward), then the clipped AdamW step; its rationales to samples.jsonl, its metrics returned
        (with ``step``, ``lr``, ``grad_norm`` before clipping), not recorded. :meth:`train` calls it;
        notebook 04 calls it on the page."""
        t0 = time.time()
        self.processes.scorer.train()
        out: StepOutput = self.method.step(self.step_inputs(self.step))
        self._log_samples(out.sample_records)
        m = self._optimizer_step(out.metrics)
        self.step += 1
        m.update(step=self.step, lr=self.sched.get_last_lr()[0], step_s=time.time() - t0)
        m["samples_per_s"] = m["samples"] / m["step_s"]
        return m

    def _log_samples(self, records: list[dict]) -> None:
        if records and self.acc.is_main_process:
            path = self.out / "samples.jsonl"
            with writing(f"{path} (step {self.step + 1})", self._how_to_go_on), open(path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

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
            norm = self.processes.clip(self.cfg.grad_clip or float("inf"))
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
        if self.cfg.tracker:     # the step's metrics to the tracker, at the optimizer step
            self.acc.log({k: v for k, v in m.items() if k != "step"}, step=int(m["step"]))
        return m

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
        model_state, opt_state = self.processes.model_state(), self.processes.optimizer_state(self.opt)
        if self.acc.is_main_process:    # atomic: a failed write leaves the previous checkpoint as it was
            with writing(f"the checkpoint of step {self.step} to {self.ckpt}", self._how_to_go_on):
                save_checkpoint(self.ckpt, self.policy.lm, opt_state, self.sched, self.step, self.cfg,
                                tokenizer=self.tok, model_state=model_state)

    def _save_model(self, folder: str) -> None:
        """The policy's weights (gathered when sharded) into ``out_dir/folder``, atomically."""
        state = self.processes.model_state()
        if self.acc.is_main_process:
            with writing(f"the {folder} model to {self.out / folder}", self._how_to_go_on):
                write_folder_atomically(self.out / folder,
                                        lambda tmp: save_model(self.policy.lm, self.tok, tmp, state_dict=state))

    def _save_final(self) -> None:
        """The last step's model to ``final/``; the best one's copy dropped when it is the final one."""
        self._save_model("final")
        if self.acc.is_main_process and self.best is not None and self.best["step"] == self.step:
            shutil.rmtree(self.out / "best", ignore_errors=True)

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
            with gathered(self.policy.sampling_module) as module, self.processes.precision():
                return ev.greedy_report(module, self.tok, task.subset(limit, seed=0), max_new_tokens=budget,
                                        direct=direct, batch_questions=50)

        m = {f"eval_{k}": v for k, v in greedy(cfg.eval_split, cfg.eval_limit, budget_default).items()
             if k != "n"}
        if cfg.test_limit:
            m["test_accuracy"] = greedy("test", cfg.test_limit, cfg.test_max_new_tokens or budget_default)["accuracy"]
        if cfg.keep_best and (self.best is None or m["eval_accuracy"] > self.best["eval_accuracy"]):
            self.best = {"step": self.step, "eval_split": cfg.eval_split, **m}
            self._save_model("best")
            if self.acc.is_main_process:
                (self.out / "best.json").write_text(json.dumps(self.best, indent=1))
        return m


def build_step_policy(config: TrainConfig, method, scorer, reference, tokenizer, processes: Processes) -> Policy:
    """The :class:`~latro_core.policy.Policy` a step works with: πθ's scorer (and the LM inside it),
    π0 (its scorer, or under LoRA the adapter switched off, when the method has π0 and β ≠ 0), the
    sampling settings, the scoring temperature the method asks for, and what sharding needs."""
    lm = scorer.lm if processes.sharded else processes.accelerator.unwrap_model(scorer).lm
    has_reference = method.reference and config.beta != 0
    return Policy(scorer=scorer, lm=lm, tokenizer=tokenizer,
                  sampling=SamplingSettings(k=config.k, max_new_tokens=config.max_new_tokens,
                                            temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                                            seed=config.seed, sampler=config.sampler, decoder=config.decoder),
                  scoring_temperature=_scoring_temperature(config, method),
                  reference=reference if has_reference else None,
                  reference_is_adapter_off=has_reference and config.lora,
                  sampling_module=scorer if processes.sharded else lm, device=processes.device,
                  precision=processes.precision, weights_for_sampling=gathered)


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
