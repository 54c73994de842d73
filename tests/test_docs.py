"""The documentation keeps its promises: every library name a notebook or doc cites exists, and the
settings a doc warns against are refused where they enter."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from latro_core.errors import ConfigError
from latro_core.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "latro_core"
FILE_SUFFIXES = {"py", "md", "json", "jsonl", "csv", "png", "ipynb", "yaml", "yml", "txt", "pt", "sh", "gguf", "toml"}


def _documents() -> list[Path]:
    return sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "notebooks").glob("*.py")])


def _short_modules() -> dict[str, str]:
    """The names the docs cite modules by: a top-level module or package ("evaluate", "tasks") and an
    orchestration module ("runs", "profiles"), each -> its dotted path ("latro_core.experiments.runs")."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.parent if path.name == "__init__.py" else path.with_suffix("")
        for part in (module, *module.parents):
            if part == PACKAGE or PACKAGE not in part.parents:
                break
            depth = len(part.relative_to(PACKAGE).parts)
            if depth == 1 or part.parent.name == "experiments":
                out.setdefault(part.name, ".".join(part.relative_to(ROOT).parts))
    return out


def _cited_names() -> list[tuple[str, str]]:
    """(document, dotted name) for every ``latro_core.a.b`` in a document, and every ``module.attr``
    inside a `code span` whose first name is a latro_core module (``evaluate.answer_nll``)."""
    short = _short_modules()
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    full = re.compile(rf"(?<![\w./])latro_core(?:\.{ident})+")
    short_re = re.compile(rf"(?<![\w./-])({'|'.join(map(re.escape, short))})((?:\.{ident})+)")
    found = []
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        rel = str(doc.relative_to(ROOT))
        for m in full.finditer(text):
            name = m.group(0)
            if name.rsplit(".", 1)[-1] not in FILE_SUFFIXES:
                found.append((rel, name))
        if doc.suffix == ".py":     # a notebook's imports: from latro_core.x import a, b
            for module, names in re.findall(rf"^from (latro_core[\w.]*) import \(?([\w, \n#]+?)\)?$", text, re.M):
                for name in re.findall(rf"\b{ident}\b", re.sub(r"#.*", "", names)):
                    if name != "as":
                        found.append((rel, f"{module}.{name}"))
        for span in re.findall(r"`([^`\n]+)`", text):
            for m in short_re.finditer(span):
                rest = m.group(2)
                if rest.rsplit(".", 1)[-1] in FILE_SUFFIXES:
                    continue
                found.append((rel, short[m.group(1)] + rest))
    return sorted(set(found))


def _resolves(name: str) -> bool:
    """Import the longest module prefix of ``name``, then follow the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_the_docs_cite_library_names_at_all():
    names = {n for _, n in _cited_names()}
    assert "latro_core.objective.self_reward" in names or "latro_core.objective.latro_update" in names, names
    assert len(names) > 20


def test_every_latro_core_name_a_notebook_or_doc_mentions_resolves():
    missing = [f"{doc}: {name}" for doc, name in _cited_names() if not _resolves(name)]
    assert not missing, "names cited in the docs that latro_core does not have:\n" + "\n".join(missing)


def test_a_constant_truncation_reward_above_zero_under_a_log_probability_reward_is_refused():
    with pytest.raises(ConfigError) as err:
        TrainConfig(truncation="constant", gamma=2.0).validate()
    message = str(err.value)
    assert "\n" not in message and "bonus" in message and "--gamma -50" in message


@pytest.mark.parametrize("reward", ["probability", "rlpr", "verifier", "information_gain"])
def test_a_constant_truncation_reward_above_zero_is_refused_under_the_other_rewards_too(reward):
    """Under a reward in [0, 1] or an information gain, γ > 0 scores a cut rationale above a finished
    one that got nothing (reward 0): a bonus, refused with one line that says what to use."""
    with pytest.raises(ConfigError) as err:
        TrainConfig(reward=reward, truncation="constant", gamma=2.0).validate()
    message = str(err.value)
    assert "\n" not in message and "bonus" in message and "--gamma 0" in message and reward in message


def test_a_negative_or_zero_constant_truncation_reward_is_accepted():
    TrainConfig(truncation="constant", gamma=-50.0).validate()
    TrainConfig(truncation="constant", gamma=0.0).validate()
    TrainConfig(reward="probability", truncation="constant", gamma=0.0).validate()
    TrainConfig(reward="information_gain", truncation="constant", gamma=-5.0).validate()


def _markdown_cells(path: Path) -> list[str]:
    import jupytext
    return [c.source for c in jupytext.read(path).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("py", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.stem)
def test_no_markdown_cell_of_a_notebook_runs_over_250_words(py):
    long = [(i, len(src.split())) for i, src in enumerate(_markdown_cells(py)) if len(src.split()) > 250]
    assert not long, f"{py.name}: markdown cells over 250 words (index, words): {long}; split them"


@pytest.mark.parametrize("py", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.stem)
def test_each_notebook_opens_with_what_it_teaches_what_it_needs_and_where_it_sits(py):
    first = _markdown_cells(py)[0]
    for heading in ("**What it teaches.**", "**What it needs.**", "**Where it sits.**"):
        assert heading in first, f"{py.name}'s first cell lacks {heading}"
    assert "`smoke`" in first and "`demo`" in first, f"{py.name}'s first cell gives no time at smoke and at demo"
