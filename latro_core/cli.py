"""The ``latro`` command. Each sub-command fills one config dataclass from its flags.

    latro train    --task arithmetic --steps 100 --lr 1e-5 ...   (LaTRO)
    latro sft      --task gsm8k ...                               (supervised baseline)
    latro rft      ...                                            (rejection-sampling baseline)
    latro evaluate --model runs/latro/final --task gsm8k --split test --k 8
    latro tables   --runs runs --out results
    latro signal   --temperatures 1.0,0.7,0.5 --budgets 32,64,96      (is there a learning signal?)
    latro reproduce --profile demo

Errors a user can fix (``LatroError``) print one line and exit with status 2; an interrupted
training run exits with 130 after saving its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from .provenance import add_dataclass_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import EvalConfig
    from .experiments.reproduce import ReproduceConfig
    from .results import TablesConfig
    from .experiments.reward_signal import SignalConfig
    from .methods import METHODS
    from .train_config import TrainConfig

    p = argparse.ArgumentParser(prog="latro", description="LaTent Reasoning Optimization (arXiv 2411.04282)")
    sub = p.add_subparsers(dest="command", required=True)
    for method in METHODS.values():      # one sub-command per registered training method
        add_dataclass_args(sub.add_parser(method.command, help=method.help), TrainConfig, skip=("method",))
    add_dataclass_args(sub.add_parser("evaluate", help="greedy / maj@k accuracy, AUROC, NLL"), EvalConfig)
    add_dataclass_args(sub.add_parser("tables", help="build results tables from run outputs"), TablesConfig)
    add_dataclass_args(sub.add_parser("signal", help="the base model's self-reward signal (before training)"),
                       SignalConfig)
    add_dataclass_args(sub.add_parser("reproduce", help="run the notebooks headless for a profile"), ReproduceConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    from .versions import check
    if check():            # a dependency outside its declared range: one line printed each (versions.py)
        return 2
    from .errors import LatroError
    from .methods import METHODS

    args = build_parser().parse_args(argv)
    trains = {m.command: m.name for m in METHODS.values()}
    if args.command != "reproduce":       # the notebooks' kernels choose their own
        from .models import set_threads
        set_threads()                     # LATRO_THREADS / OMP_NUM_THREADS, else one per free core
    try:
        if args.command in trains:
            from .trainer import TrainConfig, TrainingInterrupted, train
            try:
                metrics = train(config_from_args(TrainConfig, args, method=trains[args.command]))
            except TrainingInterrupted as e:
                print(f"latro: {e}", file=sys.stderr)
                return 130
            print(json.dumps(metrics))
        elif args.command == "evaluate":
            from .evaluate import EvalConfig, run_evaluation
            summary = run_evaluation(config_from_args(EvalConfig, args))
            print(json.dumps(summary, indent=1))
        elif args.command == "tables":
            from .results import TablesConfig, build_tables
            build_tables(config_from_args(TablesConfig, args))
        elif args.command == "signal":
            from .experiments.reward_signal import SignalConfig, run_signal
            run_signal(config_from_args(SignalConfig, args))
        elif args.command == "reproduce":
            from .experiments.reproduce import ReproduceConfig, reproduce
            reproduce(config_from_args(ReproduceConfig, args))
    except LatroError as e:
        print(f"latro: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
