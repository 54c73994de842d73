"""What a method's step receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..policy import Policy
    from ..processes import Processes
    from ..tasks import Example, Task
    from ..train_config import TrainConfig


@dataclass
class StepInputs:
    """One optimizer step's inputs: ``step`` (0-based); ``questions``, this process's share of the
    step's global batch, the first at position ``first_question`` in it (its rationales' generators
    are seeded by that position); the ``policy`` (sample, score πθ and π0), the ``processes`` (gather,
    backward, gradient sync), the ``task`` and the run's ``config``."""

    step: int
    first_question: int
    questions: list[Example]
    policy: Policy
    processes: Processes
    task: Task
    config: TrainConfig


@dataclass
class StepOutput:
    """``metrics``: the step's values (tensors or floats; ``samples``, the step's rationales or
    targets over all processes, is required); ``sample_records``: rows for ``samples.jsonl``
    (the trainer writes them on the main process)."""

    metrics: dict[str, torch.Tensor | float]
    sample_records: list[dict] = field(default_factory=list)
