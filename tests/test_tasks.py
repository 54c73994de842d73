"""Tests for latro_core.tasks: loading, prompts, targets, answer extraction, the generator."""

import copy
import json
import os
import re
import warnings
from pathlib import Path

import pytest

from latro_core import tasks
from latro_core.errors import ConfigError, DataError
from latro_core.tasks import (ANSWER_TEMPLATE, DEFAULT_ARITH, STOP_STRINGS, TASKS, Example,
                              end_of_turn, load_task, normalize_number, task_splits)


@pytest.fixture(scope="module")
def data_dir():
    d = os.environ.get("LATRO_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("local data folder not found: set LATRO_DATA_DIR")
    return Path(d)


@pytest.fixture(scope="module")
def gsm8k_test(data_dir):
    return load_task("gsm8k", "test", data_dir=data_dir)


@pytest.fixture(scope="module")
def arc_test(data_dir):
    return load_task("arc_challenge", "test", data_dir=data_dir)


# ----------------------------------------------------------------------------- real data

@pytest.mark.parametrize("name,split,n", [
    ("gsm8k", "train", 7473), ("gsm8k", "test", 1319),
    ("arc_challenge", "train", 1119), ("arc_challenge", "validation", 299), ("arc_challenge", "test", 1172),
])
def test_split_sizes(data_dir, name, split, n):
    task = load_task(name, split, data_dir=data_dir)
    assert len(task) == n and task.split == split and task.name == name
    assert len({ex.id for ex in task}) == n


def test_env_var_and_aliases(data_dir, monkeypatch):
    monkeypatch.setenv("LATRO_DATA_DIR", str(data_dir))
    assert len(load_task("arc-challenge", "validation")) == len(load_task("arc", "validation")) == 299
    assert task_splits("gsm8k") == ("train", "test") and tuple(TASKS) == ("gsm8k", "arc_challenge", "arithmetic")


def test_gsm8k_rows(gsm8k_test):
    ex = gsm8k_test[0]
    assert ex.id == "gsm8k-test-0" and ex.answer == "18" and ex.question.startswith("Janet")
    assert ex.rationale.startswith("Janet sells 16 - 3 - 4 = 9 duck eggs")
    assert all("<<" not in e.rationale and "####" not in e.rationale for e in gsm8k_test)
    assert any(e.answer == "2125" for e in gsm8k_test)  # "#### 2,125"
    assert any(e.answer.startswith("-") for e in gsm8k_test)  # "#### -3"


def test_gsm8k_gold_solutions_extract(gsm8k_test, data_dir):
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    for ex, line in zip(gsm8k_test, lines):
        body, _, x = json.loads(line)["answer"].rpartition("####")
        text = f"{body}The answer is {x.strip()}."
        assert gsm8k_test.extract_answer(text) == normalize_number(x) == ex.answer, text
        assert gsm8k_test.is_correct(gsm8k_test.extract_answer(text), ex)


def test_arc_rows_and_extraction(arc_test):
    ex = arc_test[0]
    assert ex.id == "Mercury_7175875" and ex.label == "C"
    assert ex.answer == "Planetary days will become shorter." and ex.rationale is None
    assert ex.choices[0] == ("A", "Planetary density will decrease.")
    for ex in arc_test.examples[:50]:
        for text in (f"The answer is {ex.answer}.", f"The answer is ({ex.label}).",
                     f"Step 1 ...\nThe answer is: **({ex.label}) {ex.answer}**"):
            pred = arc_test.extract_answer(text, ex)
            assert pred == ex.label and arc_test.is_correct(pred, ex), text
        # without the example, the option text is kept and is_correct matches it
        assert arc_test.is_correct(arc_test.extract_answer(f"The answer is {ex.answer}."), ex)


def test_arc_numeric_labels_and_case(arc_test):
    ex = next(e for e in arc_test if e.choices[0][0] == "1")
    assert arc_test.extract_answer(f"The answer is ({ex.label}).", ex) == ex.label
    assert "(1) " in arc_test.question_text(ex)
    rr = Example("Genotype?", "Rr", choices=(("A", "R"), ("B", "rr"), ("C", "Rr"), ("D", "RR")), label="C")
    assert arc_test.extract_answer("The answer is Rr.", rr) == "C"


def test_arc_tricky_generations(arc_test):
    ex = Example("Which is a gas?", "steam", choices=(("A", "ice"), ("B", "steam"), ("C", "water"),
                                                     ("D", "ice and steam")), label="B")
    x = arc_test.extract_answer
    assert x("The answer is B.", ex) == "B" and x("The answer is b)", ex) == "B"
    assert x("The answer is option B", ex) == "B" and x("the answer is: **B**", ex) == "B"
    assert x("Ice melts. So the answer is Steam.", ex) == "B"
    assert x("The answer is ice and steam.", ex) == "D"          # longest option text wins
    assert x("The answer is a gas, so steam.", ex) == "B"        # article "a" is not label A
    assert x("I think it is (C) because...", ex) == "C"          # no template: parenthesized label
    assert x("Steam\n", ex) == "B"                               # direct answer: option text
    assert x("The answer is unclear.", ex) is None and x("", ex) is None
    assert not arc_test.is_correct(None, ex) and arc_test.is_correct("b", ex)


@pytest.mark.parametrize("text,expected", [
    ("The answer is $1,234.", "1234"),
    ("Total: 7 + 11 = 18, so the answer is 18 dollars", "18"),
    ("Answer: 3.50", "3.5"),
    ("**The answer is 42**", "42"),
    ("The answer is: **$1,234.50**.", "1234.5"),
    ("She has 5 apples and then 7 apples.", "7"),     # no template: last number
    ("So she ends with \\boxed{72}", "72"),
    ("The temperature drops 10 - 13 = -3 degrees. The answer is -3.", "-3"),
    ("The answer is 72.0", "72"),
    ("16-3 is 13", "13"),
    ("The answer is four.\nShe had 4 left.", "4"),     # no number after template: last number
    ("The answer is:\n\n12", "12"),
    ("I cannot tell.", None),
    ("", None),
    # what models write besides ASCII digits (issue 17): typographic minus, other group separators, words
    ("The answer is \u22124.", "-4"),                      # U+2212 minus sign
    ("It drops to \u20133 degrees.", "-3"),                # en dash as a minus
    ("The answer is 1\u202f234.", "1234"),                 # narrow no-break space between groups
    ("The answer is 1\u00a0234 dollars", "1234"),          # no-break space
    ("The answer is 1'234.", "1234"),                      # apostrophe grouping
    ("The answer is \uff13\uff17.", "37"),                 # full-width digits
    ("The answer is five.", "5"),
    ("So the answer is **Twenty-one** apples.", "21"),
    ("The answer is minus three.", "-3"),
    ("The answer is one of the two: 7", "7"),              # "one of" is not a number
    ("There are 3 apples and 1 234 pears.", "234"),        # a plain space does not group digits
    ("The answer is 12.\n\nThe final count is 13.", "12"),  # the first template's number wins
    # an expression's result is the answer only where the expression starts right after the template (issue 38)
    ("The answer is 12 + 5 = 17.", "17"),
    ("The answer is **3 x 4 = 12** apples.", "12"),
    ("The answer is 12 + 5 = 10 + 7 = 17 apples", "17"),   # a chain of "=": its last value
    ("The answer is 12 + 5 = seventeen.", "17"),
    ("The answer is $12 * 2 = $24.", "24"),
    ("The answer is 17. Check: 12 + 5 = 17", "17"),
    ("The answer is 4. Then 2 + 3 = 5", "4"),               # the stated 4 stands, not the later 5
    ("The answer is 4 apples, since 2 + 2 = 4 and 1 + 2 = 3.", "4"),
    ("The answer is five, because 2 + 2 = 4", "5"),
])
def test_numeric_extraction(text, expected):
    assert tasks.GSM8K("test", []).extract_answer(text) == expected


def test_normalize_number_and_is_correct():
    cases = {"1,234": "1234", "$5.00": "5", "72.0": "72", "3.50": "3.5", "-4": "-4", "12 dollars": "12",
             "1/2": "0.5", "0.0": "0", "no number": None}
    assert {k: normalize_number(k) for k in cases} == cases
    task, ex = tasks.GSM8K("test", []), Example("q", "72")
    assert task.is_correct("72.0", ex) and task.is_correct("72", ex) and task.is_correct("$72", ex)
    assert not task.is_correct("71", ex) and not task.is_correct(None, ex)


def test_stop_strings():
    assert ANSWER_TEMPLATE == "The answer is" and ANSWER_TEMPLATE in STOP_STRINGS
    assert set(STOP_STRINGS) >= {"Answer:", "So, the answer is", "so the final answer is"}
    for s in STOP_STRINGS:  # every stop string is an answer template for extraction
        assert tasks.GSM8K("test", []).extract_answer(f"x = 2. {s} 5. Then 6") == "5"


def test_a_task_carries_its_own_answer_format():
    """A task with another answer format sets its template, stop strings and pattern; no module global changes."""
    import inspect

    from latro_core.rollout import find_stop, sample_rationales

    class FinalAnswer(tasks.Task):
        answer_template = "Final answer:"
        stop_strings = ("Final answer:",)
        answer_pattern = re.compile(r"\bfinal answer:", re.IGNORECASE)

    task, ex = FinalAnswer("test", []), Example("q", "7", rationale="3 + 4 = 7")
    assert task.answer_target(ex) == "Final answer: 7." and task.sft_target(ex) == "3 + 4 = 7 Final answer: 7."
    assert task.extract_answer("3 + 4 = 7. Final answer: 9") == "9"
    assert task.extract_answer("The answer is 9. Then 5") == "5"      # another template: the last number
    assert find_stop("3 + 4 = 7. Final answer: 7", task.stop_strings) == 11
    assert tasks.GSM8K("test", []).answer_target(ex) == "The answer is 7." and ANSWER_TEMPLATE == "The answer is"
    # every task keeps today's format unless it sets its own; the sampler's default is the base task's
    assert all(t.stop_strings == STOP_STRINGS for t in (tasks.GSM8K, tasks.ARCChallenge, tasks.Arithmetic))
    assert inspect.signature(sample_rationales).parameters["stop_strings"].default == STOP_STRINGS


# ----------------------------------------------------------------------------- prompts, targets

def test_question_text():
    g, a = tasks.GSM8K("test", []), tasks.ARCChallenge("test", [])
    q = Example("What is 2+3?", "5")
    assert g.question_text(q) == "What is 2+3? Let's think step by step."
    assert g.question_text(q, direct=True) == "What is 2+3?"
    ex = Example("Why?", "y", choices=(("A", "x"), ("B", "y")), label="B")
    assert a.question_text(ex) == ("Question: Why?\nOptions: (A) x (B) y\nLet's think step by step first then "
                                   "print your answer like 'The answer is (one of the options)'.")
    assert a.question_text(ex, direct=True) == ("Question: Why?\nOptions: (A) x (B) y\n"
                                                "Answer with the text of the correct option.")


def test_only_arc_trains_sft_on_direct_answers():
    """The SFT baseline on ARC (as the released code's ARC data) answers with the option text, no rationale; on the
    numeric tasks it trains on the gold rationale (the trainer and its evaluation read this flag)."""
    assert tasks.ARCChallenge.sft_direct and not tasks.GSM8K.sft_direct and not tasks.Arithmetic.sft_direct


def test_prompt_with_chat_template(smol_tokenizer):
    task, ex = tasks.GSM8K("test", []), Example("What is 2+3?", "5", rationale="2 + 3 = 5")
    p = task.prompt(ex, smol_tokenizer)
    assert "<|im_start|>user\nWhat is 2+3? Let's think step by step.<|im_end|>" in p
    assert p.endswith("<|im_start|>assistant\n")
    assert task.prompt(ex) == "What is 2+3? Let's think step by step.\n"


def test_prompt_without_chat_template_warns_once(smol_tokenizer, monkeypatch):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    monkeypatch.setattr(tasks.base, "_warned_no_template", False)
    task, ex = tasks.GSM8K("test", []), Example("What is 2+3?", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert task.prompt(ex, tok) == "What is 2+3? Let's think step by step.\n"
        assert task.prompt(ex, tok, direct=True) == "What is 2+3?\n"
        task.prompt(ex)  # no tokenizer: no warning
    assert len(caught) == 1 and "chat template" in str(caught[0].message)


def test_targets(smol_tokenizer, gsm8k_test, arc_test):
    eos = smol_tokenizer.eos_token
    assert end_of_turn(smol_tokenizer) == eos == "<|im_end|>" and end_of_turn(None) == ""
    ex = gsm8k_test[0]
    assert gsm8k_test.answer_target(ex, smol_tokenizer) == "The answer is 18." + eos
    assert gsm8k_test.answer_target(ex) == "The answer is 18."
    sft = gsm8k_test.sft_target(ex, smol_tokenizer)
    assert "<<" not in sft and sft.endswith(" The answer is 18." + eos) and sft.startswith("Janet sells")
    arc = arc_test[0]
    assert arc_test.answer_target(arc, smol_tokenizer) == "The answer is Planetary days will become shorter." + eos
    assert arc_test.sft_target(arc) == "The answer is Planetary days will become shorter."


def test_answer_ids_continue_the_rationale(smol_tokenizer, gsm8k_test):
    """y is tokenized as it continues z: " The" after a non-space character, "The" after a
    newline or an empty z; either way x ⊕ z ⊕ y decodes to the text a reader expects."""
    tok, ex = smol_tokenizer, gsm8k_test[0]
    y = gsm8k_test.answer_target(ex, tok)
    first = lambda ids: tok.convert_ids_to_tokens(ids[:1])[0]          # noqa: E731
    assert first(gsm8k_test.answer_ids(ex, tok)) == "The"
    z_newline = tok("So 16 - 3 - 4 = 9 eggs.\n", add_special_tokens=False)["input_ids"]
    z_period = tok("So 16 - 3 - 4 = 9 eggs.", add_special_tokens=False)["input_ids"]
    assert first(gsm8k_test.answer_ids(ex, tok, z_newline)) == "The"
    assert first(gsm8k_test.answer_ids(ex, tok, z_period)) == "ĠThe"     # byte-level BPE: Ġ is the space
    ids = z_period + gsm8k_test.answer_ids(ex, tok, z_period)
    assert tok.decode(ids) == "So 16 - 3 - 4 = 9 eggs. " + y
    assert gsm8k_test.answer_ids(ex, tok, z_period)[-1] == tok.eos_token_id


def test_subset(gsm8k_test):
    a, b = gsm8k_test.subset(10, seed=1), gsm8k_test.subset(10, seed=1)
    assert type(a) is type(gsm8k_test) and len(a) == 10 and a.examples == b.examples
    assert a.examples != gsm8k_test.subset(10, seed=2).examples and len(gsm8k_test) == 1319
    assert len(gsm8k_test.subset(None)) == 1319 and len(gsm8k_test.subset(5000)) == 1319
    with pytest.raises(ConfigError):
        gsm8k_test.subset(-1)


# ----------------------------------------------------------------------------- errors

def _write(root: Path, rel: str, lines):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ARC_OK = {"id": "x1", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}


@pytest.mark.parametrize("rel,bad,needle", [
    ("gsm8k/train.jsonl", json.dumps({"question": "Q?", "answer": "2 + 2 = 4"}), "####"),
    ("gsm8k/train.jsonl", '{"question": "Q?", "answer": ', "JSON"),
    ("gsm8k/train.jsonl", json.dumps({"question": "Q?"}), "'answer'"),
    ("arc-challenge/train.jsonl", json.dumps({**ARC_OK, "answerKey": "E"}), "answerKey"),
    ("arc-challenge/train.jsonl", json.dumps({**ARC_OK, "choices": {"text": ["a"], "label": ["A", "B"]}}),
     "labels"),
])
def test_malformed_rows(tmp_path, rel, bad, needle):
    good = json.dumps({"question": "Q?", "answer": "4\n#### 4"}) if "gsm8k" in rel else json.dumps(ARC_OK)
    _write(tmp_path, rel, [good, "", good, bad, good])
    name = "gsm8k" if "gsm8k" in rel else "arc_challenge"
    with pytest.raises(DataError) as err:
        load_task(name, "train", data_dir=tmp_path)
    msg = str(err.value)
    assert "train.jsonl" in msg and "line 4" in msg and needle in msg, msg
    _write(tmp_path, rel, [good, "", good])  # blank lines are fine
    assert [ex.id for ex in load_task(name, "train", data_dir=tmp_path)][0] in ("gsm8k-train-0", "x1")


def test_missing_data_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LATRO_DATA_DIR", str(tmp_path / "missing"))
    for name, repo in (("gsm8k", "openai/gsm8k"), ("arc_challenge", "allenai/ai2_arc")):
        with pytest.raises(DataError) as err:
            load_task(name, "test")
        msg = str(err.value)
        assert "LATRO_DATA_DIR" in msg and "hub" in msg and repo in msg and "missing" in msg, msg


def test_bad_names():
    with pytest.raises(ConfigError, match="gsm8k, arc_challenge, arithmetic"):
        load_task("mmlu")
    with pytest.raises(ConfigError, match="train, test"):
        load_task("gsm8k", "validation")
    with pytest.raises(ConfigError):
        load_task("gsm8k", "test", n=5)
    for bad in ({"ops": "/"}, {"steps": 0}, {"low": 5, "high": 2}, {"n": -1}):
        with pytest.raises(ConfigError):
            load_task("arithmetic", "test", **bad)
    with pytest.raises(ConfigError, match="distinct"):
        load_task("arithmetic", "train", n=500, steps=1, low=2, high=2, ops="+")


# ----------------------------------------------------------------------------- arithmetic

def test_arithmetic_generator():
    a, b = load_task("arithmetic", "train", seed=3), load_task("arithmetic", "train", seed=3)
    assert len(a) == 1000 and a.examples == b.examples and a[0].id == "arith-train-0"
    assert [e.question for e in load_task("arithmetic", "train", seed=4)] != [e.question for e in a]
    assert len({e.question for e in a}) == len(a)
    splits = {s: {e.question for e in load_task("arithmetic", s, seed=3)} for s in ("train", "validation", "test")}
    assert (len(splits["test"]), len(splits["validation"])) == (500, 200)
    assert not (splits["train"] & splits["test"] or splits["train"] & splits["validation"]
                or splits["validation"] & splits["test"])
    for ex in a:
        assert re.fullmatch(r"\d+", ex.answer)
        assert re.findall(r"\d+", ex.rationale)[-1] == ex.answer
        assert a.extract_answer(a.sft_target(ex)) == ex.answer
        assert len(re.findall(r" [-+*] ", ex.rationale)) == DEFAULT_ARITH["steps"]


def test_the_unseen_arithmetic_split_shares_no_start_op_amount_triple_with_any_other_split():
    def triples(split, **kw):
        out = set()
        for ex in load_task("arithmetic", split, **kw):
            start = int(re.search(r"starts with (\d+)", ex.rationale).group(1))
            out |= {(start, op, int(k)) for _, op, k, _ in re.findall(r"(\d+) ([-+]) (\d+) = (\d+)", ex.rationale)}
        return out

    seen = triples("train") | triples("validation") | triples("test")
    unseen = load_task("arithmetic", "unseen")
    assert len(unseen) == 200 and len({e.question for e in unseen}) == 200
    assert seen and not (triples("unseen") & seen)
    for ex in unseen:                                 # numbers 13..30: outside training's 2..12
        nums = [int(x) for x in re.findall(r"\d+", ex.question)]
        assert all(13 <= x <= 30 for x in nums), ex.question
        assert unseen.extract_answer(unseen.sft_target(ex)) == ex.answer
    assert "unseen" in task_splits("arithmetic")


def test_arithmetic_knobs():
    hard = load_task("arithmetic", "test", n=50, steps=3, low=5, high=9, ops="+-*")
    assert hard.config["steps"] == 3
    for ex in hard:
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", ex.rationale)
        assert len(steps) == 3
        for x, op, k, y in steps:  # every step is right and stays non-negative
            assert eval(f"{x} {op} {k}") == int(y) >= 0
            assert op == "*" or 5 <= int(k) <= 9
    assert any("*" in ex.rationale for ex in hard)
    only_add = load_task("arithmetic", "validation", n=20, ops="+")
    assert all(" - " not in ex.rationale for ex in only_add)
    assert load_task("arithmetic", "test", n=20).examples != load_task("arithmetic", "test", n=20, steps=3).examples
