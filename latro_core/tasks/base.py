"""The Task API: a split of a data set (:class:`Example` rows) with its prompt, its target y, its answer
format (template and stop strings) and its answer checker. The base class is the numeric-answer task
(GSM8K, arithmetic); :mod:`latro_core.tasks.arc` overrides the prompt, the target and the checker.
"""

from __future__ import annotations

import copy
import random
import re
import warnings
from dataclasses import dataclass

from ..errors import ConfigError
from .numbers import ANSWER_PATTERN, after_templates, last_number, numbers_equal, plain_text, stated_number

# the default answer format: the target y is "{ANSWER_TEMPLATE} {answer}."
ANSWER_TEMPLATE = "The answer is"
# The authors' trainer stops a rationale at the earliest occurrence of any of these.
STOP_STRINGS: tuple[str, ...] = (
    "The answer is", "the answer is", "The answer is:", "Answer:",
    "So, the answer is", "Therefore, the answer is", "so the final answer is",
)
COT_SUFFIX = "Let's think step by step."


@dataclass(frozen=True)
class Example:
    """One question of a task, with its gold answer (and, where the data set has them, rationale and options)."""

    question: str                 # question text (ARC: the stem only)
    answer: str                   # normalized number string; ARC: the correct option text
    rationale: str | None = None  # gold rationale (GSM8K: no "####" line, no <<...>> notes)
    choices: tuple[tuple[str, str], ...] = ()  # ARC: ((label, text), ...)
    label: str | None = None      # ARC gold label, e.g. "B"
    id: str = ""                  # "gsm8k-train-17", the ARC id, "arith-test-3"


def end_of_turn(tokenizer) -> str:
    """The text that ends an assistant turn: ``tokenizer.eos_token``, or "" without one."""
    return (getattr(tokenizer, "eos_token", None) or "") if tokenizer is not None else ""


_warned_no_template = False


class Task:
    """A named split of a data set: a list of :class:`Example` plus its prompt and answer format.

    The base class implements the numeric-answer tasks (GSM8K, arithmetic); ARC overrides
    the prompt, the SFT target and the answer extraction/checking. A task with another answer
    format sets the class attributes below (the sampler stops at ``stop_strings``, the target y
    starts with ``answer_template``, extraction reads the line after a match of ``answer_pattern``).
    """

    name = "task"
    sft_direct = False     # SFT trains (and is evaluated) on direct answers, without a rationale: ARC
    answer_template: str = ANSWER_TEMPLATE          # y = "{answer_template} {answer}." + end of turn
    stop_strings: tuple[str, ...] = STOP_STRINGS    # a sampled rationale z ends before the first of these
    answer_pattern: re.Pattern = ANSWER_PATTERN     # where extraction looks for the stated answer

    def __init__(self, split: str, examples: list[Example], **config):
        self.split, self.examples, self.config = split, list(examples), dict(config)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]

    def __iter__(self):
        return iter(self.examples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)})"

    def subset(self, n: int | None, seed: int = 0) -> "Task":
        """The first ``n`` examples after a shuffle seeded by ``seed`` (``n`` None: all, shuffled)."""
        if n is not None and (not isinstance(n, int) or n < 0):
            raise ConfigError(f"subset size must be a non-negative integer or None, got {n!r}.")
        examples = list(self.examples)
        random.Random(seed).shuffle(examples)
        new = copy.copy(self)
        new.examples = examples if n is None else examples[:n]
        return new

    def question_text(self, ex: Example, direct: bool = False) -> str:
        """Zero-shot CoT text: ``"{question} Let's think step by step."`` (direct: the question)."""
        return ex.question if direct else f"{ex.question} {COT_SUFFIX}"

    def prompt(self, ex: Example, tokenizer=None, direct: bool = False) -> str:
        """:meth:`question_text` as one user turn of the tokenizer's chat template (with the
        generation prompt), or ``text + "\\n"`` when there is no tokenizer or no chat template."""
        text = self.question_text(ex, direct)
        if tokenizer is None:
            return f"{text}\n"
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        global _warned_no_template
        if not _warned_no_template:
            _warned_no_template = True
            warnings.warn("The tokenizer has no chat template, so plain-text prompts are used; "
                          "use an instruct model or set tokenizer.chat_template for chat prompts.",
                          stacklevel=2)
        return f"{text}\n"

    def answer_sentence(self, answer: str) -> str:
        """``The answer is {answer}.`` (no second period when the answer already ends a sentence)."""
        answer = answer.strip()
        return f"{self.answer_template} {answer}" + ("" if answer[-1:] in ".!?" else ".")

    def answer_target(self, ex: Example, tokenizer=None) -> str:
        """The self-reward target y: ``"The answer is {answer}." + eos``."""
        return self.answer_sentence(ex.answer) + end_of_turn(tokenizer)

    def answer_ids(self, ex: Example, tokenizer, rationale_ids=()) -> list[int]:
        """Token ids of y = :meth:`answer_target` as it continues x ⊕ z.

        y is tokenized with a leading space when z's text ends in a non-space character
        ("...12 = 17." + " The answer is 17."), and as is after whitespace or an empty z (the
        prompt ends in a newline). Tokenized on its own, y would start with the space-less
        "The", a token the model rarely emits mid-line: about 11 nats instead of about 3 for
        " The" on SmolLM2 (``tests/test_tasks.py`` checks the tokens), noise that would make the
        reward depend on how z happens to end rather than on the answer.
        """
        z = tokenizer.decode(list(rationale_ids), skip_special_tokens=False) if len(rationale_ids) else ""
        space = " " if z and not z[-1].isspace() else ""
        return tokenizer(space + self.answer_target(ex, tokenizer), add_special_tokens=False)["input_ids"]

    def sft_target(self, ex: Example, tokenizer=None) -> str:
        """SFT completion: ``"{rationale} The answer is {answer}." + eos``."""
        return f"{ex.rationale} {self.answer_sentence(ex.answer)}" + end_of_turn(tokenizer)

    def extract_answer(self, text: str, ex: Example | None = None) -> str | None:
        """Normalized number stated after the first answer template followed by one on its line (in
        digits, or in words 0-99 right after the template: "The answer is five."; when an
        expression starts right after the template, its result: "The answer is 12 + 5 = 17."
        reads 17, "The answer is 4. Then 2 + 3 = 5" reads 4), else the last number in ``text``;
        None when there is no number. Typographic minus signs and non-comma thousands separators
        ("1 234", "1'234") are read as "-" and grouping."""
        text = plain_text(text)
        for segment in after_templates(text, self.answer_pattern):
            if (num := stated_number(segment)) is not None:
                return num
        return last_number(text)

    def is_correct(self, prediction: str | None, ex: Example) -> bool:
        """Numeric equality (|a - b| < 1e-6) of the prediction and the gold answer."""
        return numbers_equal(prediction, ex.answer)
