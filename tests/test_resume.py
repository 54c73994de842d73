"""Tests for resuming a run and for the run folder it resumes from: exact resume (passed-in model, model
loaded by name, LoRA), a resume with nothing to resume or nothing left to do, changed settings, a folder
that already holds a run or cannot be written, a damaged file read back. Shared helpers:
tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import json

import pytest
import torch

from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core.trainer import Trainer, TrainingInterrupted, checkpoint_step
from trainer_helpers import assert_same_weights, make_cfg, metrics, no_timing, run, stop_after, weights


# ----------------------------------------------------------------------------- resume

@pytest.mark.parametrize("variant", ["passed_in", "by_name", "lora"])
def test_resume_is_exact(variant, tok, task, tmp_path, monkeypatch):
    """4 steps in one go == 2 steps, stop (as on SIGTERM), resume to 4: same weights, same metrics."""
    kw = dict(steps=4, save_every=100, truncation="none", lr=1e-3)
    if variant == "lora":
        kw.update(lora=True, lora_r=4, lora_alpha=8, lr=1e-2)
    model_dir = None
    if variant == "by_name":
        model_dir = tmp_path / "start"
        m, _ = tiny_model(tok)
        m.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        kw["model"] = str(model_dir)

    def new_trainer(out, **extra):
        c = make_cfg(out, **kw, **extra)
        if variant == "by_name":
            return Trainer(c, task=task)
        return Trainer(c, model=tiny_model(tok)[0], tokenizer=tok, task=task)

    full = new_trainer(tmp_path / "full")
    full.train()

    with monkeypatch.context() as mp:
        stop_after(mp, 2)
        with pytest.raises(TrainingInterrupted, match="after step 2"):
            new_trainer(tmp_path / "split").train()
    assert checkpoint_step(tmp_path / "split" / "checkpoint") == 2
    assert len(metrics(tmp_path / "split")) == 2
    resumed = new_trainer(tmp_path / "split", resume=True)
    assert resumed.step == 2
    saved = torch.load(tmp_path / "split" / "checkpoint" / "state.pt", weights_only=False)
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])        # the RNG continues too
    resumed.train()

    # one process, the same kernels and the same order of every sum: bitwise equal
    assert_same_weights(weights(tmp_path / "full" / "final"), weights(tmp_path / "split" / "final"))
    assert no_timing(metrics(tmp_path / "full")) == no_timing(metrics(tmp_path / "split"))
    if variant != "lora":
        # the run did train (the weights moved), and after the resume π0 is still the starting
        # model, not the checkpoint's weights (the by-name run saved the same seeded tiny model)
        start = tiny_model(tok)[0].state_dict()
        end = weights(tmp_path / "full" / "final")
        assert any(not torch.equal(end[k], start[k]) for k in end)
        for k, v in resumed.policy.reference.lm.state_dict().items():
            assert torch.equal(v, start[k]), k


def test_resume_without_checkpoint_starts_fresh(tok, task, tmp_path):
    tr = Trainer(make_cfg(tmp_path, resume=True, steps=1), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    assert tr.step == 0


def test_resume_of_finished_run_does_nothing_more(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2), tok, task)
    before = metrics(tmp_path)
    tr, _ = run(make_cfg(tmp_path, steps=2, resume=True), tok, task)
    assert tr.step == 2 and metrics(tmp_path) == before


# ----------------------------------------------------------------------------- run folders and resumes

def test_a_new_run_refuses_a_folder_holding_a_run_and_overwrite_starts_over(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2), tok, task)
    before = metrics(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        run(make_cfg(tmp_path, steps=1), tok, task)
    assert metrics(tmp_path) == before and (tmp_path / "final").exists()     # nothing was touched
    run(make_cfg(tmp_path, steps=1, overwrite=True), tok, task)
    assert [m["step"] for m in metrics(tmp_path)] == [1]
    assert checkpoint_step(tmp_path / "checkpoint") == 1


def test_resume_refuses_changed_settings_and_records_the_allowed_ones(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2, lr=1e-3), tok, task)
    with pytest.raises(ConfigError, match=r"k: 2 in the checkpoint, 4 now.*lr: 0.001 in the checkpoint, 0.01 now"
                                          r".*--change k,lr"):
        run(make_cfg(tmp_path, steps=3, lr=1e-2, k=4, micro_batch=4, resume=True), tok, task)
    with pytest.raises(ConfigError, match="unknown settings"):
        run(make_cfg(tmp_path, steps=3, lr=1e-2, resume=True, change="lr,learning_rate"), tok, task)
    # the step budget may grow without asking; a named change is allowed and recorded with its step
    run(make_cfg(tmp_path, steps=3, lr=1e-2, resume=True, change="lr"), tok, task)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["lr"] == 1e-2 and cfg["steps"] == 3
    assert cfg["resumes"] == [{"step": 2, "changed": {"lr": [1e-3, 1e-2]}}]
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3]


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tok, task, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        Trainer(make_cfg(tmp_path / "file" / "run"), model=tiny_model(tok)[0], tokenizer=tok, task=task)


@pytest.mark.parametrize("damage", ["state.pt", "weights", "metrics line"])
def test_a_damaged_file_read_back_on_resume_is_one_clear_error(tok, task, tmp_path, damage):
    from latro_core.errors import CheckpointError

    run(make_cfg(tmp_path, steps=2, save_every=1), tok, task)
    if damage == "state.pt":
        f = tmp_path / "checkpoint" / "state.pt"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])          # a truncated file
        match = r"checkpoint/state.pt is missing or damaged"
    elif damage == "weights":
        f = next((tmp_path / "checkpoint" / "model").glob("*.safetensors"))
        f.write_bytes(f.read_bytes()[:100])
        match = r"model.safetensors is missing or damaged"
    else:
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        (tmp_path / "metrics.jsonl").write_text("\n".join(["{not json"] + lines) + "\n")
        match = r"metrics.jsonl, line 1, is damaged"
    with pytest.raises(CheckpointError, match=match):
        run(make_cfg(tmp_path, steps=3, save_every=1, resume=True), tok, task)
