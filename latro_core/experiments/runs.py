"""The runs the notebooks share: where the data is, training runs (here, as child processes several at
a time, or under ``accelerate launch``) with model selection on validation, evaluations, and what
each run selected. The notebooks call these rather than re-implementing them:

- :func:`notebook_setup`  the repository root, data folder, figures and results folders, torch threads;
- :func:`resolve_data_dir`, :func:`task_available`  where GSM8K / ARC live, and whether they load;
- :func:`train_run`, :func:`train_all`, :func:`train_runs`  training runs, keeping the model with
  the best validation accuracy (``TrainConfig.keep_best``), or an ``accelerate launch`` subprocess;
- :func:`evaluate_all`  evaluations, several at a time as ``latro evaluate`` child processes;
- :func:`run_report`, :func:`selection_markdown`  what each run selected, and the paper's rule.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
from pathlib import Path

from ..provenance import cli_flags
from ..errors import ConfigError, LatroError
from .children import ChildProcesses
from .profiles import ACCELERATE_CONFIG


# ============================================================================ small helpers

def has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def resolve_data_dir(root: str | Path | None = None) -> str | None:
    """The GSM8K / ARC data folder: ``$LATRO_DATA_DIR``, else ``<root>/../shared/data`` when that
    folder exists (the layout of this project's workspace), else None (the Hugging Face hub)."""
    if os.environ.get("LATRO_DATA_DIR"):
        return os.environ["LATRO_DATA_DIR"]
    if root is not None and (cand := Path(root).resolve().parent / "shared" / "data").is_dir():
        return str(cand)
    return None


def task_available(task: str, split: str = "test", data_dir: str | None = None, allow_hub: bool = True) -> bool:
    """Whether ``task``/``split`` can be loaded: the arithmetic task always; GSM8K / ARC from
    ``<data_dir>/<task>/<split>.jsonl``, or (``allow_hub``) from the Hugging Face hub. Prints how to
    make it available when it is not."""
    from ..tasks import get_task

    folder = get_task(task).data_folder
    if folder is None:
        return True
    if data_dir and (Path(data_dir) / folder / f"{split}.jsonl").is_file():
        return True
    if allow_hub:
        from ..tasks import load_task
        try:
            load_task(task, split, data_dir=data_dir)
            return True
        except LatroError as e:
            print(f"{task} unavailable: {e}")
            return False
    print(f"{task} {split} is not available locally (data_dir={data_dir!r}), and the hub is not tried in "
          f"this profile. To enable it: set LATRO_DATA_DIR to a folder holding {folder}/{split}.jsonl "
          f"(see the data README), or run the demo profile, which also downloads from the Hugging Face hub.")
    return False


def run_name(method: str, seed: int, model: str | None = None, tag: str = "") -> str:
    """Folder name of one training run: ``latro-seed0``, ``sft-Phi-3.5-mini-instruct-seed1``, ``latro-L24-seed0``."""
    parts = [method] + ([Path(model).name] if model else []) + ([tag] if tag else []) + [f"seed{seed}"]
    return "-".join(parts)


def load_eval_model(model: str | None, dtype: str = "fp32", device: str = "auto"):
    """``(model, tokenizer)`` for evaluating a model folder, hub id or None (embedded) several times
    in a row (pass both to ``run_evaluation``); a LoRA run's adapter folder goes on its base model."""
    from ..evaluate import resolve_model
    from ..models import load_model

    base, adapter, _ = resolve_model(model)
    return load_model(base, dtype=dtype, device=device, adapter=adapter)


def train_args(cfg) -> list[str]:
    """The ``latro`` arguments that train :class:`~latro_core.trainer.TrainConfig` ``cfg``:
    the method's sub-command (``train|sft|rft``), then ``--flag value ...``."""
    from ..methods import get_method

    return [get_method(cfg.method).command] + cli_flags(cfg, skip=("method",))


def launch_command(cfg, accelerate_config: str = ACCELERATE_CONFIG, num_processes: int | None = None) -> list[str]:
    """``accelerate launch --config_file <yaml> -m latro_core.cli train|sft|rft --flag value ...`` for a
    :class:`~latro_core.trainer.TrainConfig`."""
    return (["accelerate", "launch", "--config_file", str(accelerate_config)]
            + (["--num_processes", str(num_processes)] if num_processes else [])
            + ["-m", "latro_core.cli"] + train_args(cfg))


# ============================================================================ training runs

def _run_config(cfg, test_limit: int, test_max_new_tokens: int | None, keep_resume_state: bool):
    """``cfg`` as a notebook trains it: the best model on validation kept (``keep_best``), the paper's
    test rule logged beside it, and (unless resuming) a rerun starting over in its folder."""
    return dataclasses.replace(cfg, keep_best=True, test_limit=test_limit, test_max_new_tokens=test_max_new_tokens,
                               keep_resume_state=keep_resume_state, overwrite=cfg.overwrite or not cfg.resume)


def train_run(cfg, *, launch: str = "inline", accelerate_config: str = ACCELERATE_CONFIG,
              num_processes: int | None = None, test_limit: int = 0, test_max_new_tokens: int | None = None,
              keep_resume_state: bool = True, cwd: str | Path | None = None, **trainer_kw) -> dict:
    """Train one run and return :func:`run_report` of it.

    launch="inline": in this process; "subprocess": ``latro train`` in a child process (one torch
    thread unless OMP_NUM_THREADS says otherwise; :func:`train_runs` runs several at once). Both keep
    the best model by validation accuracy (``TrainConfig.keep_best``); ``test_limit`` > 0 also logs
    test accuracy for the paper's rule; ``keep_resume_state=False`` writes no resumable
    ``checkpoint/`` (optimizer state), only the models (``final``, and ``best`` when it differs).
    launch="accelerate": print and run :func:`launch_command` (needs a GPU; the plain trainer keeps
    only the final model, so the report selects ``final``).
    """
    if launch == "accelerate":
        cmd = launch_command(cfg, accelerate_config, num_processes)
        print("$ " + shlex.join(cmd), flush=True)
        if not Path(cwd or ".", accelerate_config).exists():
            print(f"warning: accelerate config {accelerate_config} not found (relative to {cwd or os.getcwd()})")
        if not has_gpu():
            raise ConfigError("the paper profile trains 3.8-8B models with accelerate on GPUs, and no CUDA GPU is "
                              "visible; run the command above on a GPU machine (or use --profile demo).")
        r = subprocess.run(cmd, cwd=cwd)
        if r.returncode != 0:
            raise LatroError(f"training command failed with exit status {r.returncode}: {shlex.join(cmd)}")
    elif launch == "inline":
        from ..trainer import Trainer
        Trainer(_run_config(cfg, test_limit, test_max_new_tokens, keep_resume_state), **trainer_kw).train()
    elif launch == "subprocess":
        return train_runs([cfg], parallel=1, test_limit=test_limit, test_max_new_tokens=test_max_new_tokens,
                          keep_resume_state=keep_resume_state, cwd=cwd)[0]
    else:
        raise ConfigError(f"launch={launch!r} is not one of 'inline', 'subprocess', 'accelerate'")
    return run_report(cfg.out_dir)


def train_all(cfgs, *, parallel: int = 1, launch: str = "inline", cwd: str | Path | None = None,
              **run_kw) -> list[dict]:
    """Train every config: ``parallel`` > 1 (and not ``accelerate``) as that many ``latro train`` child
    processes at a time (:func:`train_runs`), else one after another (:func:`train_run`).
    ``run_kw``: test_limit, test_max_new_tokens, keep_resume_state, accelerate options."""
    if parallel > 1 and launch != "accelerate":
        keep = {k: v for k, v in run_kw.items() if k in ("test_limit", "test_max_new_tokens", "keep_resume_state")}
        return train_runs(list(cfgs), parallel=parallel, cwd=cwd, **keep)
    return [train_run(c, launch=launch, cwd=cwd, **run_kw) for c in cfgs]


def train_runs(cfgs, *, parallel: int = 2, threads: int = 1, test_limit: int = 0,
               test_max_new_tokens: int | None = None, keep_resume_state: bool = True,
               cwd: str | Path | None = None) -> list[dict]:
    """Train several runs as ``latro train`` child processes, ``parallel`` at a time with ``threads``
    torch threads each (on 2 cores, two 1-thread runs do more per second than one 2-thread run:
    results/latro_step_throughput.md). Each child's output goes to ``<out_dir>.log``; a failed run
    raises LatroError naming its log. Returns :func:`run_report` of each run, in order."""
    runs = [_run_config(c, test_limit, test_max_new_tokens, keep_resume_state) for c in cfgs]
    run_children([(train_args(dataclasses.replace(c, progress=False)), f"{c.out_dir}.log") for c in runs],
                 parallel=parallel, threads=threads, cwd=cwd, what="training")
    return [run_report(c.out_dir) for c in cfgs]


def evaluate_all(cfgs, *, parallel: int = 1, threads: int = 1, cwd: str | Path | None = None) -> list[dict]:
    """:func:`~latro_core.evaluate.run_evaluation` of every :class:`~latro_core.evaluate.EvalConfig`:
    ``parallel`` > 1 as that many ``latro evaluate`` child processes at a time (logs: ``<out>.log``),
    else one after another here. Returns each summary (``summary.json``), in order. A rerun replaces
    its earlier results (``overwrite``), as the notebooks' training runs start over."""
    from ..evaluate import run_evaluation

    cfgs = [dataclasses.replace(c, overwrite=True) for c in cfgs]
    if parallel <= 1:
        return [run_evaluation(c) for c in cfgs]
    if any(c.out is None for c in cfgs):
        raise ConfigError("evaluate_all with parallel > 1 needs every EvalConfig's `out` folder set")
    run_children([(["evaluate"] + cli_flags(dataclasses.replace(c, progress=False)), f"{c.out}.log") for c in cfgs],
                 parallel=parallel, threads=threads, cwd=cwd, what="evaluation")
    return [{**json.loads(Path(cwd or ".", c.out, "summary.json").read_text()), "out": c.out} for c in cfgs]


def run_children(jobs, *, parallel: int, threads: int, cwd: str | Path | None, what: str) -> None:
    """Run ``latro <args>`` for each ``(args, log_path)`` of ``jobs`` as child processes, ``parallel``
    at a time, ``threads`` torch threads each, output to the log. Failures: one LatroError naming the
    logs, after the others finished. Interrupted (Ctrl-C, SIGTERM): the children are stopped too
    (:class:`~latro_core.experiments.children.ChildProcesses`)."""
    with ChildProcesses(threads=threads, cwd=cwd) as children:
        children.run_all(list(jobs), parallel, what)


def run_report(out_dir: str | Path) -> dict:
    """What a finished run selected: ``model`` (the folder to evaluate: ``best`` when validation
    selection kept one, else ``final``), ``selected_by``, ``best_step`` / ``best_eval``, the
    evaluation ``history`` [(step, eval_accuracy, test_accuracy)], and ``paper_rule``: the best
    test accuracy over the evaluations (the paper's rule, optimistic), when test was measured."""
    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    rows = []
    if (out / "metrics.jsonl").exists():
        rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    split = cfg.get("eval_split", "validation")
    hist = [(m["step"], m["eval_accuracy"], m.get("test_accuracy", m["eval_accuracy"] if split == "test" else None))
            for m in rows if "eval_accuracy" in m]
    report = {"out": str(out), "config": cfg, "method": cfg.get("method"), "seed": cfg.get("seed"), "eval_split": split,
              "steps": cfg.get("steps"), "history": hist, "model": str(out / "final"),
              "selected_by": "final", "best_step": cfg.get("steps"), "best_eval": None, "paper_rule": None}
    best = json.loads((out / "best.json").read_text()) if (out / "best.json").exists() else None
    if best is not None:
        report.update(model=str(out / "best") if (out / "best").exists() else str(out / "final"),
                      selected_by=f"{best.get('eval_split', split)} accuracy",
                      best_step=best["step"], best_eval=best["eval_accuracy"])
    tested = [(s, t) for s, _, t in hist if t is not None]
    if tested:
        s, t = max(tested, key=lambda st: (st[1], -st[0]))
        report["paper_rule"] = {"step": s, "test_accuracy": t}
    return report


def selection_markdown(reports: dict[str, dict]) -> str:
    """A Markdown table: per run, the step chosen on validation, its validation and test accuracy,
    and the paper's rule (the best test accuracy over all evaluated steps, labelled as such)."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    lines = ["| run | selected by | step | validation acc | test acc at that step | "
             "paper's rule: best test acc over steps (step) |", "|---|---|---|---|---|---|"]
    for label, r in reports.items():
        at = {s: t for s, _, t in r["history"]}
        pr = r["paper_rule"]
        lines.append(f"| {label} | {r['selected_by']} | {r['best_step']} | "
                     f"{pct(r['best_eval']) if r['eval_split'] != 'test' else '–'} | {pct(at.get(r['best_step']))} | "
                     + (f"{pct(pr['test_accuracy'])} ({pr['step']})" if pr else "–") + " |")
    return "\n".join(lines) + "\n"


def notebook_setup(cwd: str | Path | None = None) -> tuple[Path, str | None, Path, Path]:
    """``(ROOT, DATA, FIG, RES)`` for a notebook run from the repository or its ``notebooks/`` folder:
    the repository root, the GSM8K / ARC folder (:func:`resolve_data_dir`; None: the hub), and
    ``figures/`` and ``results/`` (created). Also sets torch's threads (one per free core,
    ``LATRO_THREADS=n`` overrides: ``models.set_threads``) and prints the count."""
    from ..models import set_threads

    here = Path(cwd or Path.cwd())
    root = here if (here / "latro_core").exists() else here.parent
    fig, res = root / "figures", root / "results"
    fig.mkdir(exist_ok=True)
    res.mkdir(exist_ok=True)
    print(f"torch threads: {set_threads()}   (one per free core; LATRO_THREADS=n sets it)")
    return root, resolve_data_dir(root), fig, res
