"""What every benchmark report records about where it ran: the machine and the git commit.

Shared by benchmarks/generation.py, latro_update.py and precision.py (and, for GPUs, the device, its
datasheet peak, clock synchronisation and CUDA peak memory) (imported as
``benchmarks._provenance`` after they put the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict:
    """CPU model (``lscpu``'s "Model name", else ``platform.processor()``), CPU count, torch and
    transformers versions, torch threads, Python version."""
    import transformers

    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def command_line() -> str:
    """The command that ran, as a shell would need it typed (``--ways "rollout ("`` stays one argument)."""
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def git_commit() -> str:
    """``HEAD``'s hash, plus the latro_core .py files with uncommitted changes (what was timed)."""
    from latro_core.provenance import git_commit as commit

    return commit(ROOT, dirty=True) or "unknown"


# ------------------------------------------------------------------------------------------- GPUs

# Vendors' datasheet peaks, dense (no sparsity), in TFLOP/s: (fp32 without TF32, bf16 tensor cores;
# the T4 has no bf16: its fp16 peak). Matched on torch.cuda.get_device_name(); --peak-tflops overrides.
PEAK_TFLOPS = (("H200", 67.0, 989.0), ("H100 PCIe", 51.0, 756.0), ("H100", 67.0, 989.0), ("A100", 19.5, 312.0),
               ("L40S", 91.6, 362.0), ("L4", 30.3, 121.0), ("T4", 8.1, 65.0))


def device_info(device: str) -> dict:
    """The GPU's name, memory and CUDA version when ``device`` is a CUDA device; {} otherwise."""
    if not str(device).startswith("cuda"):
        return {}
    p = torch.cuda.get_device_properties(torch.device(device))
    return {"gpu": p.name, "gpu_memory_gb": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}


def spec_peak_flops(device: str, dtype: str, override_tflops: float | None = None) -> float | None:
    """The datasheet peak FLOP/s of ``device`` for ``dtype`` ("fp32" or "bf16"), or None (CPU, unknown GPU)."""
    if override_tflops:
        return override_tflops * 1e12
    name = device_info(device).get("gpu", "")
    for key, fp32, bf16 in PEAK_TFLOPS:
        if key in name:
            return (bf16 if dtype in ("bf16", "fp16") else fp32) * 1e12
    return None


def sync(device) -> None:
    """Wait for the device's queued kernels (a no-op on CPU), so that a clock read after it times them."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def cuda_peak_mb(device) -> float | None:
    """The most CUDA memory tensors held since the last :func:`reset_cuda_peak` (None on CPU)."""
    return torch.cuda.max_memory_allocated() / 2**20 if str(device).startswith("cuda") else None


def reset_cuda_peak(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
