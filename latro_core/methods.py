"""Training methods, each one :class:`Method` record in :data:`METHODS`: what its optimizer step
does (samples, losses, backward passes) and what it needs from the trainer around it. The
trainer, the CLI, the run helpers and the tables read these records, never a method's name, so a
new method is one :func:`register` call (``tests/toy_method.py`` trains one through the CLI).

A step receives a :class:`StepContext` (the policy's scorer, π0's, the sampler, the accelerator's
hooks, the config), not the trainer, and returns the step's metrics (tensors or floats); the
:class:`~latro_core.trainer.Trainer` then clips, steps AdamW and records.

- :func:`latro_step` — LaTRO (Eq. 4): K rationales per question from πθ, self-rewards
  r_k = log πθ(y|x⊕z_k) − β·log(πθ(z_k|x)/π0(z_k|x)), the truncation penalty, RLOO advantages,
  and the loss of :func:`~latro_core.objective.latro_update`;
- :func:`sft_step` — supervised fine-tuning on the data set's gold rationale and answer;
- :func:`rft_step` — rejection sampling (STaR/RFT): fine-tune on the sampled rationales whose
  answer is right.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ConfigError, check_finite, writing
from .logprobs import mean_answer_probability, pack
from .objective import latro_update, reward_spec, self_reward


@dataclass
class StepContext:
    """What a method's step may use, and nothing else of the trainer.

    ``cfg`` the run's TrainConfig; ``questions(step)`` → (this process's first position in the
    step's global batch, its questions); ``sample(step, first, questions, **kw)`` → a
    :class:`~latro_core.rollout.Rollout` of K rationales per question from πθ; ``scorer(ids, mask,
    z_mask, y_mask)`` → (log πθ(z|x), log πθ(y|x⊕z)), both (N,), with gradients; ``reference_logp_z
    (batch)`` → log π0(z|x) (N,), no gradients (``None`` when the method has no reference or β = 0);
    ``lm`` the policy's model for extra no-grad passes; ``acc`` the accelerator (``device``,
    ``num_processes``, ``gather``, ``backward``, ``is_main_process``); ``sync(last)`` the context
    for one micro-batch's backward (no all-reduce before the step's last); ``samples_log`` the run's
    samples.jsonl and ``how_to_go_on()`` what to tell the user if writing it fails."""

    cfg: Any
    tokenizer: Any
    task: Any
    acc: Any
    questions: Callable[[int], tuple[int, list]]
    sample: Callable[..., Any]
    scorer: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    reference_logp_z: Callable[[Any], torch.Tensor] | None
    lm: Any
    sync: Callable[[bool], Any]
    samples_log: Path
    how_to_go_on: Callable[[], str]


def latro_step(ctx: StepContext, step: int) -> dict:
    """Sample K rationales per question, then per micro-batch of whole questions: log πθ(z|x) and
    log πθ(y|x⊕z) (one forward), log π0(z|x), the Eq. 4 loss and its backward."""
    cfg = ctx.cfg
    first, exs = ctx.questions(step)
    t0 = time.time()
    spec = reward_spec(cfg.reward)
    roll = ctx.sample(step, first, exs, **({"keep_going_after_stop": True} if spec.checker else {}))
    t_sample = time.time() - t0
    n_local = len(roll.rationale_ids)
    n_global = n_local * ctx.acc.num_processes
    rec = {k: [] for k in ("reward", "logp_y", "kl", "adv", "policy_loss", "answer_loss")}
    slices, batches = _micro_batches(ctx, spec, exs, roll)
    t1 = time.time()
    refs = [ctx.reference_logp_z(b) if cfg.beta != 0 else None for b in batches]
    infos = [_reward_info(ctx, spec, exs, roll, sl, b) for sl, b in zip(slices, batches)]
    batch_mean = _step_mean_reward(ctx, batches, refs, roll.truncated)
    t_score, t_backward = time.time() - t1, 0.0
    for sl, batch, ref, info in zip(slices, batches, refs, infos):
        n_mb = sl.stop - sl.start
        last = sl.stop >= n_local
        with ctx.sync(last):
            t1 = time.time()
            logp_z, logp_y = ctx.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
            loss, terms = latro_update(logp_z, logp_y, ref, roll.truncated[sl], cfg.k, beta=cfg.beta, lam=cfg.lam,
                                       truncation=cfg.truncation, gamma=cfg.gamma, batch_mean=batch_mean,
                                       reward=cfg.reward, info=info)
            r, adv = terms["reward"], terms["adv"]
            check_finite(step, loss=loss, reward=r)
            t2 = time.time()
            # scale so that the accumulated, process-averaged gradient is the mean over all samples
            ctx.acc.backward(loss * (n_mb / n_global) * ctx.acc.num_processes)
            t_score, t_backward = t_score + t2 - t1, t_backward + time.time() - t2
        rec["reward"].append(r)
        rec["logp_y"].append(logp_y.detach())
        rec["kl"].append((logp_z.detach() - ref) if ref is not None else torch.zeros_like(r))
        rec["adv"].append(adv)
        rec["policy_loss"].append(terms["policy_loss"].expand(n_mb))
        rec["answer_loss"].append(terms["answer_loss"].expand(n_mb))
    t_update = time.time() - t0 - t_sample
    if cfg.log_samples and ctx.acc.is_main_process:
        _log_samples(ctx, step, exs, roll, {k: torch.cat(rec[k]) for k in ("reward", "logp_y", "kl", "adv")})
    return {**_latro_metrics(ctx, rec, roll), "sample_s": t_sample, "update_s": t_update, "score_s": t_score,
            "backward_s": t_backward, "samples": float(n_global)}


def _micro_batches(ctx: StepContext, spec, exs, roll) -> tuple[list[slice], list]:
    """The step's samples cut into micro-batches of whole questions (``micro_batch // k`` each):
    their slices of the rollout and their packed x⊕z⊕y batches, y the gold answer, or for a reward
    that scores the model's own answer (``spec.own_answer``) its continuation ŷ after z (the answer
    template and what it wrote after it, up to EOS or L)."""
    k, tok = ctx.cfg.k, ctx.tokenizer

    def answer(i):
        if spec.own_answer:
            return roll.generated_ids[i][len(roll.rationale_ids[i]):]
        return ctx.task.answer_ids(exs[i // k], tok, roll.rationale_ids[i])

    per_micro = ctx.cfg.micro_batch // k
    slices = [slice(q0 * k, min(len(exs), q0 + per_micro) * k) for q0 in range(0, len(exs), per_micro)]
    batches = [pack(roll.prompt_ids[sl], roll.rationale_ids[sl], [answer(i) for i in range(sl.start, sl.stop)],
                    tok.pad_token_id).to(ctx.acc.device) for sl in slices]
    return slices, batches


def _latro_metrics(ctx: StepContext, rec: dict, roll) -> dict:
    """The step's means over every sample of every process: reward, log π(y|x⊕z), KL, advantage
    spread, rationale length, fraction cut at L, the two loss terms, questions with equal rewards."""
    cat = {k: ctx.acc.gather(torch.cat(v).float()) for k, v in rec.items()}
    trunc = ctx.acc.gather(roll.truncated.float().to(ctx.acc.device))
    lens = ctx.acc.gather(roll.lengths.to(ctx.acc.device))
    return {"reward_mean": cat["reward"].mean(), "reward_std": cat["reward"].std(),
            "logp_y_mean": cat["logp_y"].mean(), "kl_mean": cat["kl"].mean(),
            "adv_std": cat["adv"].std(), "rationale_len": lens.mean(), "frac_truncated": trunc.mean(),
            "policy_loss": cat["policy_loss"].mean(), "answer_loss": cat["answer_loss"].mean(),
            "frac_equal_rewards": _frac_equal_rows(cat["reward"].view(-1, ctx.cfg.k))}


def _reward_info(ctx: StepContext, spec, exs, roll, sl: slice, batch) -> dict:
    """What a micro-batch's reward needs besides log πθ(y|x⊕z) (objective.Reward): the checker's
    verdicts on the model's own answers (verifier); the mean per-token probability of y after z
    and without z (rlpr)."""
    k, info = ctx.cfg.k, {}
    if spec.checker:
        info["correct"] = torch.tensor(_answers_right(ctx, exs, roll, range(sl.start, sl.stop)), device=ctx.acc.device)
    if spec.token_probs:
        info["answer_prob"] = mean_answer_probability(ctx.lm, batch)
        without_z = pack(roll.prompt_ids[sl], [[] for _ in range(sl.start, sl.stop)],
                         [ctx.task.answer_ids(exs[i // k], ctx.tokenizer, []) for i in range(sl.start, sl.stop)],
                         ctx.tokenizer.pad_token_id).to(ctx.acc.device)
        info["answer_prob_without_z"] = mean_answer_probability(ctx.lm, without_z)
    return info


def _answers_right(ctx: StepContext, exs, roll, rows) -> list[bool]:
    """The checker's verdict on the model's own answer after each rationale of ``rows`` (a rollout
    that went on after the answer template: ``roll.full_texts``); sample i answers ``exs[i // k]``."""
    k = ctx.cfg.k
    return [ctx.task.is_correct(ctx.task.extract_answer(roll.full_texts[i], exs[i // k]), exs[i // k]) for i in rows]


def _log_samples(ctx: StepContext, step: int, exs, roll, values: dict) -> None:
    """Append the K rationales of the step's first ``log_samples`` questions, with their reward
    (after the truncation penalty), log p(y|x⊕z), log πθ(z|x) − log π0(z|x) and advantage, to
    ``samples.jsonl``."""
    with writing(f"{ctx.samples_log} (step {step + 1})", ctx.how_to_go_on), open(ctx.samples_log, "a") as f:
        for i in range(min(ctx.cfg.log_samples, len(exs)) * ctx.cfg.k):
            ex = exs[i // ctx.cfg.k]
            f.write(json.dumps({"step": step + 1, "id": ex.id, "answer": ex.answer, "sample": i % ctx.cfg.k,
                                "rationale": roll.texts[i], "length": len(roll.rationale_ids[i]),
                                "truncated": bool(roll.truncated[i]),
                                **{k: round(float(v[i]), 4) for k, v in values.items()}}) + "\n")


@torch.no_grad()
def _step_mean_reward(ctx: StepContext, batches, refs, truncated) -> torch.Tensor | None:
    """The mean reward over the whole step (all micro-batches, all processes), which the
    "batch_mean" truncation rule needs before any micro-batch's advantages. None (each call of
    ``penalize_truncated`` then uses its own rewards) when the step is one micro-batch on one
    process, the rule is another, or nothing is cut here or elsewhere; else one extra no-grad
    policy forward per micro-batch, so that the rule does not depend on ``micro_batch``."""
    cfg = ctx.cfg
    if cfg.truncation != "batch_mean" or (len(batches) == 1 and ctx.acc.num_processes == 1):
        return None
    if not bool(ctx.acc.gather(truncated.any().float()[None].to(ctx.acc.device)).sum()):
        return None
    rewards = []
    for batch, ref in zip(batches, refs):
        logp_z, logp_y = ctx.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
        rewards.append(self_reward(logp_y, logp_z, ref, cfg.beta))
    return ctx.acc.gather(torch.cat(rewards).float()).mean()


def _sft_batch_loss(ctx: StepContext, step: int, prompts, targets) -> dict:
    """−mean over samples of (1/|t|) log π(t|x): token-averaged NLL of the targets."""
    tok = ctx.tokenizer
    n_global = len(prompts) * ctx.acc.num_processes
    losses = []
    for s in range(0, len(prompts), ctx.cfg.micro_batch):
        xs, ts = prompts[s:s + ctx.cfg.micro_batch], targets[s:s + ctx.cfg.micro_batch]
        batch = pack(xs, [[] for _ in xs], ts, tok.pad_token_id).to(ctx.acc.device)
        last = s + ctx.cfg.micro_batch >= len(prompts)
        with ctx.sync(last):
            _, logp_t = ctx.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
            nll = -logp_t / batch.y_mask.sum(1).clamp(min=1)
            check_finite(step, loss=nll.sum())
            ctx.acc.backward(nll.sum() / n_global * ctx.acc.num_processes)
        losses.append(nll.detach())
    return {"sft_loss": ctx.acc.gather(torch.cat(losses)).mean(), "samples": float(n_global)}


def sft_step(ctx: StepContext, step: int) -> dict:
    """Fine-tune on x ⊕ gold rationale ⊕ answer (ARC: x ⊕ answer, the direct prompt)."""
    tok, (_, exs) = ctx.tokenizer, ctx.questions(step)
    direct = ctx.task.sft_direct
    xs = [tok(ctx.task.prompt(e, tok, direct=direct), add_special_tokens=False)["input_ids"] for e in exs]
    ts = [tok(ctx.task.sft_target(e, tok), add_special_tokens=False)["input_ids"] for e in exs]
    return _sft_batch_loss(ctx, step, xs, ts)


def rft_step(ctx: StepContext, step: int) -> dict:
    """Rejection sampling (STaR/RFT): sample K rationales, keep those whose answer is right,
    fine-tune on x ⊕ z ⊕ "The answer is y." (skip the update when none is right)."""
    cfg, tok = ctx.cfg, ctx.tokenizer
    first, exs = ctx.questions(step)
    t0 = time.time()
    roll = ctx.sample(step, first, exs, keep_going_after_stop=True)
    t_sample = time.time() - t0
    xs, ts = [], []
    for i, right in enumerate(_answers_right(ctx, exs, roll, range(len(roll.full_texts)))):
        ex = exs[i // cfg.k]
        if right:
            xs.append(roll.prompt_ids[i])
            ts.append(roll.rationale_ids[i] + ctx.task.answer_ids(ex, tok, roll.rationale_ids[i]))
    kept = ctx.acc.gather(torch.tensor([float(len(xs))], device=ctx.acc.device)).sum()
    out = {"kept": kept, "sample_s": t_sample, "samples": float(len(roll.full_texts) * ctx.acc.num_processes)}
    if xs:
        out.update(_sft_batch_loss(ctx, step, xs, ts))
    return out


def _frac_equal_rows(rewards: torch.Tensor) -> torch.Tensor:
    """Fraction of questions (rows of the (Q, K) rewards) whose K rewards are all equal: their RLOO
    advantages are 0, so they carry no learning signal (e.g. every rationale cut at L)."""
    return (rewards == rewards[:, :1]).all(1).float().mean()


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Method:
    """One training method: its step and what the trainer must build and check for it."""

    name: str                       # TrainConfig.method; the method field of every results record
    label: str                      # its name in tables and figures
    command: str                    # the ``latro`` sub-command that trains it
    help: str                       # that sub-command's one-line help
    step: Callable[[StepContext, int], dict]
    samples: bool                   # draws rationales from πθ: needs T > 0 and k ≥ min_k
    min_k: int = 1                  # rationales per question it needs (a leave-one-out baseline: 2)
    reference: bool = False         # scores log π0(z|x) (built when β ≠ 0; LoRA: the adapter switched off)
    tempered_scoring: bool = False  # scores z at the sampling temperature T (else at T = 1)
    whole_questions: bool = False   # each micro-batch holds whole questions (micro_batch a multiple of k)
    reward: bool = False            # reads TrainConfig.reward (objective.REWARDS)
    shardable: bool = True          # every process makes the same number of forwards (FSDP2 needs it)
    direct_prompt: bool = False     # trains, and so is evaluated, on the task's direct prompt when the task
                                    # has one for it (ARC's SFT: x ⊕ answer, no rationale)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (the CLI, the trainer, runs and tables then know it)."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ConfigError naming the known ones if there is none."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {tuple(METHODS)}")
    return METHODS[name]


# in the tables' order (after the untrained model): the baselines, then LaTRO
register(Method("sft", "SFT", "sft", "supervised fine-tuning baseline", sft_step, samples=False, direct_prompt=True))
register(Method("rft", "RFT", "rft", "rejection-sampling fine-tuning baseline (STaR/RFT)", rft_step, samples=True,
                shardable=False))
register(Method("latro", "LaTRO", "train", "LaTRO training", latro_step, samples=True, min_k=2, reference=True,
                tempered_scoring=True, whole_questions=True, reward=True))
