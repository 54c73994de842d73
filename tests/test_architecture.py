"""latro_core stands in layers: every import inside the package points down a layer or stays on its
own, and no chain of imports comes back to where it started (docs/architecture.md draws them).

The imports are read from the source (``ast``), function-level and ``TYPE_CHECKING`` ones included:
an import that only a type hint needs still ties the two modules together.
"""

import ast
import importlib.util
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latro_core"

# layer of each module, lowest first; a module imports only its own layer or lower ones
LAYERS = {
    # ground: no algorithm in them (a package's modules take its layer: tasks.base, tasks.numbers,
    # tasks.registry, tasks.gsm8k, tasks.arc, tasks.arithmetic are ground)
    "errors": 0, "stats": 0, "provenance": 0, "cpu_kernels": 0, "tasks": 0, "models": 0, "versions": 0,
    # the algorithm: sampling, scoring, the objective, and the answers a model gives
    "rollout": 1, "fast_logprobs": 1, "logprobs": 1, "objective": 1, "answers": 1, "policy": 1, "decoder": 1,
    # training: each method's step, the loop, its run folder, sharding
    "checkpoint": 2, "sharding": 2, "methods": 2, "train_config": 2, "trainer": 2, "processes": 2,
    # evaluation of trained models, tables, figures
    "evaluate": 3, "results": 3, "plots": 3,
    # orchestration for the notebooks and the studies
    "experiments": 4,
    # the command line, imported by nothing
    "cli": 5,
}
LAYER_NAMES = ("ground", "algorithm", "training", "evaluation", "orchestration", "command line")


def module_name(path: Path) -> str:
    """latro_core/experiments/runs.py -> "experiments.runs"; latro_core/__init__.py -> ""."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The latro_core modules ``path`` imports (names as :func:`module_name` gives them)."""
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("latro_core.") for a in node.names if a.name.startswith("latro_core.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
            elif node.module and (node.module == "latro_core" or node.module.startswith("latro_core.")):
                base = []
            else:
                continue
            mod = [p for p in (node.module or "").split(".") if p and p != "latro_core"] if not node.level \
                else [p for p in (node.module or "").split(".") if p]
            target = ".".join(base + mod)
            if not mod:          # from . import x / from latro_core import x: x is a module
                found |= {".".join(base + [a.name]) for a in node.names}
            else:
                found.add(target)
    return {m for m in found if m}


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in paths}
    graph = {}
    for p in paths:
        graph[module_name(p)] = {m for m in imports_of(p) if m in modules} - {module_name(p)}
    return graph


def layer(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0]) if module else None


def problems(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, every module without a layer, every cycle."""
    out = [f"{m} has no layer: add it to LAYERS (and docs/architecture.md)"
           for m in sorted(graph) if m and layer(m) is None]
    for m in sorted(graph):
        for dep in sorted(graph[m]):
            if m and layer(m) is not None and layer(dep) is not None and layer(dep) > layer(m):
                out.append(f"{m} ({LAYER_NAMES[layer(m)]}) imports {dep} ({LAYER_NAMES[layer(dep)]}), a higher layer")
    state, stack = {}, []

    def visit(m):                     # depth-first; a grey node met again closes a cycle
        state[m] = "grey"
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == "grey":
                out.append("cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = "black"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return out


def test_latro_core_imports_only_downward_and_has_no_cycle():
    graph = import_graph()
    assert {"trainer", "methods", "experiments.runs", "cli"} <= set(graph)
    assert {layer(m) for m in graph if m.split(".")[0] == "tasks"} == {0} and "tasks.registry" in graph
    assert problems(graph) == []


def test_nothing_imports_the_command_line_and_only_it_imports_the_orchestration():
    graph = import_graph()
    assert not [m for m, deps in graph.items() if "cli" in deps]
    assert not [m for m, deps in graph.items() if not m.startswith("experiments") and m != "cli"
                and any(d.startswith("experiments") for d in deps)]


def test_the_import_reader_sees_relative_absolute_and_function_level_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "latro_core"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "experiments" / "runs.py").write_text(
        "from ..errors import X\nfrom .profiles import Y\nfrom .. import trainer\n"
        "def f():\n    import latro_core.models\n    from latro_core.stats import z\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert imports_of(pkg / "experiments" / "runs.py") == {"errors", "experiments.profiles", "trainer", "models",
                                                            "stats"}


def test_the_check_catches_a_cycle_an_upward_import_and_a_module_without_a_layer():
    clean = {"errors": set(), "trainer": {"errors", "methods"}, "methods": {"errors"}}
    assert problems(clean) == []
    found = problems({**clean, "methods": {"errors", "trainer"}, "errors": {"cli"}, "scratch": set()})
    assert any(p.startswith("cycle: methods -> trainer -> methods") or p.startswith("cycle: trainer -> methods")
               for p in found), found
    assert "errors (ground) imports cli (command line), a higher layer" in found
    assert "scratch has no layer: add it to LAYERS (and docs/architecture.md)" in found


def _code_size():
    import importlib.util

    spec = importlib.util.spec_from_file_location("code_size", PACKAGE.parent / "scripts" / "tools" / "code_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_has_over_400_code_lines_and_no_function_over_50():
    """Prose (docstrings, comments) and blank lines are not counted: `python scripts/tools/code_size.py --check`."""
    assert _code_size().too_big(str(PACKAGE)) == []


def test_the_size_check_counts_code_lines_not_prose(tmp_path):
    code_size = _code_size()
    body = "\n".join(f"    x{i} = {i}" for i in range(51))
    prose = '    """' + "\n".join(["words"] * 80) + '"""\n' + "\n".join(["    # more words"] * 80)
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef wordy():\n{prose}\n    return 1\n")
    found = code_size.too_big(str(tmp_path))
    assert found == [f"{tmp_path / 'long.py'}: long has 52 code lines (at most 50)"], found


# ----------------------------------------------------------------------------- imports outside the package

ROOT = PACKAGE.parent
IMPORT_LINE = re.compile(r"from (latro_core(?:\.\w+)*) import ([\w, ()]+)")


def written_imports(text: str) -> list[tuple[str, list[str]]]:
    """Each ``from latro_core.x import a, b`` in a text (a shell script's Python, a notebook cell, a README
    example), as ("latro_core.x", ["a", "b"])."""
    found = []
    for module, names in IMPORT_LINE.findall(text):
        names = [n.strip() for n in names.replace("(", " ").replace(")", " ").split(",")]
        found.append((module, [n.split()[0] for n in names if n and n.split()[0].isidentifier()]))
    return found


def broken_imports(paths, root: Path = ROOT) -> list[str]:
    """The written imports among ``paths`` that name a module or a name latro_core does not have."""
    broken = []
    for path in paths:
        for module, names in written_imports(path.read_text(errors="replace")):
            try:
                imported = importlib.import_module(module)
            except ImportError:
                broken.append(f"{path.relative_to(root)}: no module {module}")
                continue
            broken += [f"{path.relative_to(root)}: {module} has no {name}" for name in names
                       if not hasattr(imported, name) and not (hasattr(imported, "__path__")
                                                             and importlib.util.find_spec(f"{module}.{name}"))]
    return broken


def test_every_latro_core_import_written_in_scripts_notebooks_and_docs_names_what_exists():
    # a moved function breaks a shell script's inline Python or a README example without failing any other test
    paths = [p for pattern in ("scripts/*/*", "notebooks/*.py", "*.md", "docs/*.md", "Makefile", ".ci/*")
             for p in ROOT.glob(pattern) if p.is_file()]
    assert broken_imports(paths) == []


def test_the_written_import_check_names_a_moved_function(tmp_path):
    script = tmp_path / "check.sh"
    script.write_text("python -c 'from latro_core.evaluate import ANSWER_TOKENS'\n"
                      "python -c 'from latro_core.answers import ANSWER_TOKENS, majority_vote'\n")
    assert broken_imports([script], root=tmp_path) == ["check.sh: latro_core.evaluate has no ANSWER_TOKENS"]


def test_one_latro_step_reads_in_one_function_of_at_most_60_lines_calling_three_modules_and_never_the_trainer():
    # scripts/tools/step_reading.py traces the functions one LaTRO step enters; the fast paths compute what
    # logprobs.reference_logprobs defines, so a reader of the algorithm reads the definition instead
    import sys

    sys.path.insert(0, str(ROOT / "scripts" / "tools"))
    from step_reading import reading, step_function_lines, traced_step

    entered, facts = traced_step()
    rows = {r["module"]: r for r in reading(entered)}
    assert {"methods/latro.py", "objective.py", "rollout.py", "logprobs.py", "policy.py", "trainer.py"} <= set(rows)
    assert "latro_step" in rows["methods/latro.py"]["functions"] and "rloo_advantages" in rows["objective.py"]["functions"]
    assert sum(r["code_lines"] for r in rows.values() if not r["fast_path"]) <= 600
    # the step itself: one function, the policy, the objective and the processes, no call back into the Trainer
    assert step_function_lines(*facts["step_function"]) <= 60
    assert facts["called_modules"] == {"policy.py", "objective.py", "processes.py"}
    assert facts["trainer_callbacks"] == []
