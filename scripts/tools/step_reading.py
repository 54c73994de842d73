"""What a reader has to read to follow one LaTRO step: the latro_core code one optimizer step runs.

One LaTRO step (sample K rationales, score them, reward, RLOO, loss, backward, the clipped AdamW
step) runs on a tiny random model with the real tokenizer while ``sys.setprofile`` records every
latro_core function it enters. The report gives, per module, those functions and their code lines
(prose, comments and blank lines not counted, as in ``scripts/code_size.py``; a line inside two
traced functions, a closure in its parent, counts once).

    python scripts/step_reading.py            # the table
    python scripts/step_reading.py --json     # the same as JSON
    python scripts/step_reading.py --reward verifier

The fast paths (``fast_logprobs``, ``cpu_kernels``) are listed apart: they compute what
``logprobs.reference_logprobs`` defines (tests/test_logprobs.py holds them to it), so a reader of
the algorithm can take them on trust and read the definition instead.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "tools"))
from code_size import line_kinds  # noqa: E402

PACKAGE = ROOT / "latro_core"
FAST_PATHS = {"fast_logprobs.py", "cpu_kernels.py"}


def traced_step(reward: str = "latro") -> dict[str, set[tuple[int, str]]]:
    """{module file: {(first line, qualified name)}} of the latro_core functions one LaTRO step and
    its optimizer step enter (the Trainer's setup before and its records after are not traced)."""
    from latro_core.models import load_tokenizer, prepare_tokenizer, tiny_model
    from latro_core.trainer import TrainConfig, Trainer

    tok = prepare_tokenizer(load_tokenizer())
    model = tiny_model(tok)[0]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(method="latro", reward=reward, task="arithmetic", task_kwargs={"n": 8}, k=4,
                          questions_per_step=2, micro_batch=8, max_new_tokens=16, steps=1, device="cpu",
                          progress=False, out_dir=out)
        trainer = Trainer(cfg, model=model, tokenizer=tok)
        entered: dict[str, set] = defaultdict(set)

        def profile(frame, event, arg):
            code = frame.f_code
            if event == "call" and code.co_filename.startswith(str(PACKAGE)):
                entered[code.co_filename].add((code.co_firstlineno, code.co_qualname))

        context = trainer.step_context()
        sys.setprofile(profile)
        try:
            trainer._optimizer_step(trainer.method.step(context, 0))
        finally:
            sys.setprofile(None)
            trainer.release()
    return entered


def function_lines(source: str) -> dict[int, tuple[int, int]]:
    """{first line of a def (its decorators excluded, as code objects number it): (first, last line)}."""
    spans = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans[node.lineno] = (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno)
    return spans


def reading(entered: dict[str, set]) -> list[dict]:
    """Per module: the traced functions and their code lines, the largest first. A traced function
    inside another traced one (a closure) is counted with its parent, once."""
    rows = []
    for filename, funcs in entered.items():
        source = Path(filename).read_text()
        lines, spans = source.splitlines(), function_lines(source)
        traced = [spans[first] for first, _ in funcs if first in spans]     # not module or class bodies
        outer = [sp for sp in traced if not any(o != sp and o[0] <= sp[0] and sp[1] <= o[1] for o in traced)]
        code = sum(line_kinds(textwrap.dedent("\n".join(lines[a - 1:b])))["code"] for a, b in set(outer))
        name = str(Path(filename).relative_to(PACKAGE))
        rows.append({"module": name, "fast_path": name in FAST_PATHS, "code_lines": code,
                     "functions": sorted(q for first, q in funcs if first in spans)})
    return sorted(rows, key=lambda r: (r["fast_path"], -r["code_lines"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reward", default="latro")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = reading(traced_step(args.reward))
    algorithm = [r for r in rows if not r["fast_path"]]
    total = sum(r["code_lines"] for r in algorithm)
    if args.json:
        print(json.dumps({"reward": args.reward, "modules": rows, "reading_modules": len(algorithm),
                          "reading_code_lines": total}, indent=1))
        return
    print(f"One LaTRO step (--reward {args.reward}): the latro_core functions it runs\n")
    print("| module | code lines | functions |\n|---|---|---|")
    for r in rows:
        label = r["module"] + (" (fast path)" if r["fast_path"] else "")
        print(f"| {label} | {r['code_lines']} | {', '.join(r['functions'])} |")
    print(f"\nTo read, fast paths aside: {len(algorithm)} modules, {total} code lines.")


if __name__ == "__main__":
    main()
