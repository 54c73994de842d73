"""The ``latro`` command. Each sub-command fills one config dataclass from its flags.

    latro train    --task arithmetic --steps 100 --lr 1e-5 ...   (LaTRO)
    latro sft      --task gsm8k ...                               (supervised baseline)
    latro rft      ...                                            (rejection-sampling baseline)
    latro evaluate --model runs/latro/final --task gsm8k --split test --k 8
    latro tables   --runs runs --out results
    latro signal   --temperatures 1.0,0.7,0.5 --budgets 32,64,96      (is there a learning signal?)
    latro reproduce --profile demo

``--plugin MODULE`` (before the sub-command, repeatable; or ``LATRO_PLUGINS=a,b``) imports a module
or a ``.py`` file first, so the methods, rewards and tasks it registers are there:

    latro --plugin my_rewards.py train --reward my_reward ...

Errors a user can fix (``LatroError``) print one line and exit with status 2; an interrupted
training run exits with 130 after saving its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (a dotted name or a .py file) first: the methods, rewards and tasks it "
                        "registers become available (repeatable; also LATRO_PLUGINS=a,b)")
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

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        load_plugins(plugins_named(argv))
    except LatroError as e:
        print(f"latro: error: {e}", file=sys.stderr)
        return 2
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


def plugins_named(argv: list[str]) -> list[str]:
    """The modules ``--plugin X`` / ``--plugin=X`` name in ``argv`` (before the sub-command), then
    those of $LATRO_PLUGINS (comma-separated)."""
    named = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            named.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            named.append(arg.split("=", 1)[1])
        elif not arg.startswith("-") and (i == 0 or argv[i - 1] != "--plugin"):
            break                          # the sub-command: its own flags follow
    return named + [m for m in os.environ.get("LATRO_PLUGINS", "").split(",") if m.strip()]


def load_plugins(modules: list[str]) -> None:
    """Import each plugin (a dotted module name, or a path to a .py file); ConfigError in one line
    when one cannot be imported."""
    import importlib
    import importlib.util
    from pathlib import Path

    from .errors import ConfigError

    for name in modules:
        name = name.strip()
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise ConfigError(f"--plugin {name}: no such file")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except ConfigError:
            raise
        except Exception as e:      # a plugin's own failure: one line, with what it said
            raise ConfigError(f"--plugin {name}: could not import it ({type(e).__name__}: {e}); give a module on "
                              f"PYTHONPATH or the path of a .py file") from None


if __name__ == "__main__":
    sys.exit(main())
