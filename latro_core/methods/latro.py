"""LaTRO's optimizer step (the paper's Eq. 4), read top-down in numbered stages:

    1. sample      z_k ~ πθ(·|x) at T, K per question                       (policy.sample)
    2. score       log π_T,θ(z_k|x), log πθ(y|x⊕z_k) with gradients; log π_T,0(z_k|x) without
    3. reward      R_k and the direct term's weight w_k                     (objective.REWARDS)
    4. advantages  r_k = R_k − β·log(πθ(z_k|x)/π0(z_k|x)), cut rationales penalised,
                   A_k = r_k − 1/(K−1) Σ_{j≠k} r_j                          (RLOO)
                   + the reward's own advantages (the K-sample bound's VIMCO term; else 0)
    5. loss        −mean_k(A_k·log πθ(z_k|x)) − mean_k(w_k·log πθ(y|x⊕z_k))
    6. backward    per micro-batch of whole questions, gradients synchronised at the last

N = Q·K samples on this process (question-major: sample i answers question i // K), n of them in a
micro-batch. The clipped AdamW step that follows is the Trainer's, the same for every method.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from ..errors import ConfigError
from ..objective import (RewardInput, get_reward, latro_loss, penalize_truncated, rloo_advantages,
                         self_reward)
from .step_io import StepInputs, StepOutput


def latro_step(inp: StepInputs) -> StepOutput:
    """One LaTRO step's sampling, losses and backward passes; returns its metrics and sample records."""
    cfg, policy, procs, k = inp.config, inp.policy, inp.processes, inp.config.k
    reward = get_reward(cfg.reward)
    t_start = time.time()
    # 1. sample: K rationales per question (on past the answer template when the reward reads ŷ)
    rollout = policy.sample(inp.step, inp.first_question, inp.questions, inp.task,
                            keep_going_after_stop=reward.own_answer)
    n_local, t_sampled = len(rollout.rationale_ids), time.time()
    n_global = n_local * procs.num_processes
    # 2. score, part 1: x⊕z⊕y packed per micro-batch; log π_T,0(z|x) (n,) each, no gradients (None: no π0)
    slices, batches = micro_batches(inp, rollout, reward.own_answer)
    ref_logp_z = [policy.reference_logp_z(b) for b in batches]
    # the "batch_mean" rule's mean reward over the whole step (None: each micro-batch's own)
    step_mean = step_mean_reward(inp, rollout, slices, batches, ref_logp_z)
    kept = defaultdict(list)
    for rows, batch, ref in zip(slices, batches, ref_logp_z):
        with procs.sync(rows.stop >= n_local):
            # 2. score, part 2: log π_T,θ(z|x), log πθ(y|x⊕z), (n,) each, with gradients
            logp_z, logp_y = policy.score(batch)
            # 3. reward: R_k (n,) and w_k (a float or (n,))
            answer_reward = reward.function(reward_input(inp, rollout, rows, batch, logp_y))
            # 4. advantages: r_k = R_k − β·log(πθ(z_k|x)/π0(z_k|x)), penalised where cut at L, (n,)
            r = penalize_truncated(self_reward(answer_reward.value, logp_z, ref, cfg.beta),
                                   rollout.truncated[rows], cfg.truncation, cfg.gamma, step_mean)
            #    A_k = r_k − 1/(K−1) Σ_{j≠k} r_j per question, + the reward's own advantages (0 for most), (n,)
            adv = rloo_advantages(r.view(-1, k)).view(-1) + answer_reward.advantages
            # 5. loss: −mean(A·log πθ(z|x)) − mean(w·log πθ(y|x⊕z)), a scalar; the score term covers
            #    z⊕ŷ when the answer scored is the model's own
            action_logp = logp_z + logp_y if reward.own_answer else logp_z
            loss, terms = latro_loss(action_logp, logp_y, adv, answer_reward.direct_weight)
            # 6. backward, scaled so that the accumulated, process-averaged gradient is the mean over N
            procs.backward(loss * ((rows.stop - rows.start) / n_global) * procs.num_processes, step=inp.step,
                           reward=r)
        kl = logp_z.detach() - ref if ref is not None else torch.zeros_like(r)
        for name, value in (("reward", r), ("logp_y", logp_y.detach()), ("kl", kl), ("adv", adv),
                            ("policy_loss", terms["policy_loss"].expand(len(r))),
                            ("answer_loss", terms["answer_loss"].expand(len(r)))):
            kept[name].append(value)
    timing = {"sample_s": t_sampled - t_start, "update_s": time.time() - t_sampled, "samples": float(n_global)}
    return StepOutput({**step_metrics(inp, kept, rollout), **timing}, sample_records(inp, rollout, kept))


def micro_batches(inp: StepInputs, rollout, own_answer: bool) -> tuple[list[slice], list]:
    """The step's samples cut into micro-batches of whole questions (``micro_batch // k`` each): their
    rows of the rollout and their packed x⊕z⊕y batches, y the gold answer, or with ``own_answer`` the
    model's continuation ŷ after z (the answer template and what it wrote after it, up to EOS or L)."""
    k, tok = inp.config.k, inp.policy.tokenizer

    def answer(i):
        if own_answer:
            return rollout.generated_ids[i][len(rollout.rationale_ids[i]):]
        return inp.task.answer_ids(inp.questions[i // k], tok, rollout.rationale_ids[i])

    per_micro = inp.config.micro_batch // k
    n_questions = len(inp.questions)
    slices = [slice(q0 * k, min(n_questions, q0 + per_micro) * k) for q0 in range(0, n_questions, per_micro)]
    batches = [inp.policy.pack(rollout.prompt_ids[rows], rollout.rationale_ids[rows],
                               [answer(i) for i in range(rows.start, rows.stop)]) for rows in slices]
    return slices, batches


def reward_input(inp: StepInputs, rollout, rows: slice, batch, logp_y: torch.Tensor) -> RewardInput:
    """A micro-batch's :class:`~latro_core.objective.RewardInput`: log πθ(y|x⊕z), the rollout's rows,
    their questions, and the extras, each computed when a reward first reads it."""
    k, policy = inp.config.k, inp.policy

    def answer_right():          # the checker on the model's own answer after z (a rollout that went on)
        return torch.tensor([inp.task.is_correct(inp.task.extract_answer(rollout.full_texts[i], inp.questions[i // k]),
                                                 inp.questions[i // k]) for i in range(rows.start, rows.stop)],
                            device=inp.processes.device)

    def answer_prob(packed):         # extra no-grad passes, outside the sharded root module
        if inp.processes.sharded:
            raise ConfigError(f"reward={inp.config.reward!r} scores y in extra passes outside the sharded root "
                              f"module; train it unsharded.")
        return policy.answer_probability(packed)

    def without_z():                 # y right after x: the same answers, packed with an empty z
        return policy.pack(rollout.prompt_ids[rows], [[] for _ in range(rows.start, rows.stop)],
                           [inp.task.answer_ids(inp.questions[i // k], policy.tokenizer, [])
                            for i in range(rows.start, rows.stop)])

    def answer_logp_without_z():     # log πθ(y|x), no gradients (the information gain's fixed baseline)
        with torch.no_grad():
            return policy.score(without_z())[1]

    extras = LazyExtras({"answer_right": answer_right, "answer_prob": lambda: answer_prob(batch),
                         "answer_prob_without_z": lambda: answer_prob(without_z()),
                         "answer_logp_without_z": answer_logp_without_z})
    return RewardInput(logp_y.detach(), inp.config.lam, extras, rollout, rows, inp.questions, inp.task, k)


class LazyExtras(dict):
    """A mapping whose values are computed when first read: ``{name: () -> tensor}``."""

    def __init__(self, compute: dict):
        super().__init__()
        self.compute = compute

    def __missing__(self, name: str):
        if name not in self.compute:
            raise KeyError(f"{name!r} is not an extra the step computes; known: {', '.join(self.compute)}")
        self[name] = value = self.compute[name]()
        return value


@torch.no_grad()
def step_mean_reward(inp: StepInputs, rollout, slices, batches, ref_logp_z) -> torch.Tensor | None:
    """The mean reward r over the whole step (all micro-batches, all processes), which the "batch_mean"
    truncation rule needs before any micro-batch's advantages. None (each call of
    ``penalize_truncated`` then uses its own rewards) when the step is one micro-batch on one process,
    the rule is another, or nothing is cut here or elsewhere; else one extra no-grad policy forward
    per micro-batch, with the run's own reward, so that the rule does not depend on ``micro_batch``."""
    cfg, procs = inp.config, inp.processes
    if cfg.truncation != "batch_mean" or (len(batches) == 1 and procs.num_processes == 1):
        return None
    if not bool(procs.gather(rollout.truncated.any().float()[None].to(procs.device)).sum()):
        return None
    reward, rewards = get_reward(cfg.reward), []
    for rows, batch, ref in zip(slices, batches, ref_logp_z):
        logp_z, logp_y = inp.policy.score(batch)
        answer_reward = reward.function(reward_input(inp, rollout, rows, batch, logp_y))
        rewards.append(self_reward(answer_reward.value, logp_z, ref, cfg.beta))
    return procs.gather(torch.cat(rewards).float()).mean()


def step_metrics(inp: StepInputs, kept: dict, rollout) -> dict:
    """The step's means over every sample of every process: reward, log π(y|x⊕z), KL, advantage
    spread, rationale length, fraction cut at L, the two loss terms, questions with equal rewards."""
    procs = inp.processes
    cat = {name: procs.gather(torch.cat(values).float()) for name, values in kept.items()}
    truncated = procs.gather(rollout.truncated.float().to(procs.device))
    lengths = procs.gather(rollout.lengths.to(procs.device))
    rewards_by_question = cat["reward"].view(-1, inp.config.k)      # (Q, K)
    return {"reward_mean": cat["reward"].mean(), "reward_std": cat["reward"].std(),
            "logp_y_mean": cat["logp_y"].mean(), "kl_mean": cat["kl"].mean(),
            "adv_std": cat["adv"].std(), "rationale_len": lengths.mean(), "frac_truncated": truncated.mean(),
            "policy_loss": cat["policy_loss"].mean(), "answer_loss": cat["answer_loss"].mean(),
            # questions whose K rewards are all equal: RLOO advantages 0, no learning signal
            "frac_equal_rewards": (rewards_by_question == rewards_by_question[:, :1]).all(1).float().mean()}


def sample_records(inp: StepInputs, rollout, kept: dict) -> list[dict]:
    """samples.jsonl rows: the K rationales of the step's first ``log_samples`` questions, with their
    reward (after the truncation penalty), log p(y|x⊕z), log πθ(z|x) − log π0(z|x) and advantage
    (the main process writes them)."""
    cfg = inp.config
    if not cfg.log_samples or not inp.processes.is_main_process:
        return []
    values = {name: torch.cat(kept[name]) for name in ("reward", "logp_y", "kl", "adv")}
    records = []
    for i in range(min(cfg.log_samples, len(inp.questions)) * cfg.k):
        question = inp.questions[i // cfg.k]
        records.append({"step": inp.step + 1, "id": question.id, "answer": question.answer, "sample": i % cfg.k,
                        "rationale": rollout.texts[i], "length": len(rollout.rationale_ids[i]),
                        "truncated": bool(rollout.truncated[i]), "decoder": rollout.decoder,
                        **{name: round(float(v[i]), 4) for name, v in values.items()}})
    return records
