"""How big latro_core is, module by module: lines as ``wc -l`` counts them, and how many of those are
blank, prose (comments and docstrings) and code (everything else).

    python scripts/code_size.py             # latro_core/*.py
    python scripts/code_size.py benchmarks  # another folder
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


def main(folder: str = "latro_core") -> None:
    rows = [(str(p.relative_to(folder)), line_kinds(p.read_text())) for p in sorted(Path(folder).rglob("*.py"))]
    total = {k: sum(r[k] for _, r in rows) for k in ("lines", "blank", "prose", "code")}
    print(f"| {folder} module | lines | blank | prose | code |\n|---|---|---|---|---|")
    for name, r in sorted(rows, key=lambda nr: -nr[1]["lines"]) + [("total", total)]:
        print(f"| {name} | {r['lines']} | {r['blank']} | {r['prose']} | {r['code']} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
