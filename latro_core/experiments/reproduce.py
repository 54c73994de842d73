"""``latro reproduce``: run the notebooks headless for a profile.

:func:`reproduce` executes ``notebooks/*.ipynb`` in order with papermill (``-p profile <profile>``),
writing each executed notebook to ``<out>/<profile>/<name>.ipynb``; for the demo profile it also
saves the outputs into the committed notebooks (:func:`save_outputs`). A notebook that completed
before (its ``<name>.done`` marker exists and its cell sources and settings are unchanged) is
skipped unless ``force``; a failing notebook stops the run with its name and the executed notebook
to inspect. It ends with a summary: wall time per notebook and the files written under
``figures/`` and ``results/`` while it ran. The ``paper`` profile needs a CUDA GPU (``force``
overrides the check). The helpers the notebooks share (data, training and evaluation runs) are in
:mod:`latro_core.experiments.runs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, LatroError
from .profiles import GPU_MODEL, GPU_PROFILES, check_profile, notebook_name, settings
from .runs import has_gpu


class ReproduceError(LatroError):
    """A notebook failed during ``latro reproduce`` (the message names it and its executed copy)."""


@dataclass
class ReproduceConfig:
    """``latro reproduce``: execute the notebooks for a profile (smoke | demo | paper)."""

    profile: str = "demo"
    notebooks: str = ""               # comma list of names (or unique prefixes, "04"); empty: all, in order
    out: str = "runs/reproduce"       # executed notebooks and .done markers go to <out>/<profile>/
    force: bool = False               # rerun completed notebooks; run the paper profile without a GPU
    kernel: str | None = None         # Jupyter kernel name; None: the notebook's own (python3)
    notebook_dir: str = "notebooks"
    save_outputs: bool | None = None  # write each executed notebook's outputs into its notebooks/*.ipynb, so it
                                      # opens with them; None: for the demo profile only


# ============================================================================ reproduce

def _source_sha256(path: Path) -> str:
    """A fingerprint of a notebook's cell sources: its saved outputs (``save_outputs``) do not count."""
    import nbformat

    cells = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def save_outputs(executed: Path, notebook: Path, provenance: dict) -> None:
    """Copy the outputs of ``executed`` (papermill's run of ``notebook``) into ``notebook`` itself, so
    the committed notebook opens with them; papermill's injected-parameters cell is left out, every
    other cell must have the source it ran with. ``provenance`` goes to the metadata (``latro``)."""
    import nbformat

    ran, nb = nbformat.read(executed, as_version=4), nbformat.read(notebook, as_version=4)
    cells = [c for c in ran.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if [(c.cell_type, c.source) for c in cells] != [(c.cell_type, c.source) for c in nb.cells]:
        raise ReproduceError(f"{notebook} changed while it ran; its outputs were not saved (rerun it)")
    for mine, theirs in zip(nb.cells, cells):
        if mine.cell_type == "code":
            mine.outputs, mine.execution_count = clean_outputs(theirs.outputs), theirs.execution_count
    nb.metadata["latro"] = provenance
    nbformat.write(nb, notebook)


# a tqdm bar, whatever its unit: "| 3/12 [00:41<02:01, 13.53s/step" (n/total [elapsed<remaining)
_TQDM_BAR = re.compile(r"\| *\d+/\d+ \[\d+:\d+")


def clean_outputs(outputs: list) -> list:
    """A cell's outputs as committed: progress-bar noise (tqdm's stderr: its bars and its "IProgress
    not found" warning) dropped, and this machine's repository path removed from the text
    (:func:`~latro_core.provenance.portable`)."""
    from ..provenance import portable

    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr" and (
                "TqdmWarning" in out["text"] or _TQDM_BAR.search(out["text"])):
            continue
        if out.get("output_type") == "stream":
            out["text"] = portable(out["text"])
        for kind, value in (out.get("data") or {}).items():
            if kind.startswith("text/") or kind == "application/json":
                out["data"][kind] = portable(value)
        kept.append(out)
    return kept


def select_notebooks(notebook_dir: str | Path, names: str = "") -> list[Path]:
    """The notebooks to run, in order: every ``*.ipynb`` in ``notebook_dir`` (sorted), or those named
    in the comma list ``names`` (a full name or a unique prefix such as ``04``)."""
    folder = Path(notebook_dir)
    found = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not found:
        raise ConfigError(f"no notebooks (*.ipynb) in {folder.resolve()}; run from the repository root "
                          f"or pass --notebook-dir.")
    if not names.strip():
        return found
    chosen = []
    for want in (notebook_name(n.strip()) for n in names.split(",") if n.strip()):
        hits = [p for p in found if p.stem == want] or [p for p in found if p.stem.startswith(want)]
        if len(hits) != 1:
            raise ConfigError(f"notebook {want!r} {'is ambiguous' if hits else 'not found'} in {folder}; "
                              f"available: {', '.join(p.stem for p in found)}.")
        if hits[0] not in chosen:
            chosen.append(hits[0])
    return sorted(chosen)


def _snapshot(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for f in folders if f.is_dir() for p in f.rglob("*") if p.is_file()}


def _settings_sha256(nb: Path, profile: str) -> str:
    """A fingerprint of the notebook's parameters under ``profile`` (``profiles.settings``), so that
    changing a number in profiles.py reruns the notebook; "" for a notebook the table does not know."""
    try:
        chosen = settings(nb.stem, profile)
    except ConfigError:
        return ""
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()


def _skip(nb: Path, executed: Path, marker: Path, force: bool, profile: str) -> dict | None:
    """The marker's record when ``nb`` completed before with the same source and the same profile
    settings, else None."""
    if force or not (marker.exists() and executed.exists()):
        return None
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return None
    same = done.get("source_sha256") == _source_sha256(nb) and done.get("settings_sha256") == _settings_sha256(nb, profile)
    return done if same else None


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def format_summary(summary: dict) -> str:
    rows = summary["notebooks"]
    w = max([len("notebook")] + [len(r["notebook"]) for r in rows])
    lines = [f"latro reproduce: profile {summary['profile']}, {len(rows)} notebook(s), "
             f"{_fmt_s(summary['wall_s'])} in all", "",
             f"{'notebook':<{w}}  {'status':<8}  {'wall':>9}  executed notebook"]
    for r in rows:
        wall = _fmt_s(r.get("wall_s")) + (" (before)" if r["status"] == "skipped" else "")
        lines.append(f"{r['notebook']:<{w}}  {r['status']:<8}  {wall:>9}  {r['executed']}")
    lines += ["", f"files written or updated in figures/ and results/ during the run ({len(summary['files'])}):"]
    lines += [f"  {f}" for f in summary["files"]] or ["  (none)"]
    return "\n".join(lines)


def reproduce(cfg: ReproduceConfig) -> dict:
    """Execute the notebooks for ``cfg.profile`` (see the module docstring); returns the summary
    {"profile", "notebooks": [{notebook, status, wall_s, executed}], "files", "wall_s"}, also
    written to ``<out>/<profile>/summary.json``."""
    from tqdm.auto import tqdm

    profile = check_profile(cfg.profile)
    if profile in GPU_PROFILES and not cfg.force and not has_gpu():
        need = "3.8-8B models" if profile == "paper" else f"{GPU_MODEL} with LoRA"
        raise ConfigError(f"the {profile} profile trains {need} and needs a CUDA GPU, and none is visible; use "
                          f"--profile demo on a CPU (or {profile}-smoke: its settings at smoke sizes), or pass "
                          f"--force to run it anyway.")
    nb_dir = Path(cfg.notebook_dir).resolve()
    notebooks = select_notebooks(nb_dir, cfg.notebooks)
    out = Path(cfg.out) / profile
    out.mkdir(parents=True, exist_ok=True)
    watched = (nb_dir.parent / "figures", nb_dir.parent / "results")
    before = _snapshot(*watched)
    t_all = time.time()
    rows = []

    def summary() -> dict:
        after = _snapshot(*watched)
        files = sorted(os.path.relpath(p, nb_dir.parent) for p, t in after.items() if before.get(p) != t)
        s = {"profile": profile, "notebooks": rows, "files": files, "wall_s": time.time() - t_all}
        (out / "summary.json").write_text(json.dumps(s, indent=1))
        print("\n" + format_summary(s), flush=True)
        return s

    bar = tqdm(notebooks, desc=f"reproduce {profile}", unit="notebook", position=0)
    for nb in bar:
        name, executed, marker = nb.stem, out / f"{nb.stem}.ipynb", out / f"{nb.stem}.done"
        bar.set_postfix_str(name)
        done = _skip(nb, executed, marker, cfg.force, profile)
        if done is not None:
            rows.append({"notebook": name, "status": "skipped", "wall_s": done.get("wall_s"), "executed": str(executed)})
            tqdm.write(f"{name}: completed before ({done.get('finished')}), skipped; --force reruns it")
            continue
        t0 = time.time()
        try:
            _run_notebook(cfg, nb, executed, marker, profile)
        except ReproduceError:
            rows.append({"notebook": name, "status": "FAILED", "wall_s": time.time() - t0, "executed": str(executed)})
            bar.close()
            summary()
            raise
        rows.append({"notebook": name, "status": "ran", "wall_s": time.time() - t0, "executed": str(executed)})
    bar.close()
    return summary()


def _run_notebook(cfg: ReproduceConfig, nb: Path, executed: Path, marker: Path, profile: str) -> None:
    """Execute ``nb`` with papermill into ``executed``; on success write its ``marker`` (what ran, its
    sources' and settings' fingerprints) and, for the demo profile, save its outputs into ``nb``.
    A failure is one ReproduceError naming the notebook, the cell and the executed copy."""
    import papermill

    marker.unlink(missing_ok=True)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.time()
    try:
        papermill.execute_notebook(str(nb), str(executed), parameters={"profile": profile},
                                   kernel_name=cfg.kernel, cwd=str(nb.parent), progress_bar=True)
    except Exception as e:  # noqa: BLE001 - any failure stops the run with the same message
        what = (f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}").strip()
        cell = f" in cell [{e.exec_count}]" if getattr(e, "exec_count", None) else ""
        raise ReproduceError(f"notebook {nb.stem} failed{cell} ({what.splitlines()[0][:300]}); the notebooks after "
                             f"it were not run. Inspect the executed notebook {executed}, fix, and rerun "
                             f"(completed notebooks are skipped).") from None
    wall = time.time() - t0
    marker.write_text(json.dumps({"notebook": nb.stem, "profile": profile, "started": started,
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(wall, 1),
                                  "source": str(nb), "source_sha256": _source_sha256(nb),
                                  "settings_sha256": _settings_sha256(nb, profile), "executed": str(executed),
                                  "python": sys.executable}, indent=1))
    if cfg.save_outputs or (cfg.save_outputs is None and profile == "demo"):
        from ..provenance import git_commit
        save_outputs(executed, nb, {"outputs": f"latro reproduce --profile {profile}", "commit": git_commit(nb.parent),
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": round(wall, 1)})


__all__ = ["ReproduceConfig", "ReproduceError", "reproduce", "select_notebooks", "format_summary", "save_outputs"]
