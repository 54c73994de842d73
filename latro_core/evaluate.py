"""Evaluation: zero-shot accuracy (greedy and maj@k), intervals, self-evaluation AUROC, answer NLL.

``latro evaluate`` (:func:`run_evaluation`) makes two generation passes over a task split:

- greedy (T = 0), one answer per question: the "GD" column of the paper's Table 2;
- K samples per question at temperature T (= 1); majority vote over the first k' samples gives
  maj@k' for k' = 1, 2, 4, ..., K (one pass serves every k' <= K).

Each sampled rationale z (cut at the answer template, as in training) is scored with the model's
own self-reward  log πθ(y|x⊕z)  for the GOLD answer y; the AUROC of that score at separating
samples whose extracted answer is right from wrong measures how well the model "evaluates itself".

Outputs (``out`` folder): ``predictions.jsonl`` (one line per question) and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .provenance import command_line, git_commit, portable
from .checkpoint import hold_folder
from .errors import ConfigError, writing
from .stats import accuracy_stats, auroc, bootstrap_interval, mean_se
from .logprobs import pack, sequence_logprobs
from .rollout import eval_mode, sample_rationales

SUMMARY_KIND = "latro-evaluation"   # marks summary.json files written by run_evaluation
EMBEDDED_LABEL = "SmolLM2-135M-Instruct"


# ============================================================================ generation

def generate_answers(model, tokenizer, task, examples, *, k: int = 1, temperature: float = 0.0,
                     max_new_tokens: int = 128, direct: bool = False, batch_questions: int = 16,
                     generator=None, progress: bool = False):
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
                              keep_going_after_stop=True, generator=generator)
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


def _per_question(rolls) -> list[dict]:
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

    Returns {condition: {"mean", "se", "n"}} (se: standard error of the mean over answers).
    """
    tok = tokenizer
    xs = [_ids(tok, task.prompt(ex, tok, direct=direct)) for ex in examples]

    def nll(prompts, zs, answers):
        return (-answer_logprobs(model, tok, prompts, zs, answers, batch_size=batch_size)).tolist()

    out = {"no_rationale": mean_se(nll(xs, [[] for _ in xs], [task.answer_ids(ex, tok) for ex in examples]))}
    gold = [(i, _ids(tok, examples[i].rationale)) for i, ex in enumerate(examples) if ex.rationale]
    if gold:
        out["gold_rationale"] = mean_se(nll([xs[i] for i, _ in gold], [z for _, z in gold],
                                            [task.answer_ids(examples[i], tok, z) for i, z in gold]))
    if rationales is not None:
        rows = [(i, z if isinstance(z, list) else _ids(tok, z), bool(ok))
                for i, pairs in enumerate(rationales) for z, ok in pairs]
        values = nll([xs[i] for i, _, _ in rows], [z for _, z, _ in rows],
                     [task.answer_ids(examples[i], tok, z) for i, z, _ in rows])
        out["own_correct"] = mean_se([v for v, (_, _, ok) in zip(values, rows) if ok])
        out["own_wrong"] = mean_se([v for v, (_, _, ok) in zip(values, rows) if not ok])
    return out


# ============================================================================ run_evaluation

@dataclass
class EvalConfig:
    """``latro evaluate``: greedy and maj@k accuracy, self-evaluation AUROC, answer NLL."""

    model: str | None = None          # hub id, folder (runs/x/final, runs/x/checkpoint/model), .gguf; None: embedded
    adapter: str | None = None        # a saved peft (LoRA) adapter folder on top of ``model``
    task: str = "arithmetic"
    split: str = "test"
    data_dir: str | None = None
    limit: int | None = None          # first N questions after a shuffle seeded by subset_seed
    subset_seed: int = 0              # fixed by default so every model sees the same questions
    max_new_tokens: int = 256         # L
    greedy: bool = True               # the greedy (GD) pass
    k: int = 8                        # samples per question for maj@k (0: no sampling pass)
    temperature: float = 1.0          # T of the sampling pass
    seed: int = 0                     # sampling seed (torch.Generator)
    batch_questions: int = 16         # questions per generation batch
    score_batch: int = 16             # samples per scoring forward pass
    direct: bool = False              # direct-answer prompt (ARC SFT models)
    dtype: str = "fp32"
    device: str = "auto"
    out: str | None = None            # default runs/eval/<name>
    name: str | None = None           # default <run or model>-<task>-<split>[-direct]
    progress: bool = True
    auroc: bool = True                # self-reward scores and their AUROC
    nll: bool = False                 # Figure 2 answer NLLs (summary["answer_nll"])
    method: str | None = None         # base|sft|rft|latro; None: from the run's config.json, else "base"
    model_label: str | None = None    # table row label; None: the base model's name
    train_seed: int | None = None     # None: from the run's config.json
    task_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.max_new_tokens < 1 or self.k < 0 or self.batch_questions < 1 or self.score_batch < 1:
            raise ConfigError(f"need max_new_tokens >= 1, k >= 0, batch_questions >= 1, score_batch >= 1; got "
                              f"{self.max_new_tokens}, {self.k}, {self.batch_questions}, {self.score_batch}")
        if not self.greedy and self.k == 0:
            raise ConfigError("nothing to evaluate: greedy=false and k=0; enable one of them.")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_config(path: str | None) -> dict | None:
    """The training config (TrainConfig as a dict) of the run a model folder came from, or None.

    Looks in the folder and up to two parents for ``trainer.json`` (a checkpoint) or a
    ``config.json`` holding a "method" (a run's folder): runs/x/final, runs/x/checkpoint/model.
    """
    if not path or not Path(path).is_dir():
        return None
    p = Path(path).resolve()
    for folder in (p, p.parent, p.parent.parent):
        if (t := _read_json(folder / "trainer.json")) and isinstance(t.get("config"), dict):
            return t["config"]
        if (c := _read_json(folder / "config.json")) and "method" in c:
            return c
    return None


def model_name_label(name: str | None) -> str:
    """A short label for a model name: embedded → SmolLM2-135M-Instruct, "org/x" → x, a file → its stem."""
    if not name or name == "embedded":
        return EMBEDDED_LABEL
    p = Path(name)
    return p.stem if p.suffix.lower() == ".gguf" else p.name


def resolve_model(model: str | None, adapter: str | None = None) -> tuple[str | None, str | None, dict | None]:
    """(base model, adapter, run config). A folder holding only a peft adapter (LoRA run output)
    becomes the adapter, on top of the run's base model (its config.json ``model``, else embedded)."""
    cfg = run_config(model) or run_config(adapter)
    if adapter is None and model and Path(model).is_dir() and (Path(model) / "adapter_config.json").exists() \
            and not (Path(model) / "config.json").exists():
        return (cfg or {}).get("model"), model, cfg
    return model, adapter, cfg


def _run_name(model: str | None, adapter: str | None) -> str | None:
    """Name of the run folder that produced a model (runs/x/final → x, runs/x/checkpoint/model → x)."""
    path = adapter or model
    if not path or not Path(path).is_dir():
        return None
    p = Path(path).resolve()
    for folder in (p, p.parent, p.parent.parent):
        if (folder / "trainer.json").exists():
            continue
        if (c := _read_json(folder / "config.json")) and "method" in c:
            return folder.name
    return p.name


def _jsonable(x):
    """nan/inf → None, tensors/numpy → Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, torch.Tensor)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _self_eval(model, tok, task, examples, samples, correct, score_batch) -> tuple[list[list[float]], dict]:
    """Self-reward log πθ(y_gold|x⊕z) of every sampled rationale, and its AUROC for right vs wrong."""
    rows = [(q, j) for q, s in enumerate(samples) for j in range(len(s["rationale_ids"]))]
    scores = answer_logprobs(model, tok, [samples[q]["prompt_ids"] for q, _ in rows],
                             [samples[q]["rationale_ids"][j] for q, j in rows],
                             [task.answer_ids(examples[q], tok, samples[q]["rationale_ids"][j]) for q, j in rows],
                             batch_size=score_batch).tolist()
    labels = [correct[q][j] for q, j in rows]
    per_q = [[0.0] * len(s["rationale_ids"]) for s in samples]
    for (q, j), v in zip(rows, scores):
        per_q[q][j] = v
    data = np.column_stack([scores, labels]) if rows else np.zeros((0, 2))
    stats = {"auroc": auroc(scores, labels),
             "auroc_ci95": list(bootstrap_interval(data, n_boot=500, stat=lambda a: auroc(a[:, 0], a[:, 1] > 0.5))),
             "n_samples": len(rows), "n_correct": int(sum(labels)),
             "mean_self_reward_correct": mean_se([v for v, ok in zip(scores, labels) if ok]),
             "mean_self_reward_wrong": mean_se([v for v, ok in zip(scores, labels) if not ok])}
    return per_q, stats


def run_evaluation(cfg: EvalConfig, model=None, tokenizer=None) -> dict:
    """Evaluate a model on ``cfg.task``/``cfg.split``; write predictions.jsonl and summary.json
    to ``cfg.out`` and return the summary. ``model``/``tokenizer`` may be passed in (notebooks,
    tests); otherwise ``cfg.model`` (+ ``cfg.adapter``) is loaded."""
    from .models import load_model
    from .tasks import load_task

    cfg.validate()
    t0 = time.time()
    base, adapter, train_cfg = resolve_model(cfg.model, cfg.adapter)
    method = cfg.method or (train_cfg or {}).get("method") or "base"
    label = cfg.model_label or model_name_label(train_cfg.get("model") if train_cfg else base)
    train_seed = cfg.train_seed if cfg.train_seed is not None else (train_cfg or {}).get("seed")
    task = load_task(cfg.task, cfg.split, data_dir=cfg.data_dir, **cfg.task_kwargs)
    if cfg.limit is not None:
        task = task.subset(cfg.limit, seed=cfg.subset_seed)
    examples = list(task)
    if not examples:
        raise ConfigError(f"task {task.name} split {cfg.split} has no questions (limit={cfg.limit}).")
    name = cfg.name or "-".join([_run_name(cfg.model, adapter) or label, task.name, cfg.split]
                                + (["direct"] if cfg.direct else []))
    out = Path(cfg.out or Path("runs") / "eval" / name)
    lock = hold_folder(out, "--out")     # one evaluation at a time into a folder
    try:
        if model is None:
            model, tokenizer = load_model(base, dtype=cfg.dtype, device=cfg.device, adapter=adapter)
        tok = tokenizer
        torch.manual_seed(cfg.seed)
        gen_kw = dict(max_new_tokens=cfg.max_new_tokens, direct=cfg.direct, batch_questions=cfg.batch_questions,
                      progress=cfg.progress)

        summary = {"kind": SUMMARY_KIND, "name": name, "model": cfg.model, "adapter": adapter, "base_model": base,
                   "model_label": label, "method": method, "train_seed": train_seed, "seed": cfg.seed,
                   "task": task.name, "split": cfg.split, "n": len(examples), "direct": cfg.direct,
                   "max_new_tokens": cfg.max_new_tokens, "k": cfg.k, "temperature": cfg.temperature}
        records = [{"id": ex.id, "prompt": task.prompt(ex, tok, direct=cfg.direct), "gold": ex.answer,
                    **({"gold_label": ex.label} if ex.label else {})} for ex in examples]

        if cfg.greedy:
            summary["greedy"] = _greedy_pass(model, tok, task, examples, records, gen_kw)
        scores = correct = None
        if cfg.k > 0:
            sampled, scores, correct = _sampling_pass(cfg, model, tok, task, examples, records, gen_kw)
            summary.update(sampled)
        if cfg.nll:
            summary["answer_nll"] = answer_nll(model, tok, task, examples, direct=cfg.direct, batch_size=cfg.score_batch)
            if cfg.k > 0:  # own rationales: −(self-reward) already computed above
                flat_s = [(-v, c) for sc, cs in zip(scores, correct) for v, c in zip(sc, cs)]
                summary["answer_nll"]["own_correct"] = mean_se([v for v, c in flat_s if c])
                summary["answer_nll"]["own_wrong"] = mean_se([v for v, c in flat_s if not c])

        summary.update(time_s=round(time.time() - t0, 2), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       argv=list(sys.argv), command=command_line("evaluate", cfg), git_commit=git_commit(),
                       config=asdict(cfg))
        summary = portable(_jsonable(summary))     # no machine paths in what is written
        with writing(f"the evaluation's results to {out}", "nothing else was changed: free space (or fix the folder's "
                     "permissions) and run the evaluation again"):
            with open(out / "predictions.jsonl", "w") as f:
                for rec in records:
                    f.write(json.dumps(_jsonable(rec)) + "\n")
            (out / "summary.json").write_text(json.dumps(summary, indent=1))
        summary["out"] = str(out)
        return summary
    finally:
        lock.close()


def _greedy_pass(model, tok, task, examples, records, gen_kw) -> dict:
    """Greedy decoding of every question: accuracy (with its interval) and the fraction cut at L;
    each record gets its "greedy" prediction."""
    rolls, preds = generate_answers(model, tok, task, examples, k=1, temperature=0.0, **gen_kw)
    flat = _per_question(rolls)
    ok = [task.is_correct(p[0], ex) for p, ex in zip(preds, examples)]
    for rec, f, p, c in zip(records, flat, preds, ok):
        rec["greedy"] = {"text": f["texts"][0], "pred": p[0], "correct": c, "finish": f["finish"][0]}
    return {**accuracy_stats(ok), "frac_truncated": float(np.mean([f["finish"][0] == "length" for f in flat]))}


def _sampling_pass(cfg, model, tok, task, examples, records, gen_kw):
    """``cfg.k`` samples per question at ``cfg.temperature``: maj@k for every k up to cfg.k, the
    samples' accuracy and truncation, the self-evaluation (with ``auroc`` or ``nll``); each record
    gets its samples and majority vote. Returns (those summary entries, self-rewards per question or
    None, correctness per sample)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed)
    rolls, preds = generate_answers(model, tok, task, examples, k=cfg.k, temperature=cfg.temperature,
                                    generator=g, **gen_kw)
    samples = _per_question(rolls)
    correct = [[task.is_correct(p, ex) for p in ps] for ps, ex in zip(preds, examples)]
    summary = {"maj_at_k": {str(k): accuracy_stats(maj_correct(preds, examples, task, k)) for k in k_values(cfg.k)},
               "sample_accuracy": accuracy_stats([c for cs in correct for c in cs]),
               "samples_frac_truncated": float(np.mean([f == "length" for s in samples for f in s["finish"]]))}
    scores = None
    if cfg.auroc or cfg.nll:
        scores, summary["self_eval"] = _self_eval(model, tok, task, examples, samples, correct, cfg.score_batch)
    for i, (rec, s, ps, cs) in enumerate(zip(records, samples, preds, correct)):
        rec["maj_pred"] = majority_vote(ps)
        rec["maj_correct"] = bool(task.is_correct(rec["maj_pred"], examples[i]))     # maj@k, k = cfg.k
        rec["samples"] = [{"rationale": s["rationales"][j], "text": s["texts"][j], "pred": ps[j],
                           "correct": cs[j], "finish": s["finish"][j],
                           **({"self_reward": scores[i][j]} if scores is not None else {})}
                          for j in range(cfg.k)]
    return summary, scores, correct
