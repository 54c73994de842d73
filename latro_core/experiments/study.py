"""A comparison study that a reviewer accepts: equal tuning on validation, fresh seeds on test,
intervals over seeds and questions. ``scripts/studies/study_arithmetic.py`` is its first user.

A study is a list of **cells**, each one training run (or the base model) and its evaluations:

    tune cells   every method × its grid point × 2 seeds, 12 steps, greedy validation accuracy at the end
    pick         per method, the grid point with the highest mean validation accuracy over its seeds
                 (ties: the earlier grid point); the same rule for every method
    final cells  the pick × fresh seeds × each training length; the final model answers the test
                 split and the unseen split (never used for selection)
    report       the table (seed-and-question intervals), paired comparisons with P(A > B), the figure

**Resume-safe across sessions and machines.** A finished cell leaves a small record under
``out/<cell>/`` (the run's config.json and metrics.jsonl; each evaluation's summary.json and its
per-question answers; ``done.json`` with the commands) that is committed with the results; its
model weights live in ``scratch/<cell>/`` and are deleted once the record is written. Rerunning the
study skips every recorded cell and starts any unfinished one over, so it can be stopped (Ctrl-C,
SIGTERM, a session's end) and continued anywhere from a clone.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..provenance import cli_flags, command_line, git_commit, portable
from ..errors import ConfigError, DataError, LatroError, read_json, read_json_lines, writing
from ..evaluate import EvalConfig
from ..results import cell_stats, question_correct
from ..stats import SEEDS_AND_QUESTIONS, paired_difference
from .children import ChildProcesses
from .runs import train_args
from ..train_config import TrainConfig



@dataclass(frozen=True)
class Cell:
    """One run of a study: ``train`` holds the TrainConfig fields (None: the untrained base model);
    the final model answers each split of ``evals`` (``eval_limit`` questions, greedy)."""

    name: str                          # "tune/latro_lr1.5e-05_T0.7_seed0": its folder under out/ and scratch/
    method: str                        # base | sft | rft | latro
    train: dict | None = None
    evals: tuple[str, ...] = ()
    label: str = ""                    # the row it belongs to ("LaTRO, 36 steps")
    home: str = ""                     # its records' folder when not the study's own (a row shared with another study)


def record_dir(cell: Cell, out) -> Path:
    """Where ``cell``'s record lives: ``<home or out>/<name>``."""
    return Path(cell.home or out) / cell.name


def recorded(cell: Cell, out) -> bool:
    """Whether ``cell`` has a finished record made for this plan: its ``done.json`` names the same
    method, training settings and evaluated splits. A record made for another plan (a pick that
    changed, a setting edited) counts as missing, so a rerun replaces it and no table reads it."""
    done = record_dir(cell, out) / "done.json"
    if not done.exists():
        return False
    made = record_json(done)["cell"]
    return (made["method"], made["train"], list(made["evals"])) == (cell.method, cell.train, list(cell.evals))


def _fix(path: Path) -> str:
    return (f"restore it (git checkout -- {path}) or delete its cell's folder {path.parent} and rerun the study "
            f"to record the cell again")


def record_json(path: Path) -> dict:
    """A study record's JSON object (done.json, summary.json); a damaged one is one DataError naming the
    file, the line and byte offset and what to do."""
    return read_json(path, _fix(path), error=DataError)


def record_lines(path: Path) -> list[dict]:
    """A study record's JSON lines (metrics.jsonl); a damaged line is one DataError naming the file,
    the line and byte offset and what to do."""
    return read_json_lines(path, _fix(Path(path)))


@dataclass
class StudyConfig:
    """One study run: which phase, where records go, how many runs at a time."""

    phase: str = "all"                 # tune | final | report | all (tune, then final, then report)
    out: str = "results/study_arithmetic"        # the committed records, one folder per cell
    scratch: str = "runs/study_arithmetic"       # model weights and logs while a cell runs (deleted after)
    jobs: int = 2                      # runs at a time, one torch thread each (2 cores: 2)
    only: str = ""                     # comma-separated cell names (or prefixes) to run; "": every cell
    dry_run: bool = False              # list the cells and what is recorded, run nothing


# ----------------------------------------------------------------------------- the grid and the pick

def grid_name(method: str, point: dict, seed: int, prefix: str = "tune") -> str:
    knobs = "_".join(f"{'T' if k == 'temperature' else k}{v:g}" for k, v in sorted(point.items()))
    return f"{prefix}/{method}_{knobs}_seed{seed}"


def tune_cells(grids: dict[str, list[dict]], common: dict[str, dict], seeds=(0, 1),
               methods: dict[str, str] | None = None) -> list[Cell]:
    """Every row × grid point × seed, trained with ``common[row]`` plus the point; ``methods`` maps a
    row to its training method where the two differ (a reward of LaTRO's step: "latro")."""
    return [Cell(grid_name(m, p, s), (methods or {}).get(m, m), {**common[m], **p, "seed": s})
            for m, points in grids.items() for p in points for s in seeds]


def validation_accuracy(record: Path) -> float | None:
    """The last ``eval_accuracy`` in a recorded run's metrics.jsonl (None: not recorded)."""
    f = record / "metrics.jsonl"
    if not f.exists():
        return None
    accs = [r["eval_accuracy"] for r in record_lines(f) if "eval_accuracy" in r]
    return accs[-1] if accs else None


def pick(method: str, points: list[dict], seeds, out: Path) -> tuple[dict | None, list[dict]]:
    """The grid point with the highest mean validation accuracy over ``seeds`` (ties: the earlier
    point), and every point's row; (None, rows) while some tuning cell is unrecorded."""
    rows = []
    for p in points:
        accs = [validation_accuracy(out / grid_name(method, p, s)) if (out / grid_name(method, p, s) / "done.json").exists()
                else None for s in seeds]
        rows.append({"method": method, **p, "validation": accs,
                     "mean": statistics.fmean(accs) if None not in accs else None})
    if any(r["mean"] is None for r in rows):
        return None, rows
    best = max(range(len(rows)), key=lambda i: (rows[i]["mean"], -i))
    rows[best]["picked"] = True
    return points[best], rows


# ----------------------------------------------------------------------------- running one cell

def eval_config(cell: Cell, split: str, model: str | None, out: Path, eval_kw: dict) -> EvalConfig:
    return EvalConfig(**{**eval_kw, "split": split, "model": model, "out": str(out / f"eval-{split}"),
                         "method": cell.method, "model_label": cell.label or None, "progress": False,
                         "train_seed": (cell.train or {}).get("seed")})


def _compact_predictions(src: Path, dst: Path) -> None:
    """Keep of each question what the tables read (id, gold, the greedy prediction, right or not,
    how it ended), not the prompt and rationale: a cell's record stays a few tens of KB."""
    keep = []
    for ln in src.read_text().splitlines():
        r = json.loads(ln)
        g = r.get("greedy", {})
        keep.append({"id": r["id"], "gold": r.get("gold"),
                     "greedy": {k: g.get(k) for k in ("pred", "correct", "finish")}})
    dst.write_text("".join(json.dumps(r) + "\n" for r in keep))


def run_cell(cell: Cell, cfg: StudyConfig, eval_kw: dict, children: ChildProcesses) -> None:
    """Train (unless the base model), evaluate, record, delete the weights (module doc); the runs are
    ``children`` of the study (one torch thread each)."""
    record, scratch = record_dir(cell, cfg.out), Path(cfg.scratch) / cell.name
    t0, commands = time.time(), []
    shutil.rmtree(scratch, ignore_errors=True)
    model = None
    if cell.train is not None:
        tc = TrainConfig(**{**cell.train, "method": cell.method, "out_dir": str(scratch / "run"), "progress": False,
                            "keep_resume_state": False, "save_every": 10**6, "overwrite": True})
        args = train_args(tc)
        children.run(args, scratch / "train.log")
        commands.append("latro " + " ".join(args))
        model = str(scratch / "run" / "final")
    for split in cell.evals:
        ec = eval_config(cell, split, model, scratch, eval_kw)
        args = ["evaluate"] + cli_flags(ec)
        children.run(args, scratch / f"eval-{split}.log")
        commands.append("latro " + " ".join(args))
    shutil.rmtree(record, ignore_errors=True)
    record.mkdir(parents=True)
    if cell.train is not None:
        for f in ("config.json", "metrics.jsonl"):
            shutil.copy(scratch / "run" / f, record / f)
    for split in cell.evals:
        (record / f"eval-{split}").mkdir()
        shutil.copy(scratch / f"eval-{split}" / "summary.json", record / f"eval-{split}" / "summary.json")
        _compact_predictions(scratch / f"eval-{split}" / "predictions.jsonl",
                             record / f"eval-{split}" / "predictions.jsonl")
    (record / "done.json").write_text(json.dumps(
        {"cell": dataclasses.asdict(cell), "commands": commands, "git_commit": git_commit(),
         "wall_s": round(time.time() - t0, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)


def run_cells(cells: list[Cell], cfg: StudyConfig, eval_kw: dict) -> list[str]:
    """Every unrecorded cell of ``cells``, ``cfg.jobs`` at a time; returns the names that failed."""
    only = [s for s in cfg.only.split(",") if s]
    todo = [c for c in cells if not recorded(c, cfg.out) and (not only or any(c.name.startswith(o) for o in only))]
    stale = [c.name for c in todo if (record_dir(c, cfg.out) / "done.json").exists()]
    print(f"{len(cells) - len(todo)} of {len(cells)} cells recorded; {len(todo)} to run"
          + (f" ({len(stale)} recorded for another plan, run again: {', '.join(stale)})" if stale else ""), flush=True)
    if cfg.dry_run:
        for c in todo:
            print("  would run", c.name, flush=True)
        return []
    failed, lock = [], threading.Lock()

    def one(c: Cell):
        print(f"{time.strftime('%H:%M:%S')} start {c.name}", flush=True)
        try:
            run_cell(c, cfg, eval_kw, children)
            print(f"{time.strftime('%H:%M:%S')} done  {c.name}", flush=True)
        except LatroError as e:
            with lock:
                failed.append(c.name)
            print(f"{time.strftime('%H:%M:%S')} FAILED {c.name}: {e}", flush=True)

    # SIGTERM or Ctrl-C stops the running cells' runs (ChildProcesses); the handler is restored after
    with ChildProcesses(threads=1) as children:
        children.each(one, todo, cfg.jobs)
    return failed


# ----------------------------------------------------------------------------- reading the records

def per_seed_answers(out: Path, cells: list[Cell], split: str) -> tuple[list[dict], list[dict]]:
    """For the recorded ``cells``: their {question id: correct} on ``split`` and their summaries' greedy entries."""
    answers, greedy = [], []
    for c in cells:
        f = record_dir(c, out) / f"eval-{split}" / "summary.json"
        if recorded(c, out) and f.exists():
            answers.append(question_correct(f))
            greedy.append(record_json(f)["greedy"])
    return answers, greedy


def row_stats(out: Path, cells: list[Cell], split: str) -> dict | None:
    """One table cell: mean over seeds, the seed-and-question interval, each seed's accuracy, the
    finished share (1 − cut at the evaluation budget) averaged over seeds."""
    answers, greedy = per_seed_answers(out, cells, split)
    if not answers:
        return None
    c = cell_stats([(g["correct"], g["n"]) for g in greedy], answers)
    c["per_seed"] = [g["accuracy"] for g in greedy]
    c["finished"] = statistics.fmean(1 - g["frac_truncated"] for g in greedy)
    if c["seeds"] == 1:
        c["ci"] = "wilson over questions (one model)"
    return c


def compare(out: Path, a: list[Cell], b: list[Cell], split: str) -> dict | None:
    """A − B on ``split``: :func:`~latro_core.stats.paired_difference` (seeds and questions resampled)."""
    (qa, _), (qb, _) = per_seed_answers(out, a, split), per_seed_answers(out, b, split)
    if not qa or not qb:
        return None
    d = paired_difference(qa, qb)
    assert d["ci"] == SEEDS_AND_QUESTIONS
    return d


def read_report(path) -> tuple[str, list[dict], list[dict]]:
    """A written study (``results/<name>.json``) for a notebook to show, not recompute: (its command
    and commit as one line, one row per table row {"row", "test %", "unseen %", "seeds"} with the
    intervals formatted, one row per comparison {"A", "B", "test", "unseen"})."""
    study = json.loads(Path(path).read_text())
    rows = [{"row": r["row"], **{f"{split} % [95%]": format_stats(r[split]) for split in ("test", "unseen")},
             "seeds": (r["test"] or {}).get("seeds", 0)} for r in study["rows"]]
    by_pair: dict[tuple[str, str], dict] = {}
    for c in study.get("comparisons", []):        # one entry per (A, B, split)
        by_pair.setdefault((c["a"], c["b"]), {"A": c["a"], "B": c["b"]})[c["split"]] = \
            format_difference(c if "mean" in c else None)
    comparisons = list(by_pair.values())
    return f"command `{study['command']}`, commit `{study['git_commit'][:12]}`", rows, comparisons


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def format_stats(c: dict | None) -> str:
    if c is None:
        return "–"
    lo, hi = c["ci95"]
    return f"{pct(c['mean'])} [{pct(lo)}, {pct(hi)}]"


def format_difference(d: dict | None) -> str:
    if d is None:
        return "–"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}], P(A>B) = {d['p_improvement']:.2f}"




# ----------------------------------------------------------------------------- the report

@dataclass
class Design:
    """What a study's report states about how it was made (and where it writes)."""

    title: str                          # the report's heading
    name: str                           # results/<name>.{md,json,csv}, figures/<name>.png
    intro: str                          # the paragraph on intervals, splits and n
    grid: str                           # the tuning grid and rule, in words
    comparisons: list                   # (row A, row B) pairs compared on every split
    splits: tuple = ("test", "unseen")
    curve_rows: str = "36 steps"        # rows whose validation curves make the figure
    curve_n: int = 100                  # validation questions per curve point
    info: dict | None = None            # the design's numbers, recorded in the JSON


def _curves(cells: list[Cell], out) -> list[list[tuple[int, float]]]:
    return [[(r["step"], r["eval_accuracy"]) for r in record_lines(record_dir(c, out) / "metrics.jsonl")
             if "eval_accuracy" in r]
            for c in cells if recorded(c, out)]


def write_report(cfg: StudyConfig, cmd: str, cells: list[Cell], picks: dict, design: Design) -> dict:
    """``<cfg.out>.{md,json,csv}`` and the figure: one row per cell label (seed-and-question intervals on
    each split, the finished share, each seed's accuracy), the paired comparisons with P(A > B), and
    the tuning grid with its picks. Returns the JSON content."""
    from ..plots import plot_seed_bands, plot_study_rows

    rows: dict[str, list[Cell]] = {}
    for c in cells:
        rows.setdefault(c.label, []).append(c)
    table = [{"row": label, "method": group[0].method, "seeds_planned": len(group),
              **{split: row_stats(cfg.out, group, split) for split in design.splits}} for label, group in rows.items()]
    comparisons = [{"a": a, "b": b, "split": split, **(compare(cfg.out, rows.get(a, []), rows.get(b, []), split) or {})}
                   for a, b in design.comparisons for split in design.splits]
    curves = {label.split(",")[0]: runs for label, group in rows.items() if label.endswith(design.curve_rows)
              if (runs := _curves(group, cfg.out))}
    base = row_stats(cfg.out, rows.get("Base", []), "validation") if "Base" in rows else None
    figure = plot_seed_bands(curves, f"figures/{design.name}.png", eval_n=design.curve_n,
                             start=None if base is None else base["mean"],
                             title=f"{design.curve_rows} runs: validation accuracy, greedy (%)") if curves else None
    n = sorted({x for e in table for split in design.splits if e[split] for x in e[split]["n"]})
    rows_figure = plot_study_rows(table, f"figures/{design.name}_rows.png", splits=design.splits,
                                  n_note=f"n = {'/'.join(map(str, n))} questions per seed and split")
    meta = portable({"command": cmd, "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "design": {**(design.info or {}), "grid": design.grid}, "picks": picks, "rows": table,
                     "comparisons": comparisons, "figure": figure, "rows_figure": rows_figure})
    with writing(f"the study's report {cfg.out}.*", "its run records are untouched: rerun with --phase report"):
        Path(f"{cfg.out}.json").write_text(json.dumps(meta, indent=1, default=str))
        with open(f"{cfg.out}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "split", "mean", "ci_lo", "ci_hi", "ci", "seeds", "n", "per_seed", "finished"])
            for e in table:
                for split in design.splits:
                    if c := e[split]:
                        w.writerow([e["row"], split, c["mean"], *c["ci95"], c["ci"], c["seeds"], c["n"][0],
                                    " ".join(f"{x:.3f}" for x in c["per_seed"]), c["finished"]])
        Path(f"{cfg.out}.md").write_text(report_markdown(meta, design, cfg.out))
    print(f"{cfg.out}.md, .json, .csv, {rows_figure}" + (f", {figure}" if figure else ""))
    return meta


def report_markdown(meta: dict, design: Design, out: str) -> str:
    lines = [f"# {design.title}", "",
             f"Command: `{meta['command']}` at commit `{meta['git_commit']}` (the records of every run are in "
             f"`{portable(str(out))}/`, one folder per run with its commands). Embedded SmolLM2-135M-Instruct, CPU, fp32.",
             "", design.intro, "", "## Tuning (validation only, the same budget for every method)", "",
             design.grid, "", "| method | lr | T | validation % per seed | mean % | picked |", "|---|---|---|---|---|---|"]
    for m, p in meta["picks"].items():
        for r in p["grid"]:
            per = " / ".join(pct(a) for a in r["validation"])
            lines.append(f"| {m} | {r['lr']:g} | {r.get('temperature', '–')} | {per} | {pct(r['mean'])} | "
                         f"{'**yes**' if r.get('picked') else ''} |")
    heads = " | ".join(f"{s} % [95%]" for s in design.splits)
    lines += ["", "## Results (final models, no selection: the last step of each run)", "",
              f"| row | {heads} | finished % | seeds recorded | per-seed {design.splits[0]} % |",
              "|---" * (4 + len(design.splits)) + "|"]
    for e in meta["rows"]:
        t = e[design.splits[0]]
        lines.append(f"| {e['row']} | " + " | ".join(format_stats(e[s]) for s in design.splits)
                     + f" | {pct(t['finished']) if t else '–'} | {t['seeds'] if t else 0} of {e['seeds_planned']} | "
                     + (" / ".join(pct(x) for x in t["per_seed"]) if t else "–") + " |")
    lines += ["", "## Comparisons (A − B, points [95% over seeds and questions], P(A>B))", "",
              "| A | B | " + " | ".join(design.splits) + " |", "|---|---|" + "---|" * len(design.splits)]
    by = {(c["a"], c["b"], c["split"]): c for c in meta["comparisons"]}
    for a, b in design.comparisons:
        cells = [format_difference(by[(a, b, s)] if "mean" in by[(a, b, s)] else None) for s in design.splits]
        lines.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
    lines += ["", f"Figure: `{meta['rows_figure']}` (the results table as a picture: each split's mean, bars "
                  "its 95% interval over seeds, then questions; one panel per training length)."]
    if meta["figure"]:
        lines += ["", f"Figure: `{meta['figure']}` ({design.curve_rows} runs, validation accuracy on {design.curve_n} "
                      "questions; line: mean over seeds, band: lowest to highest seed; star: the base model)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- a study's command line

def study_main(argv, *, script: str, tuning, finals, design: Design, eval_kw: dict, doc: str,
               defaults: dict | None = None) -> int:
    """A study script's ``main``: its flags are :class:`StudyConfig`'s (``defaults`` replace its defaults);
    ``tuning()``: [(cells, records folder or None for the study's own)], run first; ``finals(out)``:
    (cells, picks) once tuning is recorded; then the report. Exit 0, 1 (cells failed), 2 (a user
    error, one line), 130 (stopped: the recorded cells stay)."""
    import argparse

    from ..provenance import add_dataclass_args, config_from_args

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, StudyConfig)
    parser.set_defaults(**(defaults or {}))
    cfg = config_from_args(StudyConfig, parser.parse_args(argv))
    try:
        if cfg.phase not in ("tune", "final", "report", "all"):
            raise ConfigError(f"--phase {cfg.phase!r} is not one of tune, final, report, all")
        failed = []
        if cfg.phase in ("tune", "all"):
            for cells, home in tuning():
                failed += run_cells(cells, dataclasses.replace(cfg, out=home or cfg.out), eval_kw)
        if cfg.phase in ("final", "all"):
            failed += run_cells(finals(Path(cfg.out))[0], cfg, eval_kw)
        if cfg.phase in ("report", "all") and not cfg.dry_run:
            cells, picks = finals(Path(cfg.out))
            write_report(cfg, command_line("study", cfg).replace("latro study", f"python {script}"), cells, picks, design)
    except LatroError as e:
        print(f"study: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: stopped; the recorded cells stay, rerun the same command to continue", file=sys.stderr)
        return 130
    if failed:
        print(f"study: {len(failed)} cells failed: {', '.join(failed)} (logs under {cfg.scratch}/)", file=sys.stderr)
        return 1
    return 0
