"""Evaluation: zero-shot accuracy (greedy and maj@k), intervals, self-evaluation AUROC, answer NLL."""

from __future__ import annotations

import torch

from .rollout import sample_rationales


def generate_answers(model, tokenizer, task, examples, *, k: int = 1, temperature: float = 0.0,
                     max_new_tokens: int = 128, direct: bool = False, batch_questions: int = 16,
                     generator=None, progress: bool = False):
    """Generate k completions per example; returns (rollout list, predictions per example (list of k))."""
    rolls, preds = [], []
    it = range(0, len(examples), batch_questions)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"generate {task.name}", unit="batch")
    for s in it:
        chunk = examples[s:s + batch_questions]
        r = sample_rationales(model, tokenizer, [task.prompt(e, tokenizer, direct=direct) for e in chunk], k=k,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              keep_going_after_stop=True, generator=generator)
        rolls.append(r)
        for i, e in enumerate(chunk):
            preds.append([task.extract_answer(t, e) for t in r.full_texts[i * k:(i + 1) * k]])
    return rolls, preds


def greedy_accuracy(model, tokenizer, task, *, max_new_tokens: int = 128, direct: bool = False,
                    progress: bool = False) -> float:
    """Fraction of ``task`` answered correctly with greedy decoding."""
    exs = list(task)
    _, preds = generate_answers(model, tokenizer, task, exs, max_new_tokens=max_new_tokens, direct=direct,
                                progress=progress)
    return sum(task.is_correct(p[0], e) for p, e in zip(preds, exs)) / max(1, len(exs))
