"""Provenance: what every results file records about how it was made (the git commit, the command
line that reproduces a config), the way back (a config dataclass's ``--flags``, which the CLI, the
notebooks' child runs and the studies all read), and paths made portable (no machine path in
anything committed). Ground floor: imports nothing of latro_core."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
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


# ----------------------------------------------------------------------------- flags → a config

def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def field_comments(cls) -> dict[str, str]:
    """{field: the ``# comment`` after it in the class source} (with its continuation lines): the
    dataclasses document their fields that way, and ``--help`` shows the same words."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, last = {}, None
    for line in lines:
        if m := re.match(r"\s+(\w+)\s*:[^#]*?#\s?(.*)$", line):
            last = m.group(1)
            out[last] = m.group(2).strip()
        elif last and (m := re.match(r"\s+#\s?(.*)$", line)):
            out[last] += " " + m.group(1).strip()
        else:
            last = None
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """One ``--flag`` per dataclass field (underscores become dashes), typed from the annotation,
    its help the field's comment."""
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        t = hints[f.name]
        args = typing.get_args(t)
        base = next((a for a in args if a is not type(None)), t) if args else t
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        # "%(default)s" is filled in when help is shown, so a parser's set_defaults shows in --help too
        help_ = (notes.get(f.name, "").replace("%", "%%") + " (default %(default)s)").strip()
        if base is bool:
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=default, help=help_)
        elif base is dict:
            parser.add_argument(flag, type=json.loads, default=default, help="JSON object; " + help_)
        elif base in (int, float, str):
            parser.add_argument(flag, type=base, default=default, help=help_)
        else:  # unions such as str | list[str]
            parser.add_argument(flag, type=str, default=default, help=help_)


def config_from_args(cls, ns: argparse.Namespace, **fixed):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(ns).items() if k in names}
    values.update(fixed)
    return cls(**values)
