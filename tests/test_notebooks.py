"""The notebooks: every ``notebooks/*.py`` is paired with its ``.ipynb`` (jupytext, same cells, saved
without outputs), and every notebook runs top to bottom in a fresh kernel with the ``smoke`` profile.

Execution uses papermill (``-p profile smoke``) in a subprocess of this interpreter, so the kernel
is this environment's Python: jupyter_client starts a kernelspec whose command is ``python`` with
``sys.executable``. Executed copies go to pytest's tmp folder; runs, figures and tables go where the
notebooks put them (``runs/smoke/``, ``figures/*_smoke.png``, ``results/*_smoke.*``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PY_FILES = sorted(NOTEBOOKS.glob("[0-9]*.py"))
IPYNB_FILES = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
TIMEOUT_S = int(os.environ.get("LATRO_NOTEBOOK_TIMEOUT", "900"))   # per notebook; smoke takes ~1 min


def _cells(path: Path) -> list[tuple[str, str]]:
    import jupytext

    nb = jupytext.read(path)
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert IPYNB_FILES, f"no notebooks in {NOTEBOOKS}"


@pytest.mark.parametrize("py", PY_FILES, ids=[p.stem for p in PY_FILES])
def test_jupytext_pairing(py):
    """The .py (percent format) and the .ipynb hold the same cells; fix with `jupytext --sync`."""
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{py.name} has no paired {ipynb.name}; run: jupytext --set-formats ipynb,py:percent {py}"
    a, b = _cells(py), _cells(ipynb)
    assert [t for t, _ in a] == [t for t, _ in b], f"{py.name} and {ipynb.name} differ in cells; run jupytext --sync"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"cell {i} differs between {py.name} and {ipynb.name}; run: jupytext --sync {py}"


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=[p.stem for p in IPYNB_FILES])
def test_notebook_saved_clean(ipynb):
    """Paired, saved without outputs, with a `parameters` cell naming the profile."""
    assert ipynb.with_suffix(".py").exists(), f"{ipynb.name} has no paired .py (jupytext --set-formats ipynb,py:percent)"
    nb = json.loads(ipynb.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{ipynb.name}: code cells {dirty} were saved with outputs; clear them and save again"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{ipynb.name} needs exactly one cell tagged 'parameters' (papermill), found {len(params)}"
    assert "profile" in "".join(params[0]["source"]), f"{ipynb.name}: the parameters cell must set `profile`"
    assert nb["metadata"].get("kernelspec", {}).get("name"), f"{ipynb.name} has no kernelspec in its metadata"
    # papermill reads every `name = value  # help` line (`papermill --help-notebook`); a line it cannot
    # parse prints "Unable to parse line" at every run
    import nbformat
    from papermill.translators import PythonTranslator

    cell = nbformat.from_dict({**params[0], "source": "".join(params[0]["source"])})
    lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(PythonTranslator.inspect(cell)) == len(lines), f"{ipynb.name}: papermill cannot parse a parameters line"


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=[p.stem for p in IPYNB_FILES])
def test_notebook_runs_smoke(ipynb, tmp_path):
    out = tmp_path / ipynb.name
    cmd = [sys.executable, "-m", "papermill", str(ipynb), str(out), "-p", "profile", "smoke",
           "--cwd", str(NOTEBOOKS), "--no-progress-bar"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{ipynb.name} did not finish in {TIMEOUT_S} s with the smoke profile (partial output: {out})")
    assert r.returncode == 0, (f"{ipynb.name} failed with the smoke profile; executed notebook: {out}\n"
                               f"{(r.stdout + r.stderr)[-4000:]}")
