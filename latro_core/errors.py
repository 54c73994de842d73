"""One exception family for every problem a user can fix.

The CLI catches :class:`LatroError` and prints its message alone (no traceback);
library callers can catch it too. Anything else escaping is a bug in latro.
"""

from contextlib import contextmanager


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


class WriteError(LatroError):
    """A file could not be written: a full disk, a file-size limit, a read-only folder, no permission."""


def is_write_failure(e: BaseException) -> bool:
    """An OSError (ENOSPC, EFBIG, EROFS, EACCES, ...) or safetensors' SafetensorError (not an OSError:
    it reports a full disk as "Error while serializing: I/O error")."""
    return isinstance(e, OSError) or type(e).__name__ == "SafetensorError"


@contextmanager
def writing(what: str, then):
    """Turn a failed write inside the block into one :class:`WriteError`: what could not be written,
    why (the OS's words), and ``then`` (a string, or a function called only on failure): what is
    intact and how to go on."""
    try:
        yield
    except LatroError:
        raise
    except Exception as e:  # noqa: BLE001 - only write failures are translated; the rest re-raise
        if not is_write_failure(e):
            raise
        reason = (e.strerror if isinstance(e, OSError) and e.strerror
                  else (str(e).strip().splitlines() or [type(e).__name__])[0][:160])
        raise WriteError(f"could not write {what} ({reason}); {then() if callable(then) else then}") from None


def check_finite(step: int, **quantities) -> None:
    """NumericalError naming the first of ``quantities`` (tensors) that holds a NaN or inf at ``step``."""
    import torch

    for name, v in quantities.items():
        if not torch.isfinite(v).all():
            raise NumericalError(f"non-finite {name} at step {step + 1} ({v.detach().flatten()[:4].tolist()}...); "
                                 f"the run stopped and the last good checkpoint is kept. Lower the learning rate "
                                 f"or use fp32.")
