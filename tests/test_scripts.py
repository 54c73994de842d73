"""Every script under scripts/ runs from a clean clone: one smoke run each, from the repository root, with
nothing but the committed files (``--help``, a dry run, or a run that only reads committed files).

scripts/tools/ holds the tools (code size, the step reading, replaying a record, the Colab cell, the GPU
check, the sweep summary); scripts/studies/ the study drivers (the arithmetic and rewards studies, the
recipe sweep and its seeds, the demo's self-evaluation). A new script gets a case here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def python(script, *args, **kw):
    return run(sys.executable, ROOT / "scripts" / script, *args, **kw)


def bash(script, *args, **kw):
    return run("bash", ROOT / "scripts" / script, *args, **kw)


def test_every_script_is_sorted_into_tools_or_studies_and_has_a_smoke_case_here():
    here = Path(__file__).read_text()
    scripts = sorted(p.relative_to(ROOT / "scripts").as_posix() for p in (ROOT / "scripts").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert scripts and all(s.split("/")[0] in ("tools", "studies") and s.count("/") == 1 for s in scripts), scripts
    assert [s for s in scripts if f'"{s}"' not in here] == []


def test_shell_scripts_have_a_shebang_and_no_machine_path():
    for p in (ROOT / "scripts").rglob("*.sh"):
        text = p.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), p
        assert "/work/" not in text and "/home/" not in text, p


# ----------------------------------------------------------------------------- tools

def test_code_size_prints_the_table_of_latro_core():
    r = python("tools/code_size.py")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trainer.py" in r.stdout
    assert python("tools/code_size.py", "--help").stdout.startswith("How big latro_core is")


def test_step_reading_help():
    r = python("tools/step_reading.py", "--help")
    assert r.returncode == 0 and "--json" in r.stdout, r.stderr[-2000:]


def test_replay_record_help():
    r = python("tools/replay_record.py", "--help")
    assert r.returncode == 0 and "record" in r.stdout and "--atol" in r.stdout, r.stderr[-2000:]


def test_colab_cell_finds_the_cell_in_every_notebook():
    r = python("tools/colab_cell.py")
    assert r.returncode == 0 and "notebooks hold the Colab cell" in r.stdout, r.stdout + r.stderr[-2000:]


def test_gpu_check_help():
    r = bash("tools/gpu_check.sh", "--help")
    assert r.returncode == 0 and "bash scripts/tools/gpu_check.sh --dry-run" in r.stdout, r.stderr



def test_compat_help():
    if not (ROOT / "scripts" / "tools" / "compat.py").exists():
        pytest.skip("scripts/tools/compat.py (make test-compat) is not in this checkout")
    r = python("tools/compat.py", "--help")
    assert r.returncode == 0 and "--only" in r.stdout, r.stderr[-2000:]


def test_summarize_sweep_help():
    r = python("tools/summarize_sweep.py", "--help")
    assert r.returncode == 0 and "--from-table" in r.stdout, r.stderr[-2000:]


# ----------------------------------------------------------------------------- studies

@pytest.mark.parametrize("script", ["studies/study_arithmetic.py", "studies/study_rewards.py"])
def test_a_study_dry_run_reads_its_committed_records(script):
    r = python(script, "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cells recorded" in r.stdout


def test_recipe_sweep_dry_run_prints_the_runs_it_would_start():
    r = bash("studies/recipe_sweep.sh", "--dry-run", "r05_T0.7_lr2e-5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "scripts/studies/sweep_latro.sh r05_T0.7_lr2e-5 --steps 12 --questions-per-step 2 --k 8 --max-new-tokens 64 "
        "--micro-batch 16 --eval-every 6        --temperature 0.7 --lr 2e-5 --overwrite"]


@pytest.mark.parametrize("script", ["studies/sweep_latro.sh", "studies/recipe_seeds.sh", "studies/self_eval_demo.sh",
                                    "studies/recipe_sweep.sh"])
def test_a_study_shell_script_shows_its_usage(script):
    r = bash(script, "--help")
    assert r.returncode == 0 and f"scripts/{script}" in r.stdout, (r.stdout, r.stderr)
    assert run("bash", "-n", ROOT / "scripts" / script).returncode == 0          # it parses
