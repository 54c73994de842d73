"""Figures (PNG files). Each function returns the path it wrote.

They use matplotlib's object-oriented ``Figure`` without pyplot, so importing this module changes
no backend and leaves no open figures: notebooks keep their inline plots, scripts need no display.

- :func:`figure2`            the paper's Figure 2: NLL of the gold answer by rationale kind, per model
- :func:`plot_training`      training curves from ``metrics.jsonl`` (small multiples)
- :func:`plot_seed_bands`    a line per method, a band over its seeds (validation accuracy vs step)
- :func:`plot_study_rows`    a study's rows: each split's mean and seed-and-question interval, per length
- :func:`plot_maj_at_k`      maj@k accuracy vs k (log2 axis), from evaluation summaries
- :func:`plot_accuracy_vs_L` accuracy vs the rationale budget L
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import writing
from .stats import wilson_interval

NLL_CONDITIONS = {"no_rationale": "no rationale", "gold_rationale": "gold rationale",
                  "own_correct": "own rationale, right", "own_wrong": "own rationale, wrong"}
TRAINING_PANELS = {"reward_mean": "self-reward, after the truncation penalty (nats)",
                   "logp_y_mean": "log πθ(y|x⊕z) (nats)",
                   "kl_mean": "log πθ(z|x) − log π0(z|x) (nats; KL estimate)",
                   "frac_truncated": "rationales cut at L (%)",
                   "eval_accuracy": "validation accuracy, greedy (%)", "sft_loss": "{} loss (nats per token)",
                   "kept": "RFT: right rationales kept (per step)"}
PERCENT_PANELS = ("frac_truncated", "eval_accuracy")      # stored as fractions, drawn as %
LINE_STYLES = ("-", "--", ":", "-.")                       # a method's seeds, one style each


def _method_of(label) -> str | None:
    """"RFT seed 2" -> "RFT": the runs of one method share a colour; None (one unlabelled run) stays None."""
    return label.rsplit(" seed", 1)[0] if isinstance(label, str) else label


def _save(fig, path, tight: bool = True) -> str:
    path = Path(path)
    if tight:
        fig.tight_layout()
    with writing(f"the figure {path}", "nothing else was changed: free space (or fix the folder's permissions) "
                 "and draw it again"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    return str(path)


def _load_summary(s) -> dict:
    return json.loads(Path(s).read_text()) if isinstance(s, (str, Path)) else s


def _number(x) -> float:
    """x as a float; nan for None (JSON null) and non-numbers."""
    return float(x) if isinstance(x, (int, float)) else float("nan")


def figure2(results_by_model: dict, path="figures/figure2.png") -> str:
    """Grouped bars: for each model (group) the mean NLL of the gold answer under each rationale
    condition (bar), with 95% bars: the bootstrap over questions that ``answer_nll`` records (``ci95``),
    or ±1.96 s.e. for a record without it. ``results_by_model``: {label: answer_nll result}
    (:func:`latro_core.answers.answer_nll`) or {label: summary with an "answer_nll" entry}."""
    data = {m: (r.get("answer_nll", r)) for m, r in ((m, _load_summary(r)) for m, r in results_by_model.items())}
    conds = [c for c in NLL_CONDITIONS if any(c in d and d[c].get("n") for d in data.values())]
    fig = Figure(figsize=(max(5.0, 1.5 + 1.2 * len(data) * max(1, len(conds)) / 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(conds))
    for j, c in enumerate(conds):
        xs = [i + (j - (len(conds) - 1) / 2) * width for i in range(len(data))]
        means = [_number(d.get(c, {}).get("mean")) for d in data.values()]   # nan: no bar
        bounds = [_interval95(d.get(c, {})) for d in data.values()]
        err = [[0.0 if math.isnan(m - lo) else m - lo for m, (lo, _) in zip(means, bounds)],    # no interval: no bar
               [0.0 if math.isnan(hi - m) else hi - m for m, (_, hi) in zip(means, bounds)]]
        bars = ax.bar(xs, means, width, yerr=err, capsize=3, label=NLL_CONDITIONS[c])
        ax.bar_label(bars, labels=[_n_label(d.get(c, {})) if not math.isnan(m) else ""
                                   for d, m in zip(data.values(), means)], fontsize=6, padding=2)
    ax.set_xticks(range(len(data)), list(data))
    ax.set_ylabel("NLL of the gold answer (nats)")
    clustered = all("ci95" in d[c] for d in data.values() for c in conds if c in d and d[c].get("n"))
    ax.set_title("−log p(y | x ⊕ z) by rationale z\n(mean; 95% bars: "
                 + ("questions resampled" if clustered else "±1.96 s.e.") + "; n answers, q questions)", fontsize=9)
    ax.margins(y=0.15)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    return _save(fig, path)


def _n_label(c: dict) -> str:
    """"n=61, q=16": answers, and the questions they come from when recorded."""
    return f"n={c.get('n', 0)}" + (f", q={c['questions']}" if c.get("questions") is not None else "")


def _interval95(c: dict) -> tuple[float, float]:
    """(lo, hi) of one condition: its recorded ``ci95`` (nan: too few questions to resample), else
    mean ± 1.96 s.e.; (nan, nan) without data."""
    if "ci95" in c:
        return tuple(_number(x) for x in c["ci95"]) if c["ci95"] else (float("nan"), float("nan"))
    m, se = _number(c.get("mean")), _number(c.get("se"))
    # normal 95%: mean ± 1.96 s.e.
    return (m - 1.96 * se, m + 1.96 * se) if not math.isnan(se) else (m, m)


def _read_metrics(src) -> list[dict]:
    if isinstance(src, (str, Path)):
        return [json.loads(ln) for ln in Path(src).read_text().splitlines() if ln.strip()]
    return list(src)


def plot_training(metrics_jsonl_path_or_list, path="figures/training.png", *, start: dict | None = None,
                  eval_n: int | None = None) -> str:
    """Small multiples of the training metrics over optimizer steps: self-reward (after the
    truncation penalty), log p(y|x⊕z), KL estimate, % cut at L, validation accuracy (and SFT loss);
    panels without data are left out. Input: a metrics.jsonl path, a list of metric dicts, or
    {label: either} to overlay runs. ``start``: the starting model's values at step 0 (e.g.
    {"eval_accuracy": 0.165}), drawn as a black star; ``eval_n``: validation questions per point."""
    src = metrics_jsonl_path_or_list
    runs = ({k: _read_metrics(v) for k, v in src.items()} if isinstance(src, dict) else {None: _read_metrics(src)})
    panels = [k for k in TRAINING_PANELS if any(k in m for rows in runs.values() for m in rows)]
    if not panels:
        raise ValueError(f"no known metric ({', '.join(TRAINING_PANELS)}) in the training records")
    cols = 2 if len(panels) == 4 else min(3, len(panels))      # 4 panels: a 2 x 2 grid, no empty axes
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.8 * cols, 2.7 * nrows + 0.5))
    axes = fig.subplots(nrows, cols, squeeze=False)
    # a method keeps its colour in every panel, its seeds a line style each
    methods = list(dict.fromkeys(_method_of(label) for label in runs))
    color = {label: f"C{methods.index(_method_of(label)) % 10}" for label in runs}
    style = {label: LINE_STYLES[[k for k in runs if _method_of(k) == _method_of(label)].index(label) % 4]
             for label in runs}
    for ax, key in zip(axes.flat, panels):
        scale = 100 if key in PERCENT_PANELS else 1
        for label, rows in runs.items():
            pts = [(m.get("step", i + 1), scale * m[key]) for i, m in enumerate(rows) if m.get(key) is not None]
            if pts and key == "eval_accuracy" and eval_n:     # Wilson 95% bars over the n questions
                steps, acc = zip(*((s, a / 100) for s, a in pts))
                ax.errorbar(steps, *_percent_bars(acc, [wilson_interval(round(a * eval_n), eval_n) for a in acc]),
                            marker="o", ms=3, lw=1.2, capsize=2, label=label, color=color[label], ls=style[label])
            elif pts:
                ax.plot(*zip(*pts), marker="o" if key == "eval_accuracy" or len(pts) <= 12 else None, ms=3, lw=1.2,
                        label=label, color=color[label], ls=style[label])
        if start and start.get(key) is not None:
            ax.plot([0], [scale * start[key]], marker="*", ms=9, color="k", ls="none", label="starting model")
        # the loss panel is named for the methods whose runs have it (SFT, RFT or both)
        with_key = [m for m in methods if any(key in r for lab, rows in runs.items() if _method_of(lab) == m for r in rows)]
        title = TRAINING_PANELS[key].format(" / ".join(m for m in with_key if m) or "SFT")
        title += f", n={eval_n}, Wilson 95%" if key == "eval_accuracy" and eval_n else ""
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))          # steps are whole numbers
        if key == "frac_truncated":
            ax.set_ylim(-3, 103)                                        # a share of the samples: its whole range
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}
    if len(handles) > 1 or start:               # one legend for all panels, below them
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)), fontsize=7,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06 if nrows > 1 else 0.1, 1, 1))
    else:                                       # titles clear of the x-labels of the row above
        fig.tight_layout()
    return _save(fig, path, tight=False)


def plot_seed_bands(curves: dict[str, list[list[tuple[int, float]]]], path, *, start: float | None = None,
                    eval_n: int | None = None, title: str = "validation accuracy, greedy (%)") -> str:
    """One line per method with a band over its seeds: ``curves`` {method: one [(step, accuracy)]
    per seed}. The line is the mean over seeds at each step, the band the lowest to the highest
    seed; ``start``: the starting model's accuracy at step 0 (a black star)."""
    fig = Figure(figsize=(5.6, 3.6 + 0.16 * len(curves)))
    ax = fig.subplots()
    for i, (label, seeds) in enumerate(curves.items()):
        steps = sorted(set.intersection(*(set(s for s, _ in run) for run in seeds))) if seeds else []
        if not steps:
            continue
        at = [[dict(run)[s] * 100 for run in seeds] for s in steps]
        ax.fill_between(steps, [min(v) for v in at], [max(v) for v in at], color=f"C{i}", alpha=0.2, lw=0)
        ax.plot(steps, [sum(v) / len(v) for v in at], marker="o", ms=3, color=f"C{i}",
                label=f"{label} ({len(seeds)} seeds)")
    if start is not None:
        ax.plot([0], [100 * start], marker="*", ms=10, color="k", ls="none", label="base model")
    ax.set_xlabel("optimizer step")
    ax.set_title(title + (f", n = {eval_n} questions" if eval_n else "") + "\nline: mean over seeds; band: lowest to "
                 "highest seed", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)   # below: no line hidden
    return _save(fig, path)


def _row_name_and_length(label: str) -> tuple[str, str | None]:
    """"LaTRO, 12 steps" -> ("LaTRO", "12 steps"); ("Base", None) for a row trained for no length."""
    name, _, length = label.rpartition(", ")
    return (name, length) if label.endswith(" steps") else (label, None)


def plot_study_rows(rows: list[dict], path, *, splits=("test", "unseen"), n_note: str = "") -> str:
    """A study's table as a picture: one panel per training length (a row label's ", N steps"), one
    row per method, each split's mean with its 95% interval over seeds, then questions. ``rows``:
    the report's rows {"row", "seeds_planned", split: {"mean", "ci95", "seeds"} or None}; a row with
    no length (Base) is in every panel; a row short of its planned seeds says how many it has."""
    by_name_length = {_row_name_and_length(r["row"]): r for r in rows}
    lengths = sorted({L for _, L in by_name_length if L}, key=lambda L: int(L.split()[0])) or [None]
    names = list(dict.fromkeys(name for name, _ in by_name_length))
    fig = Figure(figsize=(3.2 + 2.6 * len(lengths), 1.0 + 0.34 * len(names)))
    axes = fig.subplots(1, len(lengths), sharey=True, squeeze=False)[0]
    for ax, L in zip(axes, lengths):
        for j, (split, dy) in enumerate(zip(splits, _offsets(len(splits), 0.3))):
            for y, name in enumerate(names):
                r = by_name_length.get((name, L)) or by_name_length.get((name, None))
                if r and not r.get(split) and j == 0:
                    ax.text(0.02, y, f"0 of {r.get('seeds_planned', '?')} seeds yet", fontsize=6, va="center",
                            transform=ax.get_yaxis_transform())
                if not (r and (c := r.get(split))):
                    continue
                m, (lo, hi) = 100 * c["mean"], c["ci95"]
                ax.errorbar([m], [y + dy], xerr=[[m - 100 * lo], [100 * hi - m]], fmt="os"[j % 2], ms=4, capsize=2,
                            color=f"C{j}", label=split if y == 0 else None)
                if j == 0 and c["seeds"] < r.get("seeds_planned", c["seeds"]):
                    ax.annotate(f"{c['seeds']} of {r['seeds_planned']} seeds", (100 * hi, y + dy), fontsize=6,
                                xytext=(3, -2), textcoords="offset points")
        ax.set_title(L or "", fontsize=9)
        ax.set_xlabel("accuracy, greedy (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", bbox_to_anchor=(0.97, 1.0),
               ncol=len(splits), fontsize=7, frameon=False)
    fig.suptitle("bars: 95% over seeds, then questions" + (f"; {n_note}" if n_note else ""), fontsize=8, x=0.02,
                 ha="left")
    return _save(fig, path)


def _offsets(n: int, width: float) -> list[float]:
    """Horizontal offsets (in axis units, or log2 units) that keep n lines' error bars apart."""
    return [(i - (n - 1) / 2) * width for i in range(n)]


def _summary_label(s: dict) -> str:
    return f"{s.get('model_label', '?')} {s.get('method', '')}".strip()


def plot_maj_at_k(summaries, path="figures/maj_at_k.png") -> str:
    """maj@k accuracy (%) vs k (log2 x-axis) with Wilson 95% bars, one line per summary (offset a
    little in k so the bars do not overlap); the greedy accuracy as a dashed line of the same colour.
    ``summaries``: list of summary dicts/paths, or {label: summary}."""
    items = [(label, _load_summary(s)) for label, s in
             (summaries.items() if isinstance(summaries, dict) else [(None, s) for s in summaries])]
    items = [(label, s) for label, s in items if s.get("maj_at_k")]
    fig = Figure(figsize=(5.2, 3.8))
    ax = fig.subplots()
    for (label, s), dx in zip(items, _offsets(len(items), 0.06)):
        label = label or _summary_label(s)
        pts = sorted((int(k), v) for k, v in s["maj_at_k"].items())
        ks, accs = [k for k, _ in pts], [100 * v["accuracy"] for _, v in pts]
        err = [[a - 100 * v["ci95"][0] for a, (_, v) in zip(accs, pts)],
               [100 * v["ci95"][1] - a for a, (_, v) in zip(accs, pts)]]
        line = ax.errorbar([k * 2 ** dx for k in ks], accs, yerr=err, marker="o", ms=4, capsize=3,
                           label=f"{label} (n={s.get('n', '?')})")
        if s.get("greedy"):
            ax.axhline(100 * s["greedy"]["accuracy"], ls="--", lw=1, color=line[0].get_color())
    ax.set_xscale("log", base=2)
    ticks = sorted({int(k) for _, s in items for k in s["maj_at_k"]})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel("k (samples in the majority vote)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("maj@k (bars: Wilson 95%; dashed: greedy)", fontsize=9)
    if items:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return _save(fig, path)


def plot_accuracy_vs_L(rows, path="figures/accuracy_vs_L.png") -> str:
    """Accuracy (%) vs the rationale budget L, one line per label (offset a little in L so the
    bars do not overlap). ``rows``: dicts with "L", "accuracy" (a fraction), optional "label", "lo",
    "hi" (the 95% interval), "n"; or evaluation summaries (L = max_new_tokens, accuracy = greedy,
    label = model and method)."""
    lines: dict[str, list] = {}
    for r in rows:
        r = _load_summary(r)
        if "greedy" in r:
            g = r["greedy"]
            r = {"L": r["max_new_tokens"], "accuracy": g["accuracy"], "lo": g["ci95"][0], "hi": g["ci95"][1],
                 "n": g.get("n"), "label": _summary_label(r)}
        lines.setdefault(r.get("label") or "", []).append(r)
    fig = Figure(figsize=(5.2, 3.8))
    ax = fig.subplots()
    Ls = sorted({r["L"] for pts in lines.values() for r in pts})
    gap = min((b - a for a, b in zip(Ls, Ls[1:])), default=1.0)
    for (label, pts), dx in zip(lines.items(), _offsets(len(lines), 0.06 * gap)):
        pts.sort(key=lambda r: r["L"])
        acc = [100 * r["accuracy"] for r in pts]
        err = None
        if all("lo" in r and "hi" in r for r in pts):
            err = [[a - 100 * r["lo"] for a, r in zip(acc, pts)], [100 * r["hi"] - a for a, r in zip(acc, pts)]]
        n = sorted({r["n"] for r in pts if r.get("n")})
        ax.errorbar([r["L"] + dx for r in pts], acc, yerr=err, marker="o", ms=4, capsize=3,
                    label=(label or "") + (f" (n={'/'.join(map(str, n))})" if n else "") or None)
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.set_xlabel("rationale budget L at inference (max new tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs L (bars: Wilson 95%)", fontsize=9)
    if any(lines):
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return _save(fig, path)


def _percent_bars(values, intervals) -> tuple[list[float], list[list[float]]]:
    """Fractions and their (lo, hi) intervals as percentages and errorbar's (below, above) lengths."""
    pct = [100 * v for v in values]
    return pct, [[p - 100 * lo for p, (lo, _) in zip(pct, intervals)], [100 * hi - p for p, (_, hi) in zip(pct, intervals)]]


def _sample_share_interval(e: dict) -> tuple[float, float]:
    """95% interval of the share of samples right and finished: the bootstrap over questions that the
    signal study records; for a record made before it did, Wilson's at n = the number of questions,
    which assumes the K samples of a question agree (the widest a clustered interval can be)."""
    if e.get("frac_right_and_finished_ci95"):
        return tuple(e["frac_right_and_finished_ci95"])
    return wilson_interval(round(e["frac_right_and_finished"] * e["n_questions"]), e["n_questions"])


def plot_reward_signal(entries: list[dict], path="figures/self_reward_signal.png") -> str:
    """The base model's learning signal against the budget L (``latro_core.experiments.reward_signal``): left,
    the % of samples that are right and finished within L; middle, the % of questions with at
    least one such sample among K; right, the within-question AUROC of the self-reward (95%
    bootstrap over questions as error bars, offset per line). One colour per temperature, one
    line style per difficulty."""
    diffs = sorted({e["difficulty"] for e in entries})
    temps = sorted({e["temperature"] for e in entries}, reverse=True)
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    n_lines = max(1, len(diffs) * len(temps))
    for di, d in enumerate(diffs):
        for ti, T in enumerate(temps):
            rows = sorted((e for e in entries if e["difficulty"] == d and e["temperature"] == T), key=lambda e: e["L"])
            if not rows:
                continue
            Ls = [e["L"] for e in rows]
            kw = dict(color=f"C{ti}", ls=styles[di % len(styles)], marker="o", ms=3,
                      label=f"{d}, T={T} (n={rows[0]['n_questions']}×{rows[0]['k']})")
            shift = (di * len(temps) + ti - (n_lines - 1) / 2) * 0.6
            xs = [L + shift for L in Ls]
            axes[0].errorbar(xs, *_percent_bars([e["frac_right_and_finished"] for e in rows],
                                                [_sample_share_interval(e) for e in rows]), capsize=2, **kw)
            axes[1].errorbar(xs, *_percent_bars([e["frac_questions_with_right_finished"] for e in rows],
                                                [wilson_interval(round(e["frac_questions_with_right_finished"]
                                                                       * e["n_questions"]), e["n_questions"])
                                                 for e in rows]), capsize=2, **kw)
            pts = [(L + shift, e["auroc_all"]) for L, e in zip(Ls, rows) if e["auroc_all"]["mean"] is not None]
            if pts:
                xs, au = zip(*pts)
                mean = [a["mean"] for a in au]
                err = [[m - a["ci95"][0] for m, a in zip(mean, au)], [a["ci95"][1] - m for m, a in zip(mean, au)]]
                axes[2].errorbar(xs, mean, yerr=err, capsize=2, **kw)
    axes[0].set_ylabel("samples right and finished within L (%)")
    axes[1].set_ylabel("% questions with ≥1 right & finished")
    axes[2].set_ylabel("within-question AUROC of log p(y|x⊕z)")
    axes[2].axhline(0.5, color="grey", lw=0.8, ls=":")
    for ax in axes:
        ax.set_xlabel("rationale budget L (tokens)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    left = ("bootstrap over questions (a question keeps its K samples)" if all(e.get("frac_right_and_finished_ci95")
            for e in entries) else "Wilson at n = questions (conservative: the samples of a question as one)")
    fig.suptitle(f"Base model's self-reward signal. 95% bars: left, {left}; middle, Wilson over questions; "
                 "right, bootstrap over questions", fontsize=8)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
    return _save(fig, path, tight=False)
