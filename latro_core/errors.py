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
