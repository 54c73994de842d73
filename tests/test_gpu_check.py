"""scripts/gpu_check.sh --dry-run: the GPU check's every step but the CUDA parts, on this CPU at tiny
sizes (the CUDA-only tests are skipped there, and the script says so)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_runs_every_step_and_writes_its_reports(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "LATRO_GPU_OUT": str(tmp_path), "LATRO_GPU_RUNS": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                       env=env, timeout=900, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    steps = ("cuda_tests", "benchmark_update", "benchmark_generation", "train_latro", "eval_base", "eval_latro", "table")
    for step in steps:
        assert f"| {step} |" in summary and "FAILED" not in summary, step
    assert summary.count("| ok |") == len(steps)
    assert "3 skipped" in (tmp_path / "cuda_tests.log").read_text()          # no GPU here: skipped, not failed
    for report in ("gpu_benchmark_latro_update.md", "gpu_generation.md"):
        assert (tmp_path / report).stat().st_size > 0, report
    table = (tmp_path / "gpu_latro_gsm8k.md").read_text()
    assert "| Base |" in table and "| LaTRO |" in table and "(n=4)" in table


def test_the_gpu_check_refuses_an_unknown_option():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
