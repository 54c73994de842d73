"""GSM8K, grade-school math: the gold answer a number, the gold rationale the worked solution.

Read from ``<data dir>/gsm8k/<split>.jsonl``, else from the hub (``openai/gsm8k``).
"""

from __future__ import annotations

import re

from ..errors import DataError
from .base import Example, Task
from .numbers import normalize_number
from .registry import register_task, row_field, stored_task


class GSM8K(Task):
    name = "gsm8k"


def _gsm8k_row(row, split: str, i: int, where: str) -> Example:
    """One JSONL/hub row {"question", "answer": "<solution>\\n#### <number>"} as an :class:`Example`
    (rationale: the solution without the "####" line and the <<...>> calculator notes)."""
    question, solution = (row_field(row, k, str, where) for k in ("question", "answer"))
    body, sep, final = solution.rpartition("####")
    answer = normalize_number(final)
    if not sep or answer is None:
        raise DataError(f"{where}: the answer has no final '#### <number>' line; "
                        "GSM8K solutions must end with one.")
    rationale = re.sub(r"<<.*?>>", "", body).strip()
    return Example(question=question.strip(), answer=answer, rationale=rationale,
                   id=f"gsm8k-{split}-{i}")


register_task(stored_task("gsm8k", ("train", "test"), "gsm8k", _gsm8k_row, ("openai/gsm8k", "main"), GSM8K))
