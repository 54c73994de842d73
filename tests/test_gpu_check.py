"""scripts/tools/gpu_check.sh on a CPU: --dry-run runs every step but the CUDA parts at tiny sizes (the
CUDA-only tests are skipped there, and the script says so); a short deadline records the steps it
cannot fit as "skipped (time)" and still writes the summary; --preflight reports the machine; a
carried wheel whose parts fail their checksum is deleted so that a retry rebuilds it."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("cuda_tests", "benchmark_update", "benchmark_generation", "train_gsm8k", "train_arithmetic", "eval_base",
         "eval_latro", "table")


def gpu_check(*args, **env):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "tools" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=900, cwd=ROOT)


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_every_step_and_writes_its_reports(tmp_path):
    r = gpu_check("--dry-run", LATRO_GPU_OUT=str(tmp_path), LATRO_GPU_RUNS=str(tmp_path / "runs"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    for step in STEPS:
        assert f"| {step} |" in summary and "FAILED" not in summary, step
        assert (tmp_path / f"{step}.log").exists(), step               # each log beside the summary
    assert summary.count("| ok |") == len(STEPS)
    assert "4 skipped" in (tmp_path / "cuda_tests.log").read_text()          # no GPU here: skipped, not failed
    for report in ("gpu_benchmark_latro_update.md", "gpu_generation.md"):
        assert (tmp_path / report).stat().st_size > 0, report
    table = (tmp_path / "gpu_latro_arithmetic.md").read_text()
    assert "| Base |" in table and "| LaTRO |" in table and "(n=4)" in table


@pytest.mark.slow
def test_a_check_past_its_deadline_records_every_step_it_could_not_fit_and_still_writes_the_summary(tmp_path):
    r = gpu_check("--dry-run", LATRO_GPU_OUT=str(tmp_path), LATRO_GPU_RUNS=str(tmp_path / "runs"), LATRO_GPU_DEADLINE="1")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert summary.count("skipped (time)") == len(STEPS) - 1                    # eval_latro: no trained model
    assert "| eval_latro |" in summary and "Finished:" in summary and "deadline 1 s" in summary


@pytest.mark.slow
def test_the_preflight_reports_the_machine_and_what_to_run_next(tmp_path):
    r = gpu_check("--preflight", OUT=str(tmp_path), LATRO_GPU_WHEELS=str(tmp_path / "no-wheels"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    report = (tmp_path / "gpu_preflight.md").read_text()
    import torch

    assert f"torch {torch.__version__}" in report and "torch.cuda.is_available(): False" in report
    assert "Next: `bash scripts/tools/gpu_check.sh` at once" in report


@pytest.mark.slow
def test_a_carried_wheel_that_fails_its_checksum_is_deleted_so_a_retry_rebuilds_it(tmp_path):
    whl = tmp_path / "whl"
    (whl / "parts").mkdir(parents=True)
    name = "model-0.1-py3-none-any.whl"
    (whl / "parts" / f"{name}.part-aa").write_bytes(b"first half")          # the second part never arrived
    digest = hashlib.sha256(b"first half" + b"second half").hexdigest()
    (whl / "parts" / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    r = gpu_check("--preflight", OUT=str(tmp_path / "out"), LATRO_GPU_WHEELS=str(whl))
    assert r.returncode != 0 and "failed its sha256" in (tmp_path / "out" / "gpu_preflight.log").read_text()
    assert not (whl / name).exists()                                         # deleted: a retry joins the parts again
    (whl / "parts" / f"{name}.part-ab").write_bytes(b"second half")
    gpu_check("--preflight", OUT=str(tmp_path / "out"), LATRO_GPU_WHEELS=str(whl))
    assert (whl / name).read_bytes() == b"first halfsecond half"


def test_the_gpu_check_refuses_an_unknown_option():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "tools" / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
