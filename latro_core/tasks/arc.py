"""ARC-Challenge, multiple-choice science: the gold answer the option text, checked by label ("B").

Read from ``<data dir>/arc-challenge/<split>.jsonl``, else from the hub (``allenai/ai2_arc``).
"""

from __future__ import annotations

import re

from ..errors import DataError
from .base import Example, Task
from .numbers import after_templates
from .registry import register_task, row_field, stored_task

ARC_COT_SUFFIX = ("Let's think step by step first then print your answer like "
                  "'The answer is (one of the options)'.")
ARC_DIRECT_SUFFIX = "Answer with the text of the correct option."


class ARCChallenge(Task):
    name = "arc_challenge"
    sft_direct = True

    def question_text(self, ex: Example, direct: bool = False) -> str:
        """``Question: {q}\\nOptions: (A) t1 (B) t2 ...\\n{instruction}``."""
        options = " ".join(f"({label}) {text}" for label, text in ex.choices)
        return f"Question: {ex.question}\nOptions: {options}\n" + (
            ARC_DIRECT_SUFFIX if direct else ARC_COT_SUFFIX)

    def sft_target(self, ex: Example, tokenizer=None) -> str:
        """SFT completion: ``"The answer is {option text}." + eos``."""
        return self.answer_target(ex, tokenizer)

    def extract_answer(self, text: str, ex: Example | None = None) -> str | None:
        """Predicted label after the first answer template that yields one (no template: the
        last line that does). Accepts "(B)", "B)", "B.", "option B", the option text (needs
        ``ex``), or a bare label alone. Without ``ex`` an unmatched answer text is returned
        as is, and :meth:`is_correct` matches it to an option."""
        text = text or ""
        segments = list(after_templates(text, self.answer_pattern))
        if not segments:
            segments = [ln for ln in reversed(text.splitlines()) if ln.strip()]
        for segment in segments:
            if (label := _arc_label(segment, ex)) is not None:
                return label
        if ex is None and segments and self.answer_pattern.search(text):
            return segments[0].strip().rstrip(".") or None
        return None

    def is_correct(self, prediction: str | None, ex: Example) -> bool:
        """The predicted label (or option text) names the gold label."""
        if prediction is None:
            return False
        labels = [label for label, _ in ex.choices]
        if prediction.strip().upper() not in (x.upper() for x in labels):
            prediction = _arc_label(prediction, ex) or ""
        return prediction.strip().upper() == (ex.label or "").upper()


def _clean(s: str, lower: bool = True) -> str:
    """Without markdown, quotes, surrounding spaces and trailing punctuation (and lower-cased)."""
    s = re.sub(r"[*_`\"']", "", s).strip().rstrip(".!,;:").strip()
    return s.lower() if lower else s


def _arc_label(segment: str, ex: Example | None) -> str | None:
    """The label an answer segment names: "(B)" anywhere, "B)"/"B."/"option B" at its start, an
    option text (the longest, exact case first), or the segment alone being a label; else None."""
    labels = [label for label, _ in ex.choices] if ex else list("ABCDE12345")
    by_upper = {label.upper(): label for label in labels}
    alt = "|".join(re.escape(label) for label in labels)
    s = re.sub(r"[*_`\"']", "", segment).strip()
    m = (re.search(rf"\(({alt})\)", s, re.IGNORECASE)                                 # "(B)"
         or re.match(rf"(?:(?:option|choice)\s+)?({alt})\s*[).:](?!\d)", s, re.IGNORECASE)  # "B)", "B."
         or re.match(rf"(?:option|choice)\s+({alt})\b", s, re.IGNORECASE))             # "option B"
    if m:
        return by_upper[m.group(1).upper()]
    if ex is not None:  # option text: the longest one in the answer, exact case first ("Rr" vs "RR")
        for lower in (False, True):
            seg = _clean(s, lower)
            hits = [(len(t), label) for label, t in ex.choices if _clean(t, lower)
                    and re.search(rf"(?<!\w){re.escape(_clean(t, lower))}(?!\w)", seg)]
            if hits:
                return max(hits)[1]
    cleaned = _clean(s)
    return by_upper.get(cleaned.upper())  # a bare label, alone


def _arc_row(row, split: str, i: int, where: str) -> Example:
    """One JSONL/hub row {"question", "answerKey", "id", "choices": {"text": [...], "label": [...]}}
    as an :class:`Example` (answer: the gold option's text; label: the answerKey)."""
    question, key, id_ = (row_field(row, k, str, where) for k in ("question", "answerKey", "id"))
    choices = row_field(row, "choices", dict, where)
    texts, labels = (row_field(choices, k, list, where + ", choices") for k in ("text", "label"))
    if not labels or len(texts) != len(labels):
        raise DataError(f"{where}: choices has {len(texts)} texts but {len(labels)} labels; "
                        "they must pair up one to one.")
    if key not in labels:
        raise DataError(f"{where}: answerKey {key!r} is not one of the labels {labels}; "
                        "fix the row's answerKey.")
    pairs = tuple((str(label), str(text)) for label, text in zip(labels, texts))
    return Example(question=question.strip(), answer=dict(pairs)[key], choices=pairs,
                   label=key, id=id_)


register_task(stored_task("arc_challenge", ("train", "validation", "test"), "arc-challenge", _arc_row,
                          ("allenai/ai2_arc", "ARC-Challenge"), ARCChallenge, aliases=("arc-challenge", "arc")))
