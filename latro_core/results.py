"""Results tables (the paper's Table 2) built from evaluation summaries: ``latro tables``.

Every ``summary.json`` written by ``latro evaluate`` under ``runs`` is read; summaries are grouped
by (model label, method, task, split) and, within a group, by seed (training seed, sampling seed;
the newest summary wins when one seed was evaluated twice). Rows are model × method (Base, SFT,
RFT, LaTRO), columns "GD" (greedy) and "maj@8" for each task. A cell is

    mean accuracy over seeds  [95% interval]   (n questions, number of seeds)

with the Wilson interval of the single seed, or, for ≥ 2 seeds evaluated on the same questions, a
two-level bootstrap: seeds are resampled, then questions (each keeping its correctness under every
seed), so the interval covers both which models were trained and which questions were asked; beside
it the standard deviation of the per-seed accuracies. (Without per-question records the pooled Wilson interval is the fallback,
and the cell says so.) Nothing is typed by hand: the
.md, .csv and .json files each record the command, the git commit and the source summaries.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path


from .errors import ConfigError, read_json_lines, writing
from .provenance import command_line, git_commit, portable
from .evaluate import SUMMARY_KIND
from .methods import METHODS
from .stats import SEEDS_AND_QUESTIONS, seed_question_interval, wilson_interval



def method_names() -> dict[str, str]:
    """{method: its name in tables}, the untrained model first, then the registered methods in order."""
    return {"base": "Base", **{m.name: m.label for m in METHODS.values()}}


@dataclass
class TablesConfig:
    """``latro tables``: scan ``runs`` for evaluation summaries, write ``out/<name>.{md,csv,json}``."""

    runs: str = "runs"          # folder scanned (recursively) for summary.json
    out: str = "results"
    name: str = "table2"
    split: str = "test"         # only summaries of this split; "all": every split (columns per split)
    maj_k: int = 8              # the maj@k column (shown where some summary has k >= maj_k)


# ----------------------------------------------------------------------------- reading

def find_summaries(root: str | Path) -> list[tuple[Path, dict]]:
    """(path, summary) of every evaluation summary.json under ``root``, sorted by path."""
    found = []
    for path in sorted(Path(root).rglob("summary.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and (s.get("kind") == SUMMARY_KIND or ("task" in s and "greedy" in s)):
            found.append((path, s))
    return found


def _seed_key(s: dict) -> tuple:
    return (s.get("train_seed"), s.get("seed"))


def _group(found, split: str) -> tuple[dict, list[Path], list[Path]]:
    """{(label, method, task, split): {seed key: (path, summary)}}, used paths, superseded paths."""
    groups: dict[tuple, dict] = {}
    superseded = []
    for path, s in found:
        if split != "all" and s.get("split") != split:
            continue
        key = (s.get("model_label") or "?", (s.get("method") or "base").lower(), s["task"], s.get("split"))
        seeds = groups.setdefault(key, {})
        new = (s.get("created") or "", path.stat().st_mtime)
        old = seeds.get(_seed_key(s))
        if old is not None:
            old_when = (old[1].get("created") or "", old[0].stat().st_mtime)
            if old_when >= new:
                superseded.append(path)
                continue
            superseded.append(old[0])
        seeds[_seed_key(s)] = (path, s)
    used = sorted(p for seeds in groups.values() for p, _ in seeds.values())
    return groups, used, sorted(superseded)


# ----------------------------------------------------------------------------- cells

def cell_stats(results: list[tuple[int, int]], per_question: list[dict] | None = None) -> dict:
    """One table cell from per-seed (correct, n) pairs (and, when known, per-seed {question id: correct}).

    mean = (1/S) Σ_s c_s/n_s;  ci95 = Wilson(c_1, n_1) for S = 1, else the two-level bootstrap over
    seeds and questions (:func:`seed_question_interval`), or the pooled Wilson(Σc_s, Σn_s) when ``per_question``
    is missing ("ci": which one); seed_std = sample std of c_s/n_s (S ≥ 2, else None).
    """
    accs = [c / n for c, n in results if n > 0]
    if not accs:
        return {"mean": None, "ci95": [None, None], "seed_std": None, "n": [], "seeds": 0, "correct": 0, "total": 0}
    correct, total = sum(c for c, _ in results), sum(n for _, n in results)
    if len(results) == 1:
        (lo, hi), how = wilson_interval(*results[0]), "wilson"
    elif per_question is not None and len(per_question) == len(results):
        lo, hi, _ = seed_question_interval(per_question)
        how = SEEDS_AND_QUESTIONS
    else:
        (lo, hi), how = wilson_interval(correct, total), "pooled wilson"
    return {"mean": statistics.fmean(accs), "ci95": [lo, hi], "ci": how,
            "seed_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "n": sorted({n for _, n in results}), "seeds": len(results), "correct": correct, "total": total}


def question_correct(summary_path: Path, metric: str = "GD") -> dict | None:
    """{question id: correct} under ``metric`` ("GD" greedy, "maj" the majority vote) from the
    predictions.jsonl beside an evaluation's summary.json (None when absent)."""
    f = Path(summary_path).parent / "predictions.jsonl"
    if not f.exists():
        return None
    key = "greedy" if metric == "GD" else "maj"
    out = {}
    fix = f"restore it, or evaluate the model again into {f.parent} (latro evaluate --overwrite)"
    for rec in read_json_lines(f, fix):
        ok = rec.get("greedy", {}).get("correct") if key == "greedy" else rec.get("maj_correct")
        if ok is None:
            return None
        out[rec["id"]] = bool(ok)
    return out


def _metric(s: dict, metric: str, maj_k: int) -> tuple[int, int] | None:
    """(correct, n) of a summary for metric "GD" (greedy) or "maj" (maj@maj_k); None when not run."""
    entry = s.get("greedy") if metric == "GD" else (s.get("maj_at_k") or {}).get(str(maj_k))
    if not entry or entry.get("n") is None:
        return None
    return int(entry["correct"]), int(entry["n"])


def format_cell(c: dict) -> str:
    """'45.2 [41.0, 49.5] (n=500)' or '45.2 ± 1.3 sd [43.1, 47.3] (n=500 × 3 seeds)' (percent)."""
    if c is None or c["mean"] is None:
        return "–"
    n = "/".join(str(x) for x in c["n"])
    ci = f"[{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]"
    if c["seeds"] == 1:
        return f"{100 * c['mean']:.1f} {ci} (n={n})"
    if c.get("ci") == "pooled wilson":
        ci += " pooled"
    return f"{100 * c['mean']:.1f} ± {100 * c['seed_std']:.1f} sd {ci} (n={n} × {c['seeds']} seeds)"


def _method_order(m: str) -> tuple:
    order = list(method_names())
    return (order.index(m), m) if m in order else (len(order), m)


# ----------------------------------------------------------------------------- building

def build_tables(cfg: TablesConfig) -> dict:
    """Build the table from ``cfg.runs``/**/summary.json and write ``cfg.out``/``cfg.name``.{md,csv,json}.

    Returns the JSON content (with ``"paths"``, the files written, added).
    """
    found = find_summaries(cfg.runs)
    groups, used, superseded = _group(found, cfg.split)
    if not groups:
        raise ConfigError(f"no evaluation summaries (summary.json from `latro evaluate`) with split={cfg.split!r} "
                          f"under {cfg.runs!r}; run `latro evaluate` first or pass --runs / --split all.")
    task_splits = sorted({(t, sp) for _, _, t, sp in groups})
    many_splits = {t for t, _ in task_splits if sum(1 for u, _ in task_splits if u == t) > 1}
    columns = []  # (label, task, split, metric)
    for t, sp in task_splits:
        base = f"{t}/{sp}" if t in many_splits else t
        metrics = ["GD"] + ([f"maj@{cfg.maj_k}"] if any(
            _metric(s, "maj", cfg.maj_k) for (_, _, t2, sp2), seeds in groups.items() if (t2, sp2) == (t, sp)
            for _, s in seeds.values()) else [])
        columns += [(f"{base} {m}", t, sp, m) for m in metrics]
    rows, names = [], method_names()
    for label, method in sorted({(k[0], k[1]) for k in groups}, key=lambda lm: (lm[0], _method_order(lm[1]))):
        cells = {}
        for col, t, sp, m in columns:
            seeds = sorted(groups.get((label, method, t, sp), {}).values(), key=lambda ps: str(ps[0]))
            kind = "GD" if m == "GD" else "maj"
            have = [(p, r) for p, s in seeds if (r := _metric(s, kind, cfg.maj_k)) is not None]
            per_q = [question_correct(p, kind) for p, _ in have]
            cells[col] = cell_stats([r for _, r in have], None if any(q is None for q in per_q) else per_q) \
                if have else None
        rows.append({"model": label, "method": names.get(method, method), "cells": cells})
    self_eval = [{"model": label, "method": names.get(method, method), "task": t, "split": sp,
                  "train_seed": s.get("train_seed"), "auroc": s["self_eval"]["auroc"],
                  "ci95": s["self_eval"].get("auroc_ci95"), "n_samples": s["self_eval"]["n_samples"],
                  "n_correct": s["self_eval"]["n_correct"]}
                 for (label, method, t, sp), seeds in sorted(groups.items(), key=lambda kv: (kv[0][0], _method_order(kv[0][1]), kv[0][2:]))
                 for _, s in sorted(seeds.values(), key=lambda ps: str(ps[0])) if s.get("self_eval")]
    table = {"command": command_line("tables", cfg), "git_commit": git_commit(),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg),
             "columns": [c[0] for c in columns], "rows": rows, "self_eval": self_eval,
             "sources": [str(p) for p in used], "superseded": [str(p) for p in superseded]}
    table = portable(table)      # paths relative to the repository: nothing committed holds a machine path
    out = Path(cfg.out)
    paths = {ext: out / f"{cfg.name}.{ext}" for ext in ("md", "csv", "json")}
    with writing(f"the tables to {out}", "the evaluation summaries they are built from are untouched: free space "
                 "(or fix the folder's permissions) and run `latro tables` again"):
        out.mkdir(parents=True, exist_ok=True)
        paths["md"].write_text(to_markdown(table))
        paths["csv"].write_text(to_csv(table, columns))
        paths["json"].write_text(json.dumps(table, indent=1))
    table["paths"] = {k: str(v) for k, v in paths.items()}
    print(f"latro tables: {len(rows)} rows x {len(columns)} columns from {len(used)} summaries -> "
          + ", ".join(str(p) for p in paths.values()))
    return table


def _provenance_lines(table: dict) -> list[str]:
    return ([f"command: {table['command']}", f"git commit: {table['git_commit'] or 'unknown'}",
             f"created: {table['created']}"] + [f"source: {p}" for p in table["sources"]]
            + [f"superseded (same seed, older): {p}" for p in table["superseded"]])


def to_markdown(table: dict) -> str:
    """The table as Markdown: a header with provenance, one row per model × method."""
    head = ["Model", "Method"] + table["columns"]
    lines = [f"# Zero-shot accuracy (%) — {table['config']['name']}", "",
             "Cells: mean accuracy over seeds [95% interval] (n questions; seeds). One seed: Wilson "
             "interval; ≥ 2 seeds: ± sd of per-seed accuracies and a 95% two-level bootstrap interval that "
             "resamples seeds, then questions (each question keeping its answers under every seed drawn; 2000 "
             "resamples), so it covers which models were trained and which questions were asked; never "
             "questions × seeds as independent trials. Each cell's `ci` in the JSON names its interval. "
             "GD: greedy decoding; maj@k: majority vote over k samples.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        lines.append("| " + " | ".join([r["model"], r["method"]] + [format_cell(r["cells"][c]) for c in table["columns"]])
                     + " |")
    if table.get("self_eval"):
        lines += ["", "Self-evaluation: AUROC of the self-reward log πθ(y|x⊕z) at telling sampled rationales whose "
                  "answer is right from wrong ones (0.5 = chance) [95% bootstrap interval].", "",
                  "| Model | Method | Task | Training seed | AUROC | samples (right) |", "|---|---|---|---|---|---|"]
        for e in table["self_eval"]:
            ci = f" [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]" if e.get("ci95") and None not in e["ci95"] else ""
            auc = "–" if e["auroc"] is None else f"{e['auroc']:.2f}{ci}"
            lines.append(f"| {e['model']} | {e['method']} | {e['task']}/{e['split']} | "
                         f"{'–' if e['train_seed'] is None else e['train_seed']} | {auc} | {e['n_samples']} ({e['n_correct']}) |")
    lines += [""] + [f"- {ln}" for ln in _provenance_lines(table)]
    return "\n".join(lines) + "\n"


def to_csv(table: dict, columns) -> str:
    """Long format, one line per cell, after ``# `` comment lines with the provenance."""
    buf = io.StringIO()
    for ln in _provenance_lines(table):
        buf.write(f"# {ln}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "method", "task", "split", "metric", "mean", "ci95_lo", "ci95_hi", "seed_std",
                "n", "seeds", "correct", "total"])
    for r in table["rows"]:
        for col, t, sp, m in columns:
            c = r["cells"][col]
            if c is None:
                continue
            w.writerow([r["model"], r["method"], t, sp, m, c["mean"], c["ci95"][0], c["ci95"][1],
                        "" if c["seed_std"] is None else c["seed_std"], "/".join(map(str, c["n"])),
                        c["seeds"], c["correct"], c["total"]])
    return buf.getvalue()
