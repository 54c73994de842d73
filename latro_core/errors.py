"""One exception family for every problem a user can fix.

The CLI catches :class:`LatroError` and prints its message alone (no traceback);
library callers can catch it too. Anything else escaping is a bug in latro.
"""

import json
from contextlib import contextmanager
from pathlib import Path


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


def json_fault_at(data: bytes) -> tuple[int, str] | None:
    """(byte offset, what is wrong) where ``data`` (a file's bytes) stops being one JSON value, or None
    when it is one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start, f"byte 0x{data[e.start]:02x} is not UTF-8 text"
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        cut = " (the file ends there: cut short?)" if e.pos >= len(text.rstrip()) else ""
        return len(text[:e.pos].encode()), f"not valid JSON ({e.msg}){cut}"
    return None


def json_fault(data: bytes) -> str | None:
    """:func:`json_fault_at` as words with the line: "line 3, byte 120: not valid JSON (...)"."""
    at = json_fault_at(data)
    if at is None:
        return None
    byte, what = at
    line = data.count(b"\n", 0, byte) + 1
    return f"line {line}, byte {byte}: {what}"


def read_json(path, fix: str, error=None, kind: type | None = dict):
    """The JSON value in the file ``path``; a damaged, foreign (not a ``kind``) or unreadable one is one
    ``error`` (a LatroError class, default CheckpointError) naming the file, the line and byte offset and
    what is wrong, then ``fix`` (what to do)."""
    error = error or CheckpointError
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    fault = json_fault(data)
    value = json.loads(data) if fault is None else None
    if fault is None and kind is not None and not isinstance(value, kind):
        fault = f"holds a JSON {type(value).__name__} where a JSON {'object' if kind is dict else kind.__name__} belongs"
    if fault is not None:
        raise error(f"{path}, {fault}; {fix}")
    return value


def read_json_lines(path, fix: str, error=None) -> list:
    """The JSON values of the lines of ``path`` (blank lines skipped); a damaged line is one ``error``
    (a LatroError class, default DataError) naming the file, the line, its byte offset and what is
    wrong, then ``fix`` (what to do)."""
    error = error or DataError
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    values, offset = [], 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        if line.strip():
            at = json_fault_at(line)
            if at is not None:
                raise error(f"{path}, line {number}, byte {offset + at[0]}: {at[1]}; {fix}")
            values.append(json.loads(line))
        offset += len(line)
    return values


def check_finite(step: int, **quantities) -> None:
    """NumericalError naming the first of ``quantities`` (tensors) that holds a NaN or inf at ``step``."""
    import torch

    for name, v in quantities.items():
        if not torch.isfinite(v).all():
            raise NumericalError(f"non-finite {name} at step {step + 1} ({v.detach().flatten()[:4].tolist()}...); "
                                 f"the run stopped and the last good checkpoint is kept. Lower the learning rate "
                                 f"or use fp32.")
