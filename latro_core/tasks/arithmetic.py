"""Arithmetic: seeded multi-step word problems generated here (no download), for small models; its
``unseen`` split uses numbers outside the training range (new arithmetic, not only new wording).
"""

from __future__ import annotations

import hashlib
import random

from ..errors import ConfigError
from .base import Example, Task
from .registry import TaskRecord, register_task

# Default difficulty of the generated problems (one dict so it can be tuned in one place).
DEFAULT_ARITH = {"steps": 1, "low": 2, "high": 12, "ops": "+-"}
_ARITH_N = {"train": 1000, "validation": 200, "test": 500, "unseen": 200}
# The arithmetic "unseen" split: every start and amount in high+1 .. high+UNSEEN_WIDTH (13..30 at the
# default high = 12), so no (start, op, amount) triple of it occurs in train/validation/test, whose
# numbers stay in low..high. A test set for new arithmetic, never used for selection.
UNSEEN_WIDTH = 18


class Arithmetic(Task):
    name = "arithmetic"


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


register_task(TaskRecord("arithmetic", ("train", "validation", "test", "unseen"),
                         lambda split, data_dir, **options: _arithmetic(split, **options)))
