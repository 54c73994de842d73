"""What a reader has to read to follow one LaTRO step: the latro_core code one optimizer step runs.

One LaTRO step (sample K rationales, score them, reward, RLOO, loss, backward, the clipped AdamW
step) runs on a tiny random model with the real tokenizer while ``sys.setprofile`` records every
latro_core function it enters. The report gives the step function's own figures (its code lines,
the latro_core modules it calls into itself, its calls back into the Trainer) and, per module, the
functions the step runs and their code lines (prose, comments and blank lines not counted, as in
``scripts/tools/code_size.py``; a line inside two traced functions, a closure in its parent, counts once).

    python scripts/tools/step_reading.py            # the table
    python scripts/tools/step_reading.py --json     # as JSON: step_code_lines, step_modules, trainer_callbacks
    python scripts/tools/step_reading.py --reward verifier

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


def traced_step(reward: str = "latro") -> tuple[dict[str, set[tuple[int, str]]], dict]:
    """({module file: {(first line, qualified name)}} of the latro_core functions one LaTRO step and
    its optimizer step enter, the step's own facts: {"step_function": (file, first line), "called_modules":
    the latro_core modules the step function itself calls into, "trainer_callbacks": calls into
    trainer.py made while the step function runs}). The Trainer's set-up before and its records after
    are not traced."""
    from latro_core.models import load_tokenizer, prepare_tokenizer, tiny_model
    from latro_core.trainer import TrainConfig, Trainer

    tok = prepare_tokenizer(load_tokenizer())
    model = tiny_model(tok)[0]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(method="latro", reward=reward, task="arithmetic", task_kwargs={"n": 8}, k=4,
                          questions_per_step=2, micro_batch=4, max_new_tokens=16, steps=1, device="cpu",
                          progress=False, out_dir=out)
        trainer = Trainer(cfg, model=model, tokenizer=tok)
        step_code = trainer.method.step.__code__
        trainer_file = str(PACKAGE / "trainer.py")
        entered: dict[str, set] = defaultdict(set)
        facts = {"step_function": (step_code.co_filename, step_code.co_firstlineno), "called_modules": set(),
                 "trainer_callbacks": []}

        def inside_step(frame) -> bool:
            while frame is not None:
                if frame.f_code is step_code:
                    return True
                frame = frame.f_back
            return False

        def profile(frame, event, arg):
            code = frame.f_code
            if event != "call" or not code.co_filename.startswith(str(PACKAGE)):
                return
            entered[code.co_filename].add((code.co_firstlineno, code.co_qualname))
            caller = frame.f_back
            while caller is not None and caller.f_code.co_name in ("<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>"):
                caller = caller.f_back             # a comprehension's calls are the step's own (inlined from 3.12)
            if caller is not None and caller.f_code is step_code and code.co_filename != step_code.co_filename:
                facts["called_modules"].add(str(Path(code.co_filename).relative_to(PACKAGE)))
            if code.co_filename == trainer_file and inside_step(frame.f_back):
                facts["trainer_callbacks"].append(code.co_qualname)

        inputs = trainer.step_inputs(0)
        sys.setprofile(profile)
        try:
            trainer._optimizer_step(trainer.method.step(inputs).metrics)
        finally:
            sys.setprofile(None)
            trainer.release()
    return entered, facts


def step_function_lines(filename: str, first_line: int) -> int:
    """The code lines of the function that starts at ``first_line`` of ``filename`` (prose not counted)."""
    source = Path(filename).read_text()
    a, b = function_lines(source)[first_line]
    return line_kinds(textwrap.dedent("\n".join(source.splitlines()[a - 1:b])))["code"]


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
    entered, facts = traced_step(args.reward)
    rows = reading(entered)
    algorithm = [r for r in rows if not r["fast_path"]]
    total = sum(r["code_lines"] for r in algorithm)
    step = {"step_code_lines": step_function_lines(*facts["step_function"]),
            "step_modules": sorted(facts["called_modules"]), "trainer_callbacks": len(facts["trainer_callbacks"])}
    if args.json:
        print(json.dumps({"reward": args.reward, **step, "modules": rows, "reading_modules": len(algorithm),
                          "reading_code_lines": total}, indent=1))
        return
    print(f"One LaTRO step (--reward {args.reward}): the step function has {step['step_code_lines']} code lines, "
          f"calls into {len(step['step_modules'])} modules ({', '.join(step['step_modules'])}) and back into the "
          f"Trainer {step['trainer_callbacks']} times. Every latro_core function the step and its optimizer "
          f"step run:\n")
    print("| module | code lines | functions |\n|---|---|---|")
    for r in rows:
        label = r["module"] + (" (fast path)" if r["fast_path"] else "")
        print(f"| {label} | {r['code_lines']} | {', '.join(r['functions'])} |")
    print(f"\nTo read, fast paths aside: {len(algorithm)} modules, {total} code lines.")


if __name__ == "__main__":
    main()
