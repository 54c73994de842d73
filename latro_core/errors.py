"""One exception family for every problem a user can fix.

The CLI catches :class:`LatroError` and prints its message alone (no traceback);
library callers can catch it too. Anything else escaping is a bug in latro.
"""


class LatroError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class DataError(LatroError):
    """A data set cannot be found or a row in it is malformed."""


class ModelError(LatroError):
    """A model or tokenizer cannot be loaded."""


class ConfigError(LatroError):
    """A configuration value is invalid (the message names it and the numbers)."""


class NumericalError(LatroError):
    """A NaN or inf appeared in a loss or reward during training."""


class CheckpointError(LatroError):
    """A checkpoint or run record cannot be read back, or a checkpoint cannot be written."""


def check_finite(step: int, **quantities) -> None:
    """NumericalError naming the first of ``quantities`` (tensors) that holds a NaN or inf at ``step``."""
    import torch

    for name, v in quantities.items():
        if not torch.isfinite(v).all():
            raise NumericalError(f"non-finite {name} at step {step + 1} ({v.detach().flatten()[:4].tolist()}...); "
                                 f"the run stopped and the last good checkpoint is kept. Lower the learning rate "
                                 f"or use fp32.")
