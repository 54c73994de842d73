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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .answers import (answer_logprobs, answer_nll, generate_answers, k_values, maj_correct, nll_summary,
                      majority_vote, per_question)
from .provenance import command_line, git_commit, portable
from .rollout import resolve_decoder
from .checkpoint import hold_folder
from .errors import ConfigError, json_fault, writing
from .stats import accuracy_stats, auroc, bootstrap_interval, mean_se

SUMMARY_KIND = "latro-evaluation"   # marks summary.json files written by run_evaluation
EMBEDDED_LABEL = "SmolLM2-135M-Instruct"


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
    sampler: str = "inverse_cdf"      # how the sampling pass draws a token: inverse_cdf | multinomial (rollout.SAMPLERS)
    decoder: str = "auto"             # whose decode step: auto | latro | transformers (rollout.DECODERS)
    batch_questions: int = 16         # questions per generation batch
    score_batch: int = 16             # samples per scoring forward pass
    direct: bool = False              # direct-answer prompt (ARC SFT models)
    dtype: str = "fp32"
    device: str = "auto"
    out: str | None = None            # default runs/eval/<name>
    overwrite: bool = False           # replace the results the out folder already holds (else: refused)
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
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _check_record(path: Path) -> None:
    """ConfigError naming ``path`` (line, byte offset) when the run record there is damaged: what
    trained the model would otherwise be misread as the base model."""
    fault = json_fault(path.read_bytes()) if path.is_file() else None
    if fault is not None:
        raise ConfigError(f"{path}, {fault}; it says which run trained this model: restore it from a copy "
                          f"(`latro train --resume` rewrites a run's config.json from its checkpoint), or "
                          f"delete it and pass --method and --train-seed.")


def run_config(path: str | None) -> dict | None:
    """The training config (TrainConfig as a dict) of the run a model folder came from, or None.

    Looks in the folder and up to two parents for ``trainer.json`` (a checkpoint) or a
    ``config.json`` holding a "method" (a run's folder): runs/x/final, runs/x/checkpoint/model.
    A damaged one on the way is a ConfigError (the model folder's own config.json is checked when
    the model loads).
    """
    if not path or not Path(path).is_dir():
        return None
    p = Path(path).resolve()
    for folder in (p, p.parent, p.parent.parent):
        _check_record(folder / "trainer.json")
        if folder != p:
            _check_record(folder / "config.json")
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
        _clear_out(out, cfg.overwrite)
        if model is None:
            model, tokenizer = load_model(base, dtype=cfg.dtype, device=cfg.device, adapter=adapter)
        tok = tokenizer
        torch.manual_seed(cfg.seed)
        gen_kw = dict(max_new_tokens=cfg.max_new_tokens, direct=cfg.direct, batch_questions=cfg.batch_questions,
                      progress=cfg.progress, sampler=cfg.sampler, decoder=cfg.decoder)

        summary = {"kind": SUMMARY_KIND, "name": name, "model": cfg.model, "adapter": adapter, "base_model": base,
                   "model_label": label, "method": method, "train_seed": train_seed, "seed": cfg.seed,
                   "task": task.name, "split": cfg.split, "n": len(examples), "direct": cfg.direct,
                   "max_new_tokens": cfg.max_new_tokens, "k": cfg.k, "temperature": cfg.temperature,
                   "sampler": cfg.sampler, "decoder": resolve_decoder(model, cfg.decoder)}
        records = [{"id": ex.id, "prompt": task.prompt(ex, tok, direct=cfg.direct), "gold": ex.answer,
                    **({"gold_label": ex.label} if ex.label else {})} for ex in examples]

        if cfg.greedy:
            summary["greedy"] = _greedy_pass(model, tok, task, examples, records, gen_kw)
        scores = correct = None
        if cfg.k > 0:
            sampled, scores, correct = _sampling_pass(cfg, model, tok, task, examples, records, gen_kw)
            summary.update(sampled)
        if cfg.nll:
            summary["answer_nll"] = _nll_pass(cfg, model, tok, task, examples, scores, correct)
        summary.update(time_s=round(time.time() - t0, 2), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       argv=list(sys.argv), command=command_line("evaluate", cfg), git_commit=git_commit(),
                       config=asdict(cfg))
        return _write_evaluation(out, portable(_jsonable(summary)), records)    # no machine paths in what is written
    finally:
        lock.close()


def _nll_pass(cfg: EvalConfig, model, tok, task, examples, scores, correct) -> dict:
    """Figure 2's answer NLLs: without a rationale, after the gold one, and (with samples) after the
    model's own right and wrong ones, whose NLL is −(the self-reward) the sampling pass computed."""
    nll = answer_nll(model, tok, task, examples, direct=cfg.direct, batch_size=cfg.score_batch)
    if cfg.k > 0:
        flat = [(-v, c, q) for q, (sc, cs) in enumerate(zip(scores, correct)) for v, c in zip(sc, cs)]
        for name, right in (("own_correct", True), ("own_wrong", False)):
            nll[name] = nll_summary([v for v, c, _ in flat if c == right], [q for _, c, q in flat if c == right])
    return nll


EVAL_FILES = ("summary.json", "predictions.jsonl")     # what an evaluation writes into its out folder


def _clear_out(out: Path, overwrite: bool) -> None:
    """An out folder that holds an evaluation's results: refused (nothing changed) unless ``overwrite``,
    which deletes them first, saying so in one line (an evaluation that then fails leaves none, never
    a mix of two evaluations)."""
    found = [name for name in EVAL_FILES if (out / name).exists()]
    if not found:
        return
    if not overwrite:
        raise ConfigError(f"{out} already holds an evaluation's results ({', '.join(found)}); nothing was changed: "
                          f"rerun with --overwrite (deletes them), or pick another --out.")
    print(f"latro: --overwrite deletes {', '.join(found)} in {out}", file=sys.stderr, flush=True)
    for name in found:
        (out / name).unlink()


def _write_evaluation(out: Path, summary: dict, records: list[dict]) -> dict:
    """predictions.jsonl (one line per question) and summary.json into ``out``; the summary, with "out"."""
    with writing(f"the evaluation's results to {out}", "nothing else was changed: free space (or fix the folder's "
                 "permissions) and run the evaluation again"):
        with open(out / "predictions.jsonl", "w") as f:
            for rec in records:
                f.write(json.dumps(_jsonable(rec)) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "out": str(out)}


def _greedy_pass(model, tok, task, examples, records, gen_kw) -> dict:
    """Greedy decoding of every question: accuracy (with its interval) and the fraction cut at L;
    each record gets its "greedy" prediction."""
    rolls, preds = generate_answers(model, tok, task, examples, k=1, temperature=0.0, **gen_kw)
    flat = per_question(rolls)
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
    samples = per_question(rolls)
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
