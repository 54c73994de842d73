"""Answers a model gives and how likely it finds the gold one: the measures both training (its
periodic validation) and ``latro evaluate`` (:mod:`latro_core.evaluate`) apply to a model.

- :func:`generate_answers` / :func:`greedy_report`: k completions per question (greedy at T = 0),
  the extracted answers, accuracy beside how many rationales finished;
- :func:`majority_vote` / :func:`maj_at_k`: CoT-SC's vote over the first k of K samples;
- :func:`answer_logprobs` / :func:`answer_nll`: log πθ(y|x⊕z) of the gold answer (Figure 2).
"""

from __future__ import annotations

from collections import Counter

import torch

from .errors import ConfigError
from .logprobs import pack, sequence_logprobs
from .rollout import eval_mode, sample_rationales
from .stats import clustered_mean_interval, mean_se


# ============================================================================ generation

def generate_answers(model, tokenizer, task, examples, *, k: int = 1, temperature: float = 0.0,
                     max_new_tokens: int = 128, direct: bool = False, batch_questions: int = 16,
                     generator=None, progress: bool = False, sampler: str = "inverse_cdf", decoder: str = "auto"):
    """Generate k completions per example; returns (rollout list, predictions per example (list of k))."""
    rolls, preds = [], []
    it = range(0, len(examples), batch_questions)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"generate {task.name} (k={k}, T={temperature})", unit="batch")
    for s in it:
        chunk = examples[s:s + batch_questions]
        r = sample_rationales(model, tokenizer, [task.prompt(e, tokenizer, direct=direct) for e in chunk], k=k,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              stop_strings=task.stop_strings, keep_going_after_stop=True, generator=generator,
                              sampler=sampler, decoder=decoder)
        rolls.append(r)
        for i, e in enumerate(chunk):
            preds.append([task.extract_answer(t, e) for t in r.full_texts[i * k:(i + 1) * k]])
    return rolls, preds


# an evaluation's budget beyond the rationale's L: room for "The answer is …" after it
ANSWER_TOKENS = 32


def greedy_report(model, tokenizer, task, *, max_new_tokens: int = 128, direct: bool = False,
                  progress: bool = False, batch_questions: int = 16) -> dict:
    """Greedy decoding on every question of ``task``: {"accuracy", "n", "frac_truncated" (no
    EOS or answer template within ``max_new_tokens``), "mean_length" (rationale tokens),
    "accuracy_finished" (among the rationales that finished; None when none did)}. Accuracy
    beside finishing and length shows whether a gain is format (stopping, the template) or
    correct answers."""
    exs = list(task)
    rolls, preds = generate_answers(model, tokenizer, task, exs, max_new_tokens=max_new_tokens, direct=direct,
                                    progress=progress, batch_questions=batch_questions)
    right = [task.is_correct(p[0], e) for p, e in zip(preds, exs)]
    cut = [bool(t) for r in rolls for t in r.truncated]
    lengths = [len(z) for r in rolls for z in r.rationale_ids]
    finished = [ok for ok, c in zip(right, cut) if not c]
    n = max(1, len(exs))
    return {"accuracy": sum(right) / n, "n": len(exs), "frac_truncated": sum(cut) / n,
            "mean_length": sum(lengths) / n, "accuracy_finished": sum(finished) / len(finished) if finished else None}


def per_question(rolls) -> list[dict]:
    """Flatten the rollouts of :func:`generate_answers` into one dict of k-lists per question."""
    out = []
    for r in rolls:
        for q in range(len(r.full_texts) // r.k):
            sl = slice(q * r.k, (q + 1) * r.k)
            out.append({"prompt_ids": r.prompt_ids[sl.start], "rationale_ids": r.rationale_ids[sl],
                        "rationales": r.texts[sl], "texts": r.full_texts[sl], "finish": r.finish[sl]})
    return out


# ============================================================================ voting

def majority_vote(preds: list[str | None]) -> str | None:
    """The most frequent answer among ``preds``; None answers (nothing extracted) are ignored.

    Ties are broken deterministically: among the tied answers, the one that appeared FIRST in
    ``preds`` wins (so maj@1 is the first sample's answer). All None (or empty): None.
    """
    counts = Counter(p for p in preds if p is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(p for p in preds if p is not None and counts[p] == best)


def maj_correct(preds_per_question, examples, task, k: int) -> list[bool]:
    """Per question: is the majority vote over its first ``k`` sampled answers correct?"""
    if any(len(p) < k for p in preds_per_question):
        raise ConfigError(f"maj@{k} needs at least {k} samples per question, "
                          f"got {min(len(p) for p in preds_per_question)}")
    return [task.is_correct(majority_vote(list(p[:k])), ex) for p, ex in zip(preds_per_question, examples)]


def maj_at_k(preds_per_question, examples, task, ks) -> dict[int, float]:
    """{k: maj@k accuracy} for each k in ``ks``: the fraction of questions whose majority vote
    (:func:`majority_vote`) over the first k samples is correct. Using the first k of K i.i.d.
    samples gives an unbiased single draw of maj@k for every k <= K from one sampling pass."""
    n = max(1, len(examples))
    return {k: sum(maj_correct(preds_per_question, examples, task, k)) / n for k in ks}


def k_values(K: int) -> list[int]:
    """1, 2, 4, ... up to K, and K itself: the k' reported from one pass of K samples."""
    ks = [2 ** i for i in range(K.bit_length()) if 2 ** i <= K] if K > 0 else []
    return ks + ([K] if K > 0 and K not in ks else [])


# ============================================================================ scoring

def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()
def answer_logprobs(model, tokenizer, prompt_ids, rationale_ids, answer_ids, *,
                    batch_size: int = 16) -> torch.Tensor:
    """log πθ(y_i | x_i ⊕ z_i) = Σ_{t∈y_i} log πθ(y_t | x_i ⊕ z_i ⊕ y_<t) for every sample i.

    Lists of token ids, one per sample. No gradients; micro-batches of ``batch_size`` samples
    sorted by length (less padding). Returns an fp32 CPU tensor (N,).
    """
    n = len(prompt_ids)
    out = torch.zeros(n)
    if n == 0:
        return out
    device = next(model.parameters()).device
    order = sorted(range(n), key=lambda i: len(prompt_ids[i]) + len(rationale_ids[i]) + len(answer_ids[i]))
    with eval_mode(model):
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            batch = pack([prompt_ids[i] for i in idx], [rationale_ids[i] for i in idx],
                         [answer_ids[i] for i in idx], _pad_id(tokenizer)).to(device)
            out[idx] = sequence_logprobs(model, batch)[1].float().cpu()
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def nll_summary(values, questions) -> dict:
    """{"mean", "se", "n", "questions", "ci95"} of answer NLLs ``values`` (n,) whose rows belong to
    ``questions`` (n,): ci95 resamples questions, each keeping all its rows (the K samples of one
    question are not independent); nan with fewer than two questions."""
    values, questions = list(map(float, values)), list(questions)
    return {**mean_se(values), "questions": len(set(questions)),
            "ci95": list(clustered_mean_interval(values, questions))}


def answer_nll(model, tokenizer, task, examples, rationales=None, *, direct: bool = False,
               batch_size: int = 16) -> dict:
    """Figure 2 data: the NLL of the gold answer y = ``task.answer_target(ex)`` ("The answer is
    {gold}." + eos), summed over y's tokens,

        NLL(y | x ⊕ z) = −log πθ(y | x ⊕ z),

    averaged over answers, under these rationales z:

    - ``"no_rationale"``: z empty (y right after the prompt x);
    - ``"gold_rationale"``: z = the task's gold rationale ``ex.rationale`` (skipped when no example
      has one, e.g. ARC);
    - ``"own_correct"`` / ``"own_wrong"``: the model's own rationales, given as ``rationales``: per
      example a list of ``(z, is_correct)`` pairs, z a text or a list of token ids.

    Returns {condition: {"mean", "se", "n", "questions", "ci95"}} (:func:`nll_summary`): se the standard error of the mean over answers,
    ci95 a 95% bootstrap interval over questions (a question keeps all its rationales' answers: the
    K samples of one question are not independent).
    """
    tok = tokenizer
    xs = [_ids(tok, task.prompt(ex, tok, direct=direct)) for ex in examples]

    def nll(prompts, zs, answers):
        return (-answer_logprobs(model, tok, prompts, zs, answers, batch_size=batch_size)).tolist()

    out = {"no_rationale": nll_summary(nll(xs, [[] for _ in xs], [task.answer_ids(ex, tok) for ex in examples]),
                                   range(len(xs)))}
    gold = [(i, _ids(tok, examples[i].rationale)) for i, ex in enumerate(examples) if ex.rationale]
    if gold:
        out["gold_rationale"] = nll_summary(nll([xs[i] for i, _ in gold], [z for _, z in gold],
                                            [task.answer_ids(examples[i], tok, z) for i, z in gold]),
                                        [i for i, _ in gold])
    if rationales is not None:
        rows = [(i, z if isinstance(z, list) else _ids(tok, z), bool(ok))
                for i, pairs in enumerate(rationales) for z, ok in pairs]
        values = nll([xs[i] for i, _, _ in rows], [z for _, z, _ in rows],
                     [task.answer_ids(examples[i], tok, z) for i, z, _ in rows])
        for name, right in (("own_correct", True), ("own_wrong", False)):
            picked = [(v, i) for v, (i, _, ok) in zip(values, rows) if ok == right]
            out[name] = nll_summary([v for v, _ in picked], [i for _, i in picked])
    return out
