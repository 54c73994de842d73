"""Reading numbers out of a model's text: the answer templates, numbers in digits or words, and the
expression rule ("The answer is 12 + 5 = 17." reads 17).

Every numeric task (:class:`~latro_core.tasks.base.Task`) reads its answers with these; ARC reads
labels (:mod:`latro_core.tasks.arc`) but finds the text after the template here too.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# a number: optional sign (not after a word char, so "16-3" gives 3) and "$", digits with comma grouping
# or not, an optional decimal part, or a leading-decimal ".5"; then an optional "/denominator" (not
# "/4.5", but "/4." at a sentence's end)
NUMBER = re.compile(r"(?<![\w.])(-?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/(\d+)(?!\d|\.\d))?")
# "the answer is", "the final answer is", "answer:" (any case), optional colon: every stop string of the
# numeric tasks is one of these
ANSWER_PATTERN = re.compile(r"(?:\bthe\s+(?:final\s+)?answer\s+is\b|\banswer\s*:)\s*:?", re.IGNORECASE)
# an expression that starts an answer: (markdown, "$" or "(", then) a number, numbers and operators up to
# an "=", then the chain of "= value"s that follows it ("12 + 5 = 17.", "**3 x 4 = 12**", "2 * 3 = 6 = 6");
# a letter or anything else ends it, so "17. Check: 12 + 5 = 17" starts with none
_OPERAND = r"[\d.,\s$()+\-*/×x÷^]"
_EXPRESSION = re.compile(rf"[\s*_`$(]*-?\$?\d{_OPERAND}*=(?:{_OPERAND}|=)*")
# expressions chained on from it ("2 + 3 = 5 and 5 + 1 = 6": the last one's result, 6)
_CHAINED = re.compile(rf"(?:and|then|so)?\s*-?\$?\d{_OPERAND}*=(?:{_OPERAND}|=)*", re.IGNORECASE)

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


def plain_text(text: str | None) -> str:
    """``text`` with typographic minus signs as "-" and non-comma thousands separators removed."""
    return _GROUP.sub("", (text or "").translate(_MINUS))


def number_word(segment: str) -> str | None:
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
    """A Decimal as the shortest plain string: 72.0 -> "72", 3.50 -> "3.5"."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def normalize_number(s: str) -> str | None:
    """First number in ``s`` as a canonical string, or None.

    "1,234" -> "1234", "$5.00" -> "5", "72.0" -> "72", "3.50" -> "3.5", "-4" -> "-4",
    "12 dollars" -> "12", "1/2" -> "0.5".
    """
    m = NUMBER.search(plain_text(s))
    if not m:
        return None
    try:
        d = Decimal(m.group(1) + m.group(2).replace(",", ""))
        if m.group(3) and int(m.group(3)) != 0:
            d = d / Decimal(m.group(3))
    except InvalidOperation:
        return None
    return _fmt(d) if d != 0 else "0"


def last_number(text: str) -> str | None:
    """The last number in ``text``, normalized (None when there is none)."""
    matches = list(NUMBER.finditer(text))
    return normalize_number(matches[-1].group(0)) if matches else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """|a - b| < 1e-6 for two number strings (normalized first when not plain floats); False for None."""
    if a is None or b is None:
        return False
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        a, b = normalize_number(a), normalize_number(b)
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6


def after_templates(text: str, pattern: re.Pattern = ANSWER_PATTERN):
    """Yield, for each answer template (a match of ``pattern``) in ``text``, the first non-blank line
    that follows it."""
    for m in pattern.finditer(text):
        yield text[m.end():].lstrip().split("\n", 1)[0]


def expression_result(segment: str) -> str | None:
    """What follows the last "=" of an expression that starts ``segment`` ("12 + 5 = 17." -> " 17."), and of
    the expressions chained on from it ("2 + 3 = 5 and 5 + 1 = 6." -> " 6.");
    None when the segment does not start with one ("17. Check: 12 + 5 = 17", "4. Then 2 + 3 = 5")."""
    m = _EXPRESSION.match(segment)
    if not m:
        return None
    end = m.end()
    while (more := _CHAINED.match(segment, end)) and more.end() > end:
        end = more.end()
    return segment[segment.rfind("=", 0, end) + 1:]


def stated_number(segment: str) -> str | None:
    """The number an answer segment (the line after a template) states: the result of an expression
    that starts it, else its first number in digits, or in words 0-99 at its start; None without one.

    The expression's result stands only where the expression starts right after the template; a number
    stated first is the answer even when an expression follows it in the same line.
    """
    # an expression right after the template gives its result ("12 + 5 = 17." -> 17); else the number stated first
    result = expression_result(segment)
    for part in dict.fromkeys(p for p in (result, segment) if p is not None):
        if (num := number_word(part.lstrip())) is not None or (num := normalize_number(part)) is not None:
            return num
    return None
