"""Provenance: what every results file records about how it was made (the git commit, the command
line that reproduces a config), and paths made portable (no machine path in anything committed).
Ground floor: imports nothing of latro_core."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path


def cli_flags(cfg, skip=()) -> list[str]:
    """``--flag value`` pairs for the fields of dataclass ``cfg`` that differ from their defaults
    (None values left out): what :func:`add_dataclass_args` parses back into the same config."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in skip or v == default or v is None:
            continue
        out.append("--" + f.name.replace("_", "-"))
        out.append(json.dumps(v, separators=(",", ":")) if isinstance(v, dict)
                   else str(v).lower() if isinstance(v, bool) else str(v))
    return out


REPO_ROOT = str(Path(__file__).resolve().parents[1])


def portable(obj, root: str | None = None):
    """``obj`` (a str, or dicts and lists of them) with this machine's repository path removed: every
    "<repo>/x" becomes "x", "<repo>/../y" (a folder beside it, e.g. the data) "../y", and the module path Python puts in ``sys.argv[0]`` for ``-m latro_core.cli``
    becomes "latro". What results files and notebook outputs record, so that nothing committed
    holds a machine path."""
    root = (root or REPO_ROOT).rstrip("/")
    if isinstance(obj, str):
        parent = root.rsplit("/", 1)[0]
        start = r"(?<![\w:/.~-])"          # a path starts here, not inside a URL or another path
        out = re.sub(start + re.escape(f"{root}/latro_core/cli.py"), "latro", obj)
        out = re.sub(start + re.escape(f"{root}/"), "", out)
        return re.sub(start + re.escape(f"{parent}/"), "../", out) if parent else out   # beside it: ../shared/data
    if isinstance(obj, dict):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v, root) for v in obj)
    return obj


def command_line(sub: str, cfg) -> str:
    """The ``latro <sub> ...`` command that reproduces ``cfg``: the provenance every results file records."""
    import shlex

    return shlex.join(["latro", sub] + cli_flags(cfg))


def git_commit(cwd=None, dirty: bool = False) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``cwd`` (default: this package), or None;
    ``dirty``: plus the latro_core .py files with uncommitted changes (what a benchmark timed)."""
    import subprocess
    from pathlib import Path

    cwd = cwd or Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        commit = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None
        if commit and dirty:
            st = subprocess.run(["git", "status", "--porcelain", "latro_core"], cwd=Path(__file__).resolve().parents[1],
                                capture_output=True, text=True, timeout=10).stdout.split()
            files = [f for f in st if f.endswith(".py")]
            commit += f" + uncommitted changes to {', '.join(files)}" if files else ""
        return commit
    except (OSError, subprocess.SubprocessError):
        return None
