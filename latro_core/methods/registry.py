"""The registry of training methods: one :class:`Method` record each, in :data:`METHODS`. The trainer,
the CLI, the run helpers and the tables read these records, never a method's name, so a new method is
one :func:`register_method` call (``tests/toy_method.py``; from the shell: ``latro --plugin MODULE``).

A method's step is a function ``step(inputs: StepInputs) -> StepOutput`` (:mod:`latro_core.methods.step_io`):
it receives the policy, the processes, the task, the step's questions and the config, never the
Trainer, and returns the step's metrics and the sample records to log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Method:
    """One training method: its step and what the trainer must build and check for it."""

    name: str                       # TrainConfig.method; the method field of every results record
    label: str                      # its name in tables and figures
    command: str                    # the ``latro`` sub-command that trains it
    help: str                       # that sub-command's one-line help
    step: Callable                  # step(inputs: StepInputs) -> StepOutput (methods.step_io)
    draws_rationales: bool          # samples z from πθ: needs T > 0 and k ≥ min_k
    min_k: int = 1                  # rationales per question it needs (a leave-one-out baseline: 2)
    reference: bool = False         # scores log π0(z|x) (built when β ≠ 0; LoRA: the adapter switched off)
    tempered_scoring: bool = False  # scores z at the sampling temperature T (else at T = 1)
    whole_questions: bool = False   # each micro-batch holds whole questions (micro_batch a multiple of k)
    reward: bool = False            # reads TrainConfig.reward (objective.REWARDS)
    shardable: bool = True          # every process makes the same number of forwards (FSDP2 needs it)
    direct_prompt: bool = False     # trains, and so is evaluated, on the task's direct prompt when the task
                                    # has one for it (ARC's SFT: x ⊕ answer, no rationale)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (the CLI, the trainer, runs and tables then know it)."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ConfigError naming the known ones if there is none."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not one of {tuple(METHODS)}")
    return METHODS[name]
