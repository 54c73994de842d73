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
import dataclasses
import inspect
import json
import re
import sys
import typing

from .provenance import cli_flags, command_line, git_commit, portable  # noqa: F401 (re-exported)


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def field_comments(cls) -> dict[str, str]:
    """{field: the ``# comment`` after it in the class source} (with its continuation lines): the
    dataclasses document their fields that way, and ``--help`` shows the same words."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, last = {}, None
    for line in lines:
        if m := re.match(r"\s+(\w+)\s*:[^#]*?#\s?(.*)$", line):
            last = m.group(1)
            out[last] = m.group(2).strip()
        elif last and (m := re.match(r"\s+#\s?(.*)$", line)):
            out[last] += " " + m.group(1).strip()
        else:
            last = None
    return out


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """One ``--flag`` per dataclass field (underscores become dashes), typed from the annotation,
    its help the field's comment."""
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        t = hints[f.name]
        args = typing.get_args(t)
        base = next((a for a in args if a is not type(None)), t) if args else t
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_ = (notes.get(f.name, "") + f" (default {default})").strip().replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=default, help=help_)
        elif base is dict:
            parser.add_argument(flag, type=json.loads, default=default, help="JSON object; " + help_)
        elif base in (int, float, str):
            parser.add_argument(flag, type=base, default=default, help=help_)
        else:  # unions such as str | list[str]
            parser.add_argument(flag, type=str, default=default, help=help_)


def config_from_args(cls, ns: argparse.Namespace, **fixed):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(ns).items() if k in names}
    values.update(fixed)
    return cls(**values)


def build_parser() -> argparse.ArgumentParser:
    from .evaluate import EvalConfig
    from .reproduce import ReproduceConfig
    from .results import TablesConfig
    from .reward_signal import SignalConfig
    from .trainer import TrainConfig

    p = argparse.ArgumentParser(prog="latro", description="LaTent Reasoning Optimization (arXiv 2411.04282)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("train", "LaTRO training"), ("sft", "supervised fine-tuning baseline"),
                        ("rft", "rejection-sampling fine-tuning baseline (STaR/RFT)")):
        sp = sub.add_parser(name, help=help_)
        add_dataclass_args(sp, TrainConfig, skip=("method",))
    add_dataclass_args(sub.add_parser("evaluate", help="greedy / maj@k accuracy, AUROC, NLL"), EvalConfig)
    add_dataclass_args(sub.add_parser("tables", help="build results tables from run outputs"), TablesConfig)
    add_dataclass_args(sub.add_parser("signal", help="the base model's self-reward signal (before training)"),
                       SignalConfig)
    add_dataclass_args(sub.add_parser("reproduce", help="run the notebooks headless for a profile"), ReproduceConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import LatroError

    args = build_parser().parse_args(argv)
    if args.command != "reproduce":       # the notebooks' kernels choose their own
        from .models import set_threads
        set_threads()                     # LATRO_THREADS / OMP_NUM_THREADS, else one per free core
    try:
        if args.command in ("train", "sft", "rft"):
            from .trainer import TrainConfig, TrainingInterrupted, train
            method = {"train": "latro"}.get(args.command, args.command)
            try:
                metrics = train(config_from_args(TrainConfig, args, method=method))
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
            from .reward_signal import SignalConfig, run_signal
            run_signal(config_from_args(SignalConfig, args))
        elif args.command == "reproduce":
            from .reproduce import ReproduceConfig, reproduce
            reproduce(config_from_args(ReproduceConfig, args))
    except LatroError as e:
        print(f"latro: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
