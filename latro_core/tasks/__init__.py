"""Data sets, prompts, targets, answer extraction and checking: the public face of the tasks package.

Three tasks share one interface (:class:`Task`, :mod:`.base`), one module each:

- ``gsm8k``          (:mod:`.gsm8k`) grade-school math; gold answer a number, gold rationale the worked solution
- ``arc_challenge``  (:mod:`.arc`) multiple-choice science; gold answer the option text, checked by label
- ``arithmetic``     (:mod:`.arithmetic`) seeded multi-step word problems generated here (no download), for
                     small models; its ``unseen`` split uses numbers outside the training range (new arithmetic)

Numbers are read out of a model's text by :mod:`.numbers`. GSM8K and ARC are read from
``<data_dir>/gsm8k/<split>.jsonl`` and ``<data_dir>/arc-challenge/<split>.jsonl`` (``data_dir`` argument,
else ``$LATRO_DATA_DIR``), else from the Hugging Face hub (``openai/gsm8k``, ``allenai/ai2_arc``).

Each task is one :class:`TaskRecord` in :data:`TASKS` (name, splits, loader, data folder), added by
:func:`register_task` and found by :func:`get_task` (:mod:`.registry`); its prompts, targets y, answer
format (template, stop strings) and answer checker are the attributes and methods of its :class:`Task`
subclass. Importing the package registers the three tasks, in this order.
"""

from .base import ANSWER_TEMPLATE, COT_SUFFIX, STOP_STRINGS, Example, Task, end_of_turn
from .numbers import normalize_number
from .registry import TASKS, TaskRecord, get_task, load_task, register_task, task_splits
from .gsm8k import GSM8K
from .arc import ARC_COT_SUFFIX, ARC_DIRECT_SUFFIX, ARCChallenge
from .arithmetic import DEFAULT_ARITH, UNSEEN_WIDTH, Arithmetic

__all__ = [
    "ANSWER_TEMPLATE", "STOP_STRINGS", "COT_SUFFIX", "ARC_COT_SUFFIX", "ARC_DIRECT_SUFFIX", "DEFAULT_ARITH",
    "UNSEEN_WIDTH", "Example", "Task", "GSM8K", "ARCChallenge", "Arithmetic", "TaskRecord", "TASKS",
    "register_task", "get_task", "task_splits", "load_task", "normalize_number", "end_of_turn",
]
