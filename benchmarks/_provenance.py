"""What every benchmark report records about where it ran: the machine and the git commit.

Shared by benchmarks/generation.py, latro_update.py and precision.py (imported as
``benchmarks._provenance`` after they put the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import subprocess
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


def git_commit() -> str:
    """``HEAD``'s hash, plus the latro_core .py files with uncommitted changes (what was timed)."""
    from latro_core.cli import git_commit as commit

    return commit(ROOT, dirty=True) or "unknown"
