"""One optimizer step's work for each training method: its samples, losses and backward passes
(the :class:`~latro_core.trainer.Trainer` then clips, steps AdamW and records). Each step function
takes the trainer and the step number and returns the step's metrics (tensors or floats).

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
from typing import TYPE_CHECKING

import torch

from .errors import check_finite, writing
from .logprobs import mean_answer_probability, pack
from .objective import latro_update, reward_spec, self_reward

if TYPE_CHECKING:
    from .trainer import Trainer


def latro_step(tr: Trainer, step: int) -> dict:
    """Sample K rationales per question, then per micro-batch of whole questions: log πθ(z|x) and
    log πθ(y|x⊕z) (one forward), log π0(z|x), the Eq. 4 loss and its backward."""
    cfg, tok = tr.cfg, tr.tok
    first, exs = tr.my_questions(step)
    t0 = time.time()
    spec = reward_spec(cfg.reward)
    roll = tr.sample(step, first, exs, **({"keep_going_after_stop": True} if spec.checker else {}))
    t_sample = time.time() - t0
    n_local = len(roll.rationale_ids)
    n_global = n_local * tr.acc.num_processes
    qs_per_micro = cfg.micro_batch // cfg.k
    rec = {k: [] for k in ("reward", "logp_y", "kl", "adv", "policy_loss", "answer_loss")}
    slices = [slice(q0 * cfg.k, min(len(exs), q0 + qs_per_micro) * cfg.k)
              for q0 in range(0, len(exs), qs_per_micro)]
    batches = [pack(roll.prompt_ids[sl], roll.rationale_ids[sl],
                    [tr.task.answer_ids(exs[i // cfg.k], tok, roll.rationale_ids[i]) for i in range(sl.start, sl.stop)],
                    tok.pad_token_id).to(tr.acc.device) for sl in slices]
    t1 = time.time()
    refs = [tr.ref_logp_z(b) if cfg.beta != 0 else None for b in batches]
    infos = [_reward_info(tr, spec, exs, roll, sl, b) for sl, b in zip(slices, batches)]
    batch_mean = _step_mean_reward(tr, batches, refs, roll.truncated)
    t_score, t_backward = time.time() - t1, 0.0
    for sl, batch, ref, info in zip(slices, batches, refs, infos):
        n_mb = sl.stop - sl.start
        last = sl.stop >= n_local
        with tr.sync(last):
            t1 = time.time()
            logp_z, logp_y = tr.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
            loss, terms = latro_update(logp_z, logp_y, ref, roll.truncated[sl], cfg.k, beta=cfg.beta, lam=cfg.lam,
                                       truncation=cfg.truncation, gamma=cfg.gamma, batch_mean=batch_mean,
                                       reward=cfg.reward, info=info)
            r, adv = terms["reward"], terms["adv"]
            check_finite(step, loss=loss, reward=r)
            t2 = time.time()
            # scale so that the accumulated, process-averaged gradient is the mean over all samples
            tr.acc.backward(loss * (n_mb / n_global) * tr.acc.num_processes)
            t_score, t_backward = t_score + t2 - t1, t_backward + time.time() - t2
        rec["reward"].append(r)
        rec["logp_y"].append(logp_y.detach())
        rec["kl"].append((logp_z.detach() - ref) if ref is not None else torch.zeros_like(r))
        rec["adv"].append(adv)
        rec["policy_loss"].append(terms["policy_loss"].expand(n_mb))
        rec["answer_loss"].append(terms["answer_loss"].expand(n_mb))
    t_update = time.time() - t0 - t_sample
    if cfg.log_samples and tr.acc.is_main_process:
        _log_samples(tr, step, exs, roll, {k: torch.cat(rec[k]) for k in ("reward", "logp_y", "adv")})
    cat = {k: tr.acc.gather(torch.cat(v).float()) for k, v in rec.items()}
    trunc = tr.acc.gather(roll.truncated.float().to(tr.acc.device))
    lens = tr.acc.gather(roll.lengths.to(tr.acc.device))
    return {"reward_mean": cat["reward"].mean(), "reward_std": cat["reward"].std(),
            "logp_y_mean": cat["logp_y"].mean(), "kl_mean": cat["kl"].mean(),
            "adv_std": cat["adv"].std(), "rationale_len": lens.mean(), "frac_truncated": trunc.mean(),
            "policy_loss": cat["policy_loss"].mean(), "answer_loss": cat["answer_loss"].mean(),
            "frac_equal_rewards": _frac_equal_rows(cat["reward"].view(-1, cfg.k)),
            "sample_s": t_sample, "update_s": t_update, "score_s": t_score, "backward_s": t_backward,
            "samples": float(n_global)}


def _reward_info(tr: Trainer, spec, exs, roll, sl: slice, batch) -> dict:
    """What a micro-batch's reward needs besides log πθ(y|x⊕z) (objective.Reward): the checker's
    verdicts on the model's own answers (verifier); the mean per-token probability of y after z
    and without z (rlpr)."""
    k, info = tr.cfg.k, {}
    if spec.checker:
        info["correct"] = torch.tensor(_answers_right(tr, exs, roll, range(sl.start, sl.stop)), device=tr.acc.device)
    if spec.token_probs:
        info["answer_prob"] = mean_answer_probability(tr.lm, batch)
        without_z = pack(roll.prompt_ids[sl], [[] for _ in range(sl.start, sl.stop)],
                         [tr.task.answer_ids(exs[i // k], tr.tok, []) for i in range(sl.start, sl.stop)],
                         tr.tok.pad_token_id).to(tr.acc.device)
        info["answer_prob_without_z"] = mean_answer_probability(tr.lm, without_z)
    return info


def _answers_right(tr: Trainer, exs, roll, rows) -> list[bool]:
    """The checker's verdict on the model's own answer after each rationale of ``rows`` (a rollout
    that went on after the answer template: ``roll.full_texts``); sample i answers ``exs[i // k]``."""
    k = tr.cfg.k
    return [tr.task.is_correct(tr.task.extract_answer(roll.full_texts[i], exs[i // k]), exs[i // k]) for i in rows]


def _log_samples(tr: Trainer, step: int, exs, roll, values: dict) -> None:
    """Append the K rationales of the step's first ``log_samples`` questions, with their reward
    (after the truncation penalty), log p(y|x⊕z) and advantage, to ``samples.jsonl``."""
    with writing(f"{tr.out / 'samples.jsonl'} (step {step + 1})", tr._how_to_go_on), open(tr.out / "samples.jsonl", "a") as f:
        for i in range(min(tr.cfg.log_samples, len(exs)) * tr.cfg.k):
            ex = exs[i // tr.cfg.k]
            f.write(json.dumps({"step": step + 1, "id": ex.id, "answer": ex.answer, "sample": i % tr.cfg.k,
                                "rationale": roll.texts[i], "length": len(roll.rationale_ids[i]),
                                "truncated": bool(roll.truncated[i]),
                                **{k: round(float(v[i]), 4) for k, v in values.items()}}) + "\n")


@torch.no_grad()
def _step_mean_reward(tr: Trainer, batches, refs, truncated) -> torch.Tensor | None:
    """The mean reward over the whole step (all micro-batches, all processes), which the
    "batch_mean" truncation rule needs before any micro-batch's advantages. None (each call of
    ``penalize_truncated`` then uses its own rewards) when the step is one micro-batch on one
    process, the rule is another, or nothing is cut here or elsewhere; else one extra no-grad
    policy forward per micro-batch, so that the rule does not depend on ``micro_batch``."""
    cfg = tr.cfg
    if cfg.truncation != "batch_mean" or (len(batches) == 1 and tr.acc.num_processes == 1):
        return None
    if not bool(tr.acc.gather(truncated.any().float()[None].to(tr.acc.device)).sum()):
        return None
    rewards = []
    for batch, ref in zip(batches, refs):
        logp_z, logp_y = tr.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
        rewards.append(self_reward(logp_y, logp_z, ref, cfg.beta))
    return tr.acc.gather(torch.cat(rewards).float()).mean()


def _sft_batch_loss(tr: Trainer, step: int, prompts, targets) -> dict:
    """−mean over samples of (1/|t|) log π(t|x): token-averaged NLL of the targets."""
    tok = tr.tok
    n_global = len(prompts) * tr.acc.num_processes
    losses = []
    for s in range(0, len(prompts), tr.cfg.micro_batch):
        xs, ts = prompts[s:s + tr.cfg.micro_batch], targets[s:s + tr.cfg.micro_batch]
        batch = pack(xs, [[] for _ in xs], ts, tok.pad_token_id).to(tr.acc.device)
        last = s + tr.cfg.micro_batch >= len(prompts)
        with tr.sync(last):
            _, logp_t = tr.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
            nll = -logp_t / batch.y_mask.sum(1).clamp(min=1)
            check_finite(step, loss=nll.sum())
            tr.acc.backward(nll.sum() / n_global * tr.acc.num_processes)
        losses.append(nll.detach())
    return {"sft_loss": tr.acc.gather(torch.cat(losses)).mean(), "samples": float(n_global)}


def sft_step(tr: Trainer, step: int) -> dict:
    """Fine-tune on x ⊕ gold rationale ⊕ answer (ARC: x ⊕ answer, the direct prompt)."""
    tok, (_, exs) = tr.tok, tr.my_questions(step)
    direct = tr.task.sft_direct
    xs = [tok(tr.task.prompt(e, tok, direct=direct), add_special_tokens=False)["input_ids"] for e in exs]
    ts = [tok(tr.task.sft_target(e, tok), add_special_tokens=False)["input_ids"] for e in exs]
    return _sft_batch_loss(tr, step, xs, ts)


def rft_step(tr: Trainer, step: int) -> dict:
    """Rejection sampling (STaR/RFT): sample K rationales, keep those whose answer is right,
    fine-tune on x ⊕ z ⊕ "The answer is y." (skip the update when none is right)."""
    cfg, tok = tr.cfg, tr.tok
    first, exs = tr.my_questions(step)
    t0 = time.time()
    roll = tr.sample(step, first, exs, keep_going_after_stop=True)
    t_sample = time.time() - t0
    xs, ts = [], []
    for i, right in enumerate(_answers_right(tr, exs, roll, range(len(roll.full_texts)))):
        ex = exs[i // cfg.k]
        if right:
            xs.append(roll.prompt_ids[i])
            ts.append(roll.rationale_ids[i] + tr.task.answer_ids(ex, tok, roll.rationale_ids[i]))
    kept = tr.acc.gather(torch.tensor([float(len(xs))], device=tr.acc.device)).sum()
    out = {"kept": kept, "sample_s": t_sample, "samples": float(len(roll.full_texts) * tr.acc.num_processes)}
    if xs:
        out.update(_sft_batch_loss(tr, step, xs, ts))
    return out


def _frac_equal_rows(rewards: torch.Tensor) -> torch.Tensor:
    """Fraction of questions (rows of the (Q, K) rewards) whose K rewards are all equal: their RLOO
    advantages are 0, so they carry no learning signal (e.g. every rationale cut at L)."""
    return (rewards == rewards[:, :1]).all(1).float().mean()


# the step of each TrainConfig.method
STEPS = {"latro": latro_step, "sft": sft_step, "rft": rft_step}
