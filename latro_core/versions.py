"""The dependency ranges latro declares, checked against what is installed: one line per package
outside its range instead of a traceback from deep inside a library.

The ranges are read from the installed distribution's metadata (``importlib.metadata.requires("latro")``,
written from pyproject.toml by ``pip install``), so pyproject.toml stays their one source. ``import
latro_core`` prints the lines (once, to stderr) and goes on; the ``latro`` command prints them and stops
with status 2. ``LATRO_SKIP_VERSION_CHECK=1`` skips the check (e.g. to try a version not yet tested).
Where latro is not installed as a distribution (a bare source tree on ``sys.path``) there is nothing
to check against, and nothing is printed.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib import metadata

DIST = "latro"
SKIP_ENV = "LATRO_SKIP_VERSION_CHECK"


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def declared(dist: str = DIST, extras: tuple[str, ...] = ()) -> list:
    """``dist``'s requirements (packaging ``Requirement``s) that apply here: its core dependencies, and
    those of ``extras``; [] when ``dist`` is not installed."""
    from packaging.requirements import Requirement

    try:
        lines = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def problems(requirements=None, version_of=None) -> list[str]:
    """One line per requirement whose installed version lies outside its range (or that is missing),
    naming the package, the version found and the range. ``requirements``: default :func:`declared`,
    plus the ``notebooks`` and ``test`` extras' packages that are installed (a kernel needs them)."""
    version_of = version_of or installed_version
    if requirements is None:
        core = declared()
        extra = [r for r in declared(extras=("notebooks", "test")) if r not in core and version_of(r.name)]
        requirements = core + extra
    out = []
    for req in requirements:
        found = version_of(req.name)
        wanted = req.name + ",".join(sorted(map(str, req.specifier), key=lambda s: (not s.startswith(">"), s)))
        if found is None:
            out.append(f"latro: {req.name} is not installed; latro needs {wanted}: pip install '{wanted}'")
        elif req.specifier and not req.specifier.contains(found, prereleases=True):
            out.append(f"latro: {req.name} {found} is installed, outside the range latro supports ({wanted}): "
                       f"pip install '{wanted}' (or {SKIP_ENV}=1 to try it anyway)")
    return out


@functools.cache
def check() -> tuple[str, ...]:
    """:func:`problems` for this process, printed once to stderr; () under
    ``LATRO_SKIP_VERSION_CHECK=1`` or where the check itself cannot run."""
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        return ()
    try:
        lines = tuple(problems())
    except Exception:  # noqa: BLE001 - no packaging, unreadable metadata: the check must never break the import
        return ()
    for line in lines:
        print(line, file=sys.stderr)
    return lines
