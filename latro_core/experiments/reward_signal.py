"""Is there a learning signal? The base model's self-reward, measured before any training.

LaTRO can only reinforce what its K samples contain: a question whose K rationales are all wrong,
or all cut at L, or whose self-reward does not rank the right ones higher, teaches nothing. For a
set of questions this samples K rationales at each temperature T (at the largest budget L_max; a
shorter budget L is read off the same samples: a rationale that ended by step L is the one a
budget-L run would have drawn, and one that did not is cut at its first L tokens) and measures

- right: the rationale's answer (after the template, else its last number) is the gold one;
- finished: it ended (EOS or a stop string) within L tokens; both: right and finished;
- the self-reward r(z) = log π0(y|x⊕z) (on the base model θ = θ0, so the KL term is 0; y is
  scored at T = 1 whatever T sampled z), and how well it ranks right above wrong rationales of
  the same question: AUROC_q = P(r⁺ > r⁻) within question q, averaged over the questions that have
  both, with a percentile bootstrap over those questions.

``latro signal`` runs one task difficulty per call and merges it into ``<out>.json``; the Markdown
report and the figure are rebuilt from that file every time (:func:`write_report`).
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..provenance import command_line, git_commit
from ..errors import ConfigError
from ..answers import ANSWER_TOKENS, answer_logprobs, greedy_report
from ..stats import auroc, bootstrap_interval, mean_se, wilson_interval
from ..rollout import sample_rationales

ANSWER_ROOM = 16     # tokens generated past L_max so that a rationale ending near L_max still writes its answer


@dataclass
class SignalConfig:
    """``latro signal``: the base model's self-reward signal on one task difficulty."""

    model: str | None = None           # hub id, folder, .gguf; None: the embedded SmolLM2-135M-Instruct
    task: str = "arithmetic"
    split: str = "train"               # the questions LaTRO would train on
    data_dir: str | None = None
    limit: int = 200                   # questions (first n of a seed-0 shuffle)
    k: int = 8                         # rationales per question
    temperatures: str = "1.0,0.7,0.5"  # comma-separated sampling temperatures
    budgets: str = "32,64,96"          # comma-separated L; sampled once at the largest
    difficulty: str = "default"        # this setting's label in the report
    task_kwargs: dict = field(default_factory=dict)   # arithmetic difficulty, e.g. {"steps": 2}
    greedy_limit: int = 200            # base greedy accuracy on this many validation questions (0: skip)
    batch_questions: int = 16          # questions per sampling batch (x k rows)
    seed: int = 0
    n_boot: int = 2000                 # bootstrap resamples (over questions)
    out: str = "results/self_reward_signal"         # <out>.json (merged across calls) and <out>.md
    figure: str = "figures/self_reward_signal.png"
    samples_dir: str = "runs/signal"   # every rationale with its reward, as JSONL, per difficulty and T
    dtype: str = "fp32"
    device: str = "auto"
    progress: bool = True
    report_only: bool = False          # only rebuild <out>.md and the figure from <out>.json

    def grid(self) -> tuple[list[float], list[int]]:
        """(temperatures, budgets) parsed and checked."""
        try:
            temps = [float(t) for t in str(self.temperatures).split(",") if t.strip()]
            budgets = sorted(int(b) for b in str(self.budgets).split(",") if b.strip())
        except ValueError:
            raise ConfigError(f"temperatures and budgets are comma-separated numbers, got "
                              f"{self.temperatures!r} and {self.budgets!r}") from None
        if not temps or not all(0 < t < 10 for t in temps):
            raise ConfigError(f"temperatures must be in (0, 10), got {self.temperatures!r}")
        if not budgets or budgets[0] < 1:
            raise ConfigError(f"budgets must be integers >= 1, got {self.budgets!r}")
        if self.k < 2 or self.limit < 1:
            raise ConfigError(f"need k >= 2 and limit >= 1, got k={self.k}, limit={self.limit}")
        return temps, budgets


def _cut(roll, i: int, L: int) -> tuple[list[int], str, bool]:
    """Sample i as a budget-L run would have it: (z token ids, the text its answer is read from, finished)."""
    end = roll.end_steps[i]
    if end is not None and end <= L:
        return roll.rationale_ids[i], roll.full_texts[i], True
    return roll.generated_ids[i][:L], None, False


def sample_and_score(model, tok, task, examples, *, k: int, temperature: float, budgets: list[int],
                     batch_questions: int = 16, seed: int = 0, progress: bool = False) -> list[dict]:
    """One record per (question, sample, budget L): {"q", "j", "L", "right", "finished", "reward",
    "length"}; reward = log π(y|x⊕z) of z as cut at L. Returns the records (question-major)."""
    L_max = max(budgets)
    recs, score_rows = [], {}
    it = range(0, len(examples), batch_questions)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"signal T={temperature}", unit="batch")
    for s in it:
        chunk = examples[s:s + batch_questions]
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + s + i) for i in range(len(chunk))]
        roll = sample_rationales(model, tok, [task.prompt(e, tok) for e in chunk], k=k,
                                 max_new_tokens=L_max + ANSWER_ROOM, temperature=temperature,
                                 stop_strings=task.stop_strings, keep_going_after_stop=True, generator=gens)
        for i in range(len(chunk) * k):
            q, ex = s + i // k, chunk[i // k]
            for L in budgets:
                z, text, finished = _cut(roll, i, L)
                text = text if text is not None else tok.decode(z, skip_special_tokens=True)
                key = (q, i % k, len(z), finished)
                if key not in score_rows:
                    score_rows[key] = (roll.prompt_ids[i], z, task.answer_ids(ex, tok, z))
                recs.append({"q": q, "j": i % k, "L": L, "finished": finished, "length": len(z),
                             "right": bool(task.is_correct(task.extract_answer(text, ex), ex)),
                             "text": text if L == L_max else None, "key": key})
    keys = list(score_rows)
    rewards = answer_logprobs(model, tok, *(list(c) for c in zip(*(score_rows[key] for key in keys))),
                              batch_size=64).tolist() if keys else []
    by_key = dict(zip(keys, rewards))
    for r in recs:
        r["reward"] = by_key[r.pop("key")]
    return recs


def signal_stats(recs: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Fractions right / finished / both, within-question AUROC of the reward for "right" (over all
    samples, and among finished ones), its bootstrap interval over questions, mean rewards."""
    n = len(recs)
    right = np.array([r["right"] for r in recs])
    fin = np.array([r["finished"] for r in recs])
    rew = np.array([r["reward"] for r in recs])
    by_q: dict[int, list[int]] = {}
    for i, r in enumerate(recs):
        by_q.setdefault(r["q"], []).append(i)

    def per_question(mask) -> list[float]:
        out = []
        for rows in by_q.values():
            rows = [i for i in rows if mask[i]]
            if 0 < right[rows].sum() < len(rows):
                out.append(auroc(rew[rows], right[rows]))
        return out

    out = {"n_samples": n, "n_questions": len(by_q),
           "frac_right": float(right.mean()), "frac_finished": float(fin.mean()),
           "frac_right_and_finished": float((right & fin).mean()),
           "frac_questions_with_right_finished": float(np.mean([(right[r] & fin[r]).any() for r in by_q.values()])),
           # the samples of one question are not independent: resample questions, each keeping its K
           "frac_right_and_finished_ci95": list(bootstrap_interval([float((right[r] & fin[r]).mean())
                                                                     for r in by_q.values()], n_boot=n_boot, seed=seed)),
           "frac_questions_all_finished_wrong_or_cut": float(np.mean([not (right[r] & fin[r]).any()
                                                                      for r in by_q.values()])),
           "mean_length_finished": float(np.mean([r["length"] for r in recs if r["finished"]])) if fin.any() else None,
           "reward_right": mean_se(rew[right]), "reward_wrong": mean_se(rew[~right]),
           "reward_finished": mean_se(rew[fin]), "reward_cut": mean_se(rew[~fin])}
    for name, mask in (("all", np.ones(n, bool)), ("finished", fin)):
        a = per_question(mask)
        out[f"auroc_{name}"] = {"mean": float(np.mean(a)) if a else None, "n_questions": len(a),
                                "ci95": list(bootstrap_interval(a, n_boot=n_boot, seed=seed)) if a else None}
    return out


def _merge(path: Path, entry: dict) -> dict:
    """<out>.json holds {"entries": [...]} keyed by (difficulty, T, L); ``entry``'s rows replace theirs."""
    data = json.loads(path.read_text()) if path.exists() else {"entries": []}
    new = {(e["difficulty"], e["temperature"], e["L"]) for e in entry["entries"]}
    data["entries"] = [e for e in data["entries"] if (e["difficulty"], e["temperature"], e["L"]) not in new]
    data["entries"] += entry["entries"]
    data.setdefault("greedy", {}).update(entry.get("greedy", {}))
    data.setdefault("commands", {}).update(entry["commands"])
    return data


def difficulty_slug(difficulty: str) -> str:
    """A file name for a difficulty label: "+" and "-" spelt out, so "1 step +, 2-12" and
    "1 step +-, 2-12" do not share one ("1_step_plus_2_12", "1_step_plus_minus_2_12")."""
    spelt = difficulty.replace("+", " plus ").replace(" -", " minus ").replace("-,", " minus,")
    return re.sub(r"[^A-Za-z0-9]+", "_", spelt).strip("_")


def run_signal(cfg: SignalConfig, model=None, tokenizer=None) -> dict:
    """Measure one difficulty at every (T, L) of ``cfg``; merge into ``<out>.json``, rewrite the report."""
    from ..models import load_model
    from ..tasks import load_task

    temps, budgets = cfg.grid()
    if cfg.report_only:
        return _report_only(cfg)
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    task = load_task(cfg.task, cfg.split, data_dir=cfg.data_dir, **cfg.task_kwargs).subset(cfg.limit, seed=0)
    exs = list(task)
    samples_dir = Path(cfg.samples_dir)
    samples_dir.mkdir(parents=True, exist_ok=True)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(entries, greedy):     # after every temperature: an interrupted study keeps what it measured
        with open(out.with_suffix(".lock"), "w") as lock:        # several difficulties may run at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = _merge(out.with_suffix(".json"), {"entries": entries, "greedy": greedy,
                                                     "commands": {f"{cfg.difficulty}, T={cfg.temperatures}": command_line("signal", cfg)}})
            data["commit"] = git_commit()
            out.with_suffix(".json").write_text(json.dumps(data, indent=1))
            write_report(data, out.with_suffix(".md"), cfg.figure)
        return data

    data = None
    for T in temps:
        entries = []
        t0 = time.time()
        recs = sample_and_score(model, tokenizer, task, exs, k=cfg.k, temperature=T, budgets=budgets,
                                batch_questions=cfg.batch_questions, seed=cfg.seed, progress=cfg.progress)
        seconds = time.time() - t0
        slug = difficulty_slug(cfg.difficulty)
        with open(samples_dir / f"{slug}_T{T}.jsonl", "w") as f:
            for r in recs:
                f.write(json.dumps({**r, "id": exs[r["q"]].id}) + "\n")
        for L in budgets:
            stats = signal_stats([r for r in recs if r["L"] == L], cfg.n_boot, cfg.seed)
            entries.append({"difficulty": cfg.difficulty, "task_kwargs": cfg.task_kwargs, "temperature": T,
                            "L": L, "k": cfg.k, "seconds": seconds, **stats})
        data = save(entries, {})
    if cfg.greedy_limit:
        val = load_task(cfg.task, "validation", data_dir=cfg.data_dir, **cfg.task_kwargs).subset(cfg.greedy_limit)
        budget = budgets[-1] + ANSWER_TOKENS
        stats = greedy_report(model, tokenizer, val, max_new_tokens=budget, batch_questions=50, progress=cfg.progress)
        stats["ci95"] = list(wilson_interval(round(stats["accuracy"] * stats["n"]), stats["n"]))
        data = save([], {cfg.difficulty: {**stats, "split": "validation", "max_new_tokens": budget}})
    return data


def _report_only(cfg: SignalConfig) -> dict:
    """``--report-only``: the report and figure again from ``<out>.json``, nothing measured."""
    path = Path(cfg.out).with_suffix(".json")
    if not path.exists():
        raise ConfigError(f"--report-only needs {path}; run latro signal without it first.")
    data = json.loads(path.read_text())
    write_report(data, Path(cfg.out).with_suffix(".md"), cfg.figure)
    return data


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def auroc_text(a: dict) -> str:
    """A within-question AUROC entry ({"mean", "ci95", ...}) as "0.74 [0.69, 0.79]", or "–" when no
    question had both kinds."""
    if a["mean"] is None:
        return "–"
    return f"{a['mean']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"


def write_report(data: dict, md_path, figure_path) -> None:
    """The Markdown table (one row per difficulty, T, L) and the figure, from ``data`` (<out>.json)."""
    from ..plots import plot_reward_signal

    lines = ["# The self-reward signal of the base model (before training)", "",
             "Generated by `latro signal` (commands below) at commit "
             f"`{(data.get('commit') or 'unknown')[:12]}`. Per difficulty: the first n training questions "
             "(seed-0 shuffle) x K samples at each T; shorter budgets L are read off the same samples. "
             "right: the answer (after the template, else the last number) is the gold one; finished: "
             "EOS or a stop string within L tokens. AUROC: within one question, P(reward of a right "
             "rationale > reward of a wrong one), averaged over the questions that have both (n_q), 95% "
             "bootstrap over those questions. Reward: log p(y|x⊕z) in nats (KL = 0 on the base model), "
             "mean ± se over samples.", "",
             "| difficulty | T | L | n (q × K) | right % | finished % | right & finished % | questions with a right & finished sample % "
             "| AUROC all [95%] (n_q) | AUROC among finished [95%] (n_q) | reward right | reward wrong |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def au(a):
        return auroc_text(a) + ("" if a["mean"] is None else f" ({a['n_questions']})")

    def rw(r):
        return "–" if not r["n"] else f"{r['mean']:.1f} ± {r['se']:.1f} (n={r['n']})"

    for e in sorted(data["entries"], key=lambda e: (e["difficulty"], -e["temperature"], e["L"])):
        lines.append(f"| {e['difficulty']} | {e['temperature']} | {e['L']} | {e['n_questions']} × {e['k']} | "
                     f"{_pct(e['frac_right'])} | {_pct(e['frac_finished'])} | {_pct(e['frac_right_and_finished'])} | "
                     f"{_pct(e['frac_questions_with_right_finished'])} | {au(e['auroc_all'])} | "
                     f"{au(e['auroc_finished'])} | {rw(e['reward_right'])} | {rw(e['reward_wrong'])} |")
    if data.get("greedy"):
        lines += ["", "Base model, greedy, on validation questions (the 15–40% band the issue asks the task to stay in):", "",
                  "| difficulty | n | accuracy % [95% Wilson] | cut at L % | L |", "|---|---|---|---|---|"]
        for d, g in sorted(data["greedy"].items()):
            lines.append(f"| {d} | {g['n']} | {_pct(g['accuracy'])} [{_pct(g['ci95'][0])}, {_pct(g['ci95'][1])}] | "
                         f"{_pct(g['frac_truncated'])} | {g['max_new_tokens']} |")
    lines += ["", f"Figure: `{figure_path}`.", "", "Commands:", ""]
    lines += [f"    {c}" for _, c in sorted(data["commands"].items())]
    Path(md_path).write_text("\n".join(lines) + "\n")
    plot_reward_signal(data["entries"], figure_path)
