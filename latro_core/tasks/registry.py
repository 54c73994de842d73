"""The task registry and the loaders of stored data sets: :data:`TASKS` (one :class:`TaskRecord` a task,
added by :func:`register_task`, found by :func:`get_task`), :func:`load_task`, and the reader of
``<data dir>/<folder>/<split>.jsonl`` files with the hub as fallback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from .base import Task


@dataclass(frozen=True)
class TaskRecord:
    """One task: its name, splits and loader. Its prompts, targets y and answer checker are the
    methods of the :class:`Task` subclass the loader returns."""

    name: str                                   # load_task's name, the task field of every results record
    splits: tuple[str, ...]
    load: Callable[..., "Task"]                 # load(split, data_dir, **options) -> Task
    data_folder: str | None = None              # <data dir>/<data_folder>/<split>.jsonl; None: generated here
    aliases: tuple[str, ...] = ()               # other names load_task accepts


TASKS: dict[str, TaskRecord] = {}


def register_task(record: TaskRecord) -> TaskRecord:
    """Add ``record`` to :data:`TASKS` (load_task, the CLI's --task and the notebooks then know it)."""
    TASKS[record.name] = record
    return record


def get_task(name: str) -> TaskRecord:
    """The task called ``name`` (or one of its aliases, any case); ConfigError naming the known ones."""
    key = str(name).lower()
    for record in TASKS.values():
        if key == record.name or key in record.aliases:
            return record
    raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}.")


def task_splits(name: str) -> tuple[str, ...]:
    """The splits of task ``name`` (aliases accepted)."""
    return get_task(name).splits


def load_task(name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None,
              **kwargs) -> "Task":
    """Load split ``split`` of task ``name`` (``gsm8k``, ``arc_challenge``, ``arithmetic``).

    ``arithmetic`` takes ``n``, ``seed``, ``steps``, ``low``, ``high``, ``ops`` (defaults in
    :data:`~latro_core.tasks.arithmetic.DEFAULT_ARITH`); the others take no keyword arguments
    besides ``data_dir``.
    """
    record = get_task(name)
    if split not in record.splits:
        raise ConfigError(f"task {record.name!r} has no split {split!r}; choose one of: "
                          f"{', '.join(record.splits)}.")
    return record.load(split, data_dir, **kwargs)


def stored_task(name: str, splits: tuple[str, ...], folder: str, parse, hub: tuple[str, str], cls,
                aliases: tuple[str, ...] = ()) -> TaskRecord:
    """The record of a task stored as ``<data dir>/<folder>/<split>.jsonl`` (``data_dir``, else
    $LATRO_DATA_DIR), else read from the hub (``hub`` = (repo, config)); ``parse(row, split, i, where)``
    makes each row an :class:`Example` of the :class:`Task` subclass ``cls``."""
    def load(split: str, data_dir, **kwargs) -> "Task":
        if kwargs:
            raise ConfigError(f"task {name!r} takes no options {sorted(kwargs)}; only 'arithmetic' does.")
        root = data_dir if data_dir is not None else os.environ.get("LATRO_DATA_DIR")
        path = Path(root).expanduser() / folder / f"{split}.jsonl" if root else None
        if path is not None and path.is_file():
            examples = [parse(row, split, i, f"{path}, line {i + 1}") for i, row in _read_jsonl(path)]
        else:
            rows = _hub_rows(*hub, split, path)
            examples = [parse(row, split, i, f"hub {hub[0]} {split}, row {i}") for i, row in enumerate(rows)]
        return cls(split, examples)
    return TaskRecord(name, splits, load, data_folder=folder, aliases=aliases)


def _read_jsonl(path: Path):
    """Yield (line index, parsed row) for each non-blank line of a JSONL file; DataError naming the
    line on invalid JSON, and the line and byte offset on a byte that is not UTF-8."""
    offset = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}, line {i + 1}, byte {offset + e.start}: byte 0x{raw[e.start]:02x} is not "
                                f"UTF-8 text; save the file as UTF-8 (or fix that line).") from None
            offset += len(raw)
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {i + 1}: not valid JSON ({e.msg}); "
                                    "fix or remove that line.") from None


def _hub_rows(repo: str, config: str, split: str, path: Path | None):
    """The rows of ``repo``/``config`` split ``split`` from the Hugging Face hub; DataError saying
    where the local file was looked for and how to fix it when the hub cannot give them."""
    looked = f"no file {path}" if path else "LATRO_DATA_DIR is not set"
    fix = (f"set LATRO_DATA_DIR=/path/to/data (folder with gsm8k/ and arc-challenge/ JSONL) "
           f"or connect to the Hugging Face hub ({repo})")
    offline = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    try:
        import datasets
        if offline and not datasets.config.HF_HUB_OFFLINE:  # env set after import: don't hang
            raise ConnectionError("offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)")
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # noqa: BLE001 - any hub failure gets the same advice
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot load {repo} split {split!r} ({looked}; hub: {reason}); {fix}.") from None


def row_field(row, key: str, kind, where: str):
    """``row[key]`` when ``row`` is a dict whose ``key`` holds a ``kind``; else DataError at ``where``."""
    if not isinstance(row, dict) or not isinstance(row.get(key), kind):
        raise DataError(f"{where}: missing or invalid field {key!r}; "
                        "each row needs the fields listed in the data README.")
    return row[key]
