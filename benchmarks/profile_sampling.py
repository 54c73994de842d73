"""Where the time of one ``sample_rationales`` call goes (cProfile, one thread):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_sampling.py [--questions 2 --k 4 --L 48]

Prints the CPU seconds, the tokens sampled and the top functions by own time. On the development
CPU, ``torch._C._nn.linear`` (the weight matmuls, memory-bound at this batch size) took 62-65% of
the call in two runs and ``multinomial`` ~6%: decoding is bound by reading the weights, not by Python overhead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from latro_core.models import load_model  # noqa: E402
from latro_core.rollout import sample_rationales  # noqa: E402
from latro_core.tasks import load_task  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--L", type=int, default=48)
    ap.add_argument("--top", type=int, default=18)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_model(device="cpu", dtype="fp32")
    task = load_task("arithmetic", "train").subset(args.questions, seed=0)
    prompts = [task.prompt(ex, tok) for ex in task]

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(len(prompts))]

    sample_rationales(model, tok, prompts, k=args.k, max_new_tokens=8, generator=gens())   # warm-up
    prof, c0 = cProfile.Profile(), time.process_time()
    prof.enable()
    roll = sample_rationales(model, tok, prompts, k=args.k, max_new_tokens=args.L, generator=gens())
    prof.disable()
    print(f"CPU s {time.process_time() - c0:.2f}, tokens {int(roll.lengths.sum())}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
