"""How big latro_core is, module by module: lines as ``wc -l`` counts them, and how many of those are
blank, prose (comments and docstrings) and code (everything else).

    python scripts/tools/code_size.py             # latro_core/**/*.py
    python scripts/tools/code_size.py benchmarks  # another folder
    python scripts/tools/code_size.py --check     # exit 1 if a module has over 400 code lines or a function
                                            # over 50 (prose and blank lines are not counted)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def line_kinds(source: str) -> dict[str, int]:
    """{"lines", "blank", "prose", "code"} of one Python file: prose = comment lines and the lines of
    module, class and function docstrings; code = the rest."""
    lines = source.splitlines()
    doc = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc.update(range(first.lineno, first.end_lineno + 1))
    blank = sum(1 for ln in lines if not ln.strip())
    prose = sum(1 for i, ln in enumerate(lines, 1) if ln.strip() and (i in doc or ln.strip().startswith("#")))
    return {"lines": len(lines), "blank": blank, "prose": prose, "code": len(lines) - blank - prose}


MAX_MODULE_CODE, MAX_FUNCTION_CODE = 400, 50


def function_sizes(source: str) -> list[tuple[str, int]]:
    """(qualified name, code lines) of every function in ``source``, nested ones inside their
    parent's count too; code lines as :func:`line_kinds` counts them."""
    import textwrap

    lines, out = source.splitlines(), []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    body = textwrap.dedent("\n".join(lines[first - 1:child.end_lineno]))
                    out.append((name, line_kinds(body)["code"]))
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return out


def too_big(folder: str = "latro_core") -> list[str]:
    """Each module over MAX_MODULE_CODE code lines and each function over MAX_FUNCTION_CODE."""
    out = []
    for p in sorted(Path(folder).rglob("*.py")):
        source = p.read_text()
        if (n := line_kinds(source)["code"]) > MAX_MODULE_CODE:
            out.append(f"{p}: {n} code lines (at most {MAX_MODULE_CODE})")
        out += [f"{p}: {name} has {n} code lines (at most {MAX_FUNCTION_CODE})"
                for name, n in function_sizes(source) if n > MAX_FUNCTION_CODE]
    return out


def main(folder: str = "latro_core") -> None:
    rows = [(str(p.relative_to(folder)), line_kinds(p.read_text())) for p in sorted(Path(folder).rglob("*.py"))]
    total = {k: sum(r[k] for _, r in rows) for k in ("lines", "blank", "prose", "code")}
    print(f"| {folder} module | lines | blank | prose | code |\n|---|---|---|---|---|")
    for name, r in sorted(rows, key=lambda nr: -nr[1]["lines"]) + [("total", total)]:
        print(f"| {name} | {r['lines']} | {r['blank']} | {r['prose']} | {r['code']} |")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--check"]
    if "--check" in sys.argv[1:]:
        problems = too_big(*args)
        print("\n".join(problems) or f"every module within {MAX_MODULE_CODE} code lines, every function within "
                                      f"{MAX_FUNCTION_CODE}")
        sys.exit(1 if problems else 0)
    main(*args)
