"""Replay a recorded study run with the code as it is now and compare its metrics, step by step: a
refactor that claims "behaviour unchanged" shows it here (same machine, one thread, as the studies run).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/tools/replay_record.py results/study_arithmetic/tune/latro_lr1.5e-05_T0.7_seed0

Runs the record's training command (``done.json`` "commands"[0]) into a scratch folder, then prints,
per step, the largest absolute difference of any logged number against the record's
``metrics.jsonl`` (timings left out), and exits 1 when one differs by more than ``--atol``
(default 0: bit for bit). A record made before the training config had a ``sampler`` (the inverse-CDF
sampler became the default then) drew its tokens with ``torch.multinomial``: it is replayed with
``--sampler multinomial``, the same random stream, and one made before latro had its own decode step
with ``--decoder transformers`` (the same float rounding in the logits).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

TIMINGS = ("_s", "samples_per_s")     # metric names ending so are wall-clock times, not results


def compare(recorded: list[dict], replayed: list[dict]) -> list[tuple[int, str, float]]:
    """(step, the metric that differs most, by how much) for every step of the record."""
    out = []
    for old, new in zip(recorded, replayed, strict=True):
        diffs = {k: abs(old[k] - new.get(k, float("nan"))) for k, v in old.items()
                 if isinstance(v, (int, float)) and not k.endswith(TIMINGS)}
        worst = max(diffs, key=lambda k: (diffs[k] != diffs[k], diffs[k]))   # NaN (missing) first
        out.append((old["step"], worst if diffs[worst] else "none (all equal)", diffs[worst]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="a study record folder holding done.json and metrics.jsonl")
    ap.add_argument("--atol", type=float, default=0.0)
    args = ap.parse_args(argv)
    record = Path(args.record)
    command = shlex.split(json.loads((record / "done.json").read_text())["commands"][0])
    assert command[0] == "latro", command
    flags = command[1:]
    config = json.loads((record / "config.json").read_text()) if (record / "config.json").exists() else {}
    if "--sampler" not in flags and "sampler" not in config:     # made before the sampler was a setting
        flags += ["--sampler", "multinomial"]
    if "--decoder" not in flags and "decoder" not in config:     # made before latro's own decode step
        flags += ["--decoder", "transformers"]
    with tempfile.TemporaryDirectory() as scratch:
        at = flags.index("--out-dir")
        flags[at + 1] = str(Path(scratch) / "run")
        subprocess.run([sys.executable, "-m", "latro_core.cli", *flags], check=True, stdout=subprocess.DEVNULL)
        replayed = [json.loads(line) for line in (Path(scratch) / "run" / "metrics.jsonl").read_text().splitlines()]
    recorded = [json.loads(line) for line in (record / "metrics.jsonl").read_text().splitlines()]
    rows = compare(recorded, replayed)
    print("| step | metric differing most | by |\n|---|---|---|")
    for step, name, d in rows:
        print(f"| {step} | {name} | {d:.3g} |")
    worst = max(d for _, _, d in rows)
    print(f"largest difference {worst:.3g} over {len(rows)} steps (atol {args.atol})")
    return 0 if worst <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
