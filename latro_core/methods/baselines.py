"""The two baselines' steps: supervised fine-tuning on the data set's gold rationale and answer (SFT),
and rejection sampling (STaR/RFT): fine-tune on the sampled rationales whose answer is right."""

from __future__ import annotations

import time

import torch

from .step_io import StepInputs, StepOutput


def sft_step(inp: StepInputs) -> StepOutput:
    """Fine-tune on x ⊕ gold rationale ⊕ answer (ARC: x ⊕ answer, the direct prompt)."""
    tok, task = inp.policy.tokenizer, inp.task
    prompts = [tok(task.prompt(q, tok, direct=task.sft_direct), add_special_tokens=False)["input_ids"]
               for q in inp.questions]
    targets = [tok(task.sft_target(q, tok), add_special_tokens=False)["input_ids"] for q in inp.questions]
    return StepOutput(fine_tune(inp, prompts, targets))


def rft_step(inp: StepInputs) -> StepOutput:
    """Rejection sampling (STaR/RFT): sample K rationales, keep those whose answer is right,
    fine-tune on x ⊕ z ⊕ "The answer is y." (skip the update when none is right)."""
    k, tok, task, procs = inp.config.k, inp.policy.tokenizer, inp.task, inp.processes
    t_start = time.time()
    rollout = inp.policy.sample(inp.step, inp.first_question, inp.questions, task, keep_going_after_stop=True)
    t_sample = time.time() - t_start
    prompts, targets = [], []
    for i, text in enumerate(rollout.full_texts):
        question = inp.questions[i // k]
        if task.is_correct(task.extract_answer(text, question), question):
            prompts.append(rollout.prompt_ids[i])
            targets.append(rollout.rationale_ids[i] + task.answer_ids(question, tok, rollout.rationale_ids[i]))
    kept = procs.gather(torch.tensor([float(len(prompts))], device=procs.device)).sum()
    metrics = {"kept": kept, "sample_s": t_sample, "samples": float(len(rollout.full_texts) * procs.num_processes)}
    if prompts:
        metrics.update(fine_tune(inp, prompts, targets))
    return StepOutput(metrics)


def fine_tune(inp: StepInputs, prompts: list[list[int]], targets: list[list[int]]) -> dict:
    """Backward of −mean over samples of (1/|t|) log π(t|x), the token-averaged NLL of the targets,
    in micro-batches; returns {"sft_loss", "samples"}."""
    procs, micro = inp.processes, inp.config.micro_batch
    n_global = len(prompts) * procs.num_processes
    losses = []
    for s in range(0, len(prompts), micro):
        xs, ts = prompts[s:s + micro], targets[s:s + micro]
        batch = inp.policy.pack(xs, [[] for _ in xs], ts)
        with procs.sync(s + micro >= len(prompts)):
            _, logp_t = inp.policy.score(batch)
            # −(1/|t|) log π(t|x), (n,)
            nll = -logp_t / batch.y_mask.sum(1).clamp(min=1)
            procs.backward(nll.sum() / n_global * procs.num_processes, step=inp.step)
        losses.append(nll.detach())
    return {"sft_loss": procs.gather(torch.cat(losses)).mean(), "samples": float(n_global)}
