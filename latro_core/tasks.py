"""Data sets, prompts, targets, answer extraction and checking.

Three tasks share one interface (:class:`Task`):

- ``gsm8k``          grade-school math; gold answer a number, gold rationale the worked solution
- ``arc_challenge``  multiple-choice science; gold answer the option text, checked by label
- ``arithmetic``     seeded multi-step word problems generated here (no download), for small models;
                     its ``unseen`` split uses numbers outside the training range (new arithmetic)

GSM8K and ARC are read from ``<data_dir>/gsm8k/<split>.jsonl`` and
``<data_dir>/arc-challenge/<split>.jsonl`` (``data_dir`` argument, else ``$LATRO_DATA_DIR``),
else from the Hugging Face hub (``openai/gsm8k``, ``allenai/ai2_arc``).

Each task is one :class:`TaskRecord` in :data:`TASKS` (name, splits, loader, data folder), added by
:func:`register_task`; its prompts, targets y and answer checker are the methods of its
:class:`Task` subclass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import warnings
from dataclasses import dataclass
from typing import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .errors import ConfigError, DataError

ANSWER_TEMPLATE = "The answer is"
# The authors' trainer stops a rationale at the earliest occurrence of any of these.
STOP_STRINGS: tuple[str, ...] = (
    "The answer is", "the answer is", "The answer is:", "Answer:",
    "So, the answer is", "Therefore, the answer is", "so the final answer is",
)
# Default difficulty of the generated problems (one dict so it can be tuned in one place).
DEFAULT_ARITH = {"steps": 1, "low": 2, "high": 12, "ops": "+-"}
_ARITH_N = {"train": 1000, "validation": 200, "test": 500, "unseen": 200}
# The arithmetic "unseen" split: every start and amount in high+1 .. high+UNSEEN_WIDTH (13..30 at the
# default high = 12), so no (start, op, amount) triple of it occurs in train/validation/test, whose
# numbers stay in low..high. A test set for new arithmetic, never used for selection.
UNSEEN_WIDTH = 18
COT_SUFFIX = "Let's think step by step."
ARC_COT_SUFFIX = ("Let's think step by step first then print your answer like "
                  "'The answer is (one of the options)'.")
ARC_DIRECT_SUFFIX = "Answer with the text of the correct option."


@dataclass(frozen=True)
class Example:
    question: str                 # question text (ARC: the stem only)
    answer: str                   # normalized number string; ARC: the correct option text
    rationale: str | None = None  # gold rationale (GSM8K: no "####" line, no <<...>> notes)
    choices: tuple[tuple[str, str], ...] = ()  # ARC: ((label, text), ...)
    label: str | None = None      # ARC gold label, e.g. "B"
    id: str = ""                  # "gsm8k-train-17", the ARC id, "arith-test-3"


# ----------------------------------------------------------------------------- numbers

# A number: optional sign (not after a word char, so "16-3" gives 3), thousands groups, decimals, fraction.
# a number: optional sign and "$", digits with comma grouping or not, an optional decimal part, or a
# leading-decimal ".5"; then an optional "/denominator" (not "/4.5", but "/4." at a sentence's end)
_NUM = re.compile(r"(?<![\w.])(-?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/(\d+)(?!\d|\.\d))?")
# "the answer is", "the final answer is", "answer:" (any case), optional colon.
_TEMPLATE = re.compile(r"(?:\bthe\s+(?:final\s+)?answer\s+is\b|\banswer\s*:)\s*:?", re.IGNORECASE)


# dashes and minus signs a model writes for "-" (U+2212 minus, en dash, figure dash, small and full-width hyphen-minus)
_MINUS = str.maketrans({c: "-" for c in "\u2212\u2013\u2012\ufe63\uff0d"})
# a thousands separator other than the comma: no-break, narrow no-break, thin or figure space, or an
# apostrophe, between a digit and exactly three more ("1 234", "1'234"); a plain space is not one
_GROUP = re.compile(r"(?<=\d)[\u00a0\u202f\u2009\u2007'\u2019](?=\d{3}(?!\d))")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10)))
_WORD_NUMBER = re.compile(r"[\s*_`\"'(]*(-|minus\s+|negative\s+)?(%s)(?:[\s-]+(%s))?\b(?!\s+of\b)" % (
    "|".join(list(_TENS) + _ONES[::-1]), "|".join(_ONES[1:10])), re.IGNORECASE)


def _plain(text: str) -> str:
    """``text`` with typographic minus signs as "-" and non-comma thousands separators removed."""
    return _GROUP.sub("", (text or "").translate(_MINUS))


def _number_word(segment: str) -> str | None:
    """The number a segment starts with in words, 0-99 ("five", "twenty-one", "minus three"), or None."""
    m = _WORD_NUMBER.match(segment)
    if not m:
        return None
    word, unit = m.group(2).lower(), (m.group(3) or "").lower()
    if word in _TENS:
        value = _TENS[word] + (_ONES.index(unit) if unit else 0)
    elif unit:                  # "five three" is not a number
        return None
    else:
        value = _ONES.index(word)
    return str(-value if m.group(1) and value else value)


def _fmt(d: Decimal) -> str:
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def normalize_number(s: str) -> str | None:
    """First number in ``s`` as a canonical string, or None.

    "1,234" -> "1234", "$5.00" -> "5", "72.0" -> "72", "3.50" -> "3.5", "-4" -> "-4",
    "12 dollars" -> "12", "1/2" -> "0.5".
    """
    m = _NUM.search(_plain(s))
    if not m:
        return None
    try:
        d = Decimal(m.group(1) + m.group(2).replace(",", ""))
        if m.group(3) and int(m.group(3)) != 0:
            d = d / Decimal(m.group(3))
    except InvalidOperation:
        return None
    return _fmt(d) if d != 0 else "0"


def _numbers_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        a, b = normalize_number(a), normalize_number(b)
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6


def _after_templates(text: str):
    """Yield, for each answer template in ``text``, the first non-blank line that follows it."""
    for m in _TEMPLATE.finditer(text):
        yield text[m.end():].lstrip().split("\n", 1)[0]


def end_of_turn(tokenizer) -> str:
    """The text that ends an assistant turn: ``tokenizer.eos_token``, or "" without one."""
    return (getattr(tokenizer, "eos_token", None) or "") if tokenizer is not None else ""


def _sentence(answer: str) -> str:
    """``The answer is {answer}.`` (no second period when the answer already ends a sentence)."""
    answer = answer.strip()
    return f"{ANSWER_TEMPLATE} {answer}" + ("" if answer[-1:] in ".!?" else ".")


_warned_no_template = False


# ----------------------------------------------------------------------------- tasks

class Task:
    """A named split of a data set: a list of :class:`Example` plus its prompt and answer format.

    The base class implements the numeric-answer tasks (GSM8K, arithmetic); ARC overrides
    the prompt, the SFT target and the answer extraction/checking.
    """

    name = "task"
    sft_direct = False     # SFT trains (and is evaluated) on direct answers, without a rationale: ARC

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

    def answer_target(self, ex: Example, tokenizer=None) -> str:
        """The self-reward target y: ``"The answer is {answer}." + eos``."""
        return _sentence(ex.answer) + end_of_turn(tokenizer)

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
        return f"{ex.rationale} {_sentence(ex.answer)}" + end_of_turn(tokenizer)

    def extract_answer(self, text: str, ex: Example | None = None) -> str | None:
        """Normalized number after the first answer template followed by one on its line (in
        digits, or in words 0-99 right after the template: "The answer is five."; after an
        expression, its result: "The answer is 12 + 5 = 17." reads 17), else the last number in
        ``text``; None when there is no number. Typographic minus signs and non-comma
        thousands separators ("1 234", "1'234") are read as "-" and grouping."""
        text = _plain(text)
        for segment in _after_templates(text):
            # an expression after the template ("12 + 5 = 17."): its result, the last "= ..." value
            result = segment.rsplit("=", 1)[1] if "=" in segment else segment
            for part in dict.fromkeys((result, segment)):
                if (num := _number_word(part.lstrip())) is not None or (num := normalize_number(part)) is not None:
                    return num
        matches = list(_NUM.finditer(text))
        return normalize_number(matches[-1].group(0)) if matches else None

    def is_correct(self, prediction: str | None, ex: Example) -> bool:
        """Numeric equality (|a - b| < 1e-6) of the prediction and the gold answer."""
        return _numbers_equal(prediction, ex.answer)


class GSM8K(Task):
    name = "gsm8k"


class Arithmetic(Task):
    name = "arithmetic"


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
        segments = list(_after_templates(text))
        if not segments:
            segments = [ln for ln in reversed(text.splitlines()) if ln.strip()]
        for segment in segments:
            if (label := _arc_label(segment, ex)) is not None:
                return label
        if ex is None and segments and _TEMPLATE.search(text):
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


# ----------------------------------------------------------------------------- the registry

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


def task_record(name: str) -> TaskRecord:
    """The task called ``name`` (or one of its aliases, any case); ConfigError naming the known ones."""
    key = str(name).lower()
    for record in TASKS.values():
        if key == record.name or key in record.aliases:
            return record
    raise ConfigError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}.")


def task_splits(name: str) -> tuple[str, ...]:
    """The splits of task ``name`` (aliases accepted)."""
    return task_record(name).splits


def load_task(name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None,
              **kwargs) -> Task:
    """Load split ``split`` of task ``name`` (``gsm8k``, ``arc_challenge``, ``arithmetic``).

    ``arithmetic`` takes ``n``, ``seed``, ``steps``, ``low``, ``high``, ``ops`` (defaults in
    :data:`DEFAULT_ARITH`); the others take no keyword arguments besides ``data_dir``.
    """
    record = task_record(name)
    if split not in record.splits:
        raise ConfigError(f"task {record.name!r} has no split {split!r}; choose one of: "
                          f"{', '.join(record.splits)}.")
    return record.load(split, data_dir, **kwargs)


def _stored_task(name: str, splits: tuple[str, ...], folder: str, parse, hub: tuple[str, str], cls,
                 aliases: tuple[str, ...] = ()) -> TaskRecord:
    """The record of a task stored as ``<data dir>/<folder>/<split>.jsonl`` (``data_dir``, else
    $LATRO_DATA_DIR), else read from the hub (``hub`` = (repo, config)); ``parse`` makes each row
    an :class:`Example` of the :class:`Task` subclass ``cls``."""
    def load(split: str, data_dir, **kwargs) -> Task:
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
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {i + 1}: not valid JSON ({e.msg}); "
                                    "fix or remove that line.") from None


def _hub_rows(repo: str, config: str, split: str, path: Path | None):
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


def _field(row, key: str, kind, where: str):
    if not isinstance(row, dict) or not isinstance(row.get(key), kind):
        raise DataError(f"{where}: missing or invalid field {key!r}; "
                        "each row needs the fields listed in the data README.")
    return row[key]


def _gsm8k_row(row, split: str, i: int, where: str) -> Example:
    question, solution = (_field(row, k, str, where) for k in ("question", "answer"))
    body, sep, final = solution.rpartition("####")
    answer = normalize_number(final)
    if not sep or answer is None:
        raise DataError(f"{where}: the answer has no final '#### <number>' line; "
                        "GSM8K solutions must end with one.")
    rationale = re.sub(r"<<.*?>>", "", body).strip()
    return Example(question=question.strip(), answer=answer, rationale=rationale,
                   id=f"gsm8k-{split}-{i}")


def _arc_row(row, split: str, i: int, where: str) -> Example:
    question, key, id_ = (_field(row, k, str, where) for k in ("question", "answerKey", "id"))
    choices = _field(row, "choices", dict, where)
    texts, labels = (_field(choices, k, list, where + ", choices") for k in ("text", "label"))
    if not labels or len(texts) != len(labels):
        raise DataError(f"{where}: choices has {len(texts)} texts but {len(labels)} labels; "
                        "they must pair up one to one.")
    if key not in labels:
        raise DataError(f"{where}: answerKey {key!r} is not one of the labels {labels}; "
                        "fix the row's answerKey.")
    pairs = tuple((str(label), str(text)) for label, text in zip(labels, texts))
    return Example(question=question.strip(), answer=dict(pairs)[key], choices=pairs,
                   label=key, id=id_)


# ----------------------------------------------------------------------------- arithmetic

_PEOPLE = (("Mia", "she", "her"), ("Liam", "he", "him"), ("Ava", "she", "her"), ("Noah", "he", "him"),
           ("Zoe", "she", "her"), ("Omar", "he", "him"), ("Lena", "she", "her"), ("Ravi", "he", "him"))
_OBJECTS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "shells")
# op -> (question clause, rationale clause); {s}/{o}: pronouns, {k}: amount, {x}: object.
_PHRASES = {
    "+": (("{s} buys {k} more {x}", "buying {k} more"), ("{s} finds {k} more {x}", "finding {k} more"),
          ("a friend gives {o} {k} more {x}", "getting {k} more from a friend")),
    "-": (("{s} gives away {k} {x}", "giving away {k}"), ("{s} loses {k} {x}", "losing {k}"),
          ("{s} sells {k} {x}", "selling {k}")),
}
_TIMES = {2: "doubles", 3: "triples", 4: "becomes 4 times as large"}


def _arith_problem(rng: random.Random, steps: int, low: int, high: int, ops: str):
    """One problem as (question, rationale, answer), or None when no op could keep it >= 0.

    Amounts added/subtracted are in low..high (a subtraction never exceeds the current value);
    multipliers are 2..4 ("doubles", "triples", "becomes 4 times as large").
    """
    name, s, o = rng.choice(_PEOPLE)
    x = rng.choice(_OBJECTS)
    value = rng.randint(low, high)
    question = [f"{name} has {value} {x}."]
    rationale = [f"{name} starts with {value} {x}."]
    for step in range(steps):
        feasible = [op for op in ops if op == "+" or (op == "-" and value >= low)
                    or (op == "*" and value >= 1)]
        if not feasible:
            return None
        op = rng.choice(feasible)
        if op == "*":
            k = rng.randint(2, 4)
            clause = f"the number of {x} {name} has {_TIMES[k]}"
            why = f"the number {_TIMES[k]}"
            new = value * k
        else:
            k = rng.randint(low, high) if op == "+" else rng.randint(low, min(high, value))
            clause, why = (p.format(s=s, o=o, k=k, x=x) for p in rng.choice(_PHRASES[op]))
            new = value + k if op == "+" else value - k
        clause = ("Then " if step else "") + clause
        question.append(clause[0].upper() + clause[1:] + ".")
        rationale.append(f"After {why} {s} has {value} {op} {k} = {new} {x}.")
        value = new
    question.append(f"How many {x} does {name} have now?")
    return " ".join(question), " ".join(rationale), str(value)


def _split_of(question: str) -> str:
    """Stable split bucket of a question (70/10/20), so splits never share a problem."""
    b = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % 10
    return "train" if b < 7 else "validation" if b < 8 else "test"


def _arithmetic(split: str, n: int | None = None, seed: int = 0, steps: int | None = None,
                low: int | None = None, high: int | None = None, ops: str | None = None) -> Arithmetic:
    """``n`` distinct problems for ``split``; the same arguments give the same problems anywhere
    (string-seeded ``random.Random``; questions are bucketed by SHA-256 so splits are disjoint).
    ``unseen`` draws its numbers from high+1 .. high+UNSEEN_WIDTH instead (new arithmetic, not
    only new wording: it shares no (start, op, amount) with the other splits)."""
    cfg = {**DEFAULT_ARITH, **{k: v for k, v in
                               (("steps", steps), ("low", low), ("high", high), ("ops", ops)) if v is not None}}
    n = _ARITH_N[split] if n is None else n
    steps, low, high, ops = cfg["steps"], cfg["low"], cfg["high"], cfg["ops"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, steps, low, high))
    if not (ints and n >= 0 and steps >= 1 and 1 <= low <= high
            and isinstance(ops, str) and ops and set(ops) <= set("+-*")):
        raise ConfigError(f"invalid arithmetic options n={n!r}, steps={steps!r}, low={low!r}, high={high!r}, "
                          f"ops={ops!r}; need integers n >= 0, steps >= 1, 1 <= low <= high, and ops "
                          "a non-empty string of '+', '-', '*'.")
    rng = random.Random(f"latro-arithmetic:{seed}:{split}")
    unseen = split == "unseen"
    num_low, num_high = (high + 1, high + UNSEEN_WIDTH) if unseen else (low, high)
    seen, examples = set(), []
    for _ in range(100 * n + 1000):
        if len(examples) == n:
            break
        problem = _arith_problem(rng, steps, num_low, num_high, "".join(sorted(set(ops))))
        if problem is None or problem[0] in seen or (not unseen and _split_of(problem[0]) != split):
            continue
        seen.add(problem[0])
        examples.append(Example(question=problem[0], answer=problem[2], rationale=problem[1],
                                id=f"arith-{split}-{len(examples)}"))
    if len(examples) < n:
        raise ConfigError(f"could only generate {len(examples)} of n={n} distinct arithmetic problems "
                          f"with steps={steps}, low={low}, high={high}, ops={ops!r}; widen low..high, "
                          "add ops or lower n.")
    return Arithmetic(split, examples, n=n, seed=seed, steps=steps, low=low, high=high, ops=ops)


# ----------------------------------------------------------------------------- the tasks

register_task(_stored_task("gsm8k", ("train", "test"), "gsm8k", _gsm8k_row, ("openai/gsm8k", "main"), GSM8K))
register_task(_stored_task("arc_challenge", ("train", "validation", "test"), "arc-challenge", _arc_row,
                           ("allenai/ai2_arc", "ARC-Challenge"), ARCChallenge, aliases=("arc-challenge", "arc")))
register_task(TaskRecord("arithmetic", ("train", "validation", "test", "unseen"),
                         lambda split, data_dir, **options: _arithmetic(split, **options)))
