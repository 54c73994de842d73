"""Tests for the trainer's checkpoints and numerical guards: an atomic save (a crash or a kill in the
middle leaves the last complete checkpoint readable), a failed save, weights that do not fit the model,
and NaN / inf in the loss, a parameter or a gradient (the run stops with the last good checkpoint).
Shared helpers: tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import os

import pytest
import torch

import latro_core.methods.latro as latro_step_mod
import latro_core.trainer as trainer_mod
from latro_core.errors import ConfigError, NumericalError
from latro_core.models import tiny_model
from latro_core.trainer import checkpoint_step, save_checkpoint
from trainer_helpers import assert_same_weights, make_cfg, metrics, run, weights


# ----------------------------------------------------------------------------- checkpoints

def _opt_sched(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_save_checkpoint_is_atomic(tok, tmp_path, monkeypatch):
    model, _ = tiny_model(tok)
    opt, sched = _opt_sched(model)
    ck = tmp_path / "checkpoint"
    cfg = make_cfg(tmp_path)
    save_checkpoint(ck, model, opt.state_dict(), sched, 1, cfg, tokenizer=tok)
    assert checkpoint_step(ck) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]      # no .tmp / .old left
    saved = weights(ck / "model")

    # a crash in the middle of the next save: the step-1 checkpoint is intact and still read
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(ck, model, opt.state_dict(), sched, 2, cfg, tokenizer=tok)
    monkeypatch.undo()
    assert checkpoint_step(ck) == 1
    assert_same_weights(weights(ck / "model"), saved)
    assert (ck / "state.pt").exists()
    assert not (tmp_path / "checkpoint.tmp").exists()

    # a kill between the two renames (only checkpoint.old left): recovered on read
    os.replace(ck, tmp_path / "checkpoint.old")
    assert checkpoint_step(ck) == 1 and (ck / "trainer.json").exists()
    # and a complete new .tmp with no checkpoint (kill after old was removed): the newer one wins
    save_checkpoint(ck, model, opt.state_dict(), sched, 2, cfg)
    os.replace(ck, tmp_path / "checkpoint.tmp")
    assert checkpoint_step(ck) == 2
    # an incomplete .tmp (no trainer.json) is never taken for a checkpoint
    (tmp_path / "x.tmp").mkdir()
    assert checkpoint_step(tmp_path / "x") is None


def test_a_failed_save_keeps_the_last_good_checkpoint(tok, task, tmp_path, monkeypatch):
    from latro_core.errors import WriteError

    real_save, calls = torch.save, {"n": 0}

    def save_that_fills_the_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:                                          # the second checkpoint
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(trainer_mod.torch, "save", save_that_fills_the_disk)
    with pytest.raises(WriteError, match="No space left on device.*the checkpoint of step 1 in .* is intact"):
        run(make_cfg(tmp_path, steps=3, save_every=1), tok, task)
    assert checkpoint_step(tmp_path / "checkpoint") == 1
    assert not (tmp_path / "checkpoint.tmp").exists()
    monkeypatch.setattr(trainer_mod.torch, "save", real_save)
    run(make_cfg(tmp_path, steps=3, save_every=1, resume=True), tok, task)     # and the run goes on
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3]


def test_checkpoint_weights_must_fit_the_model(tok, tmp_path):
    small, _ = tiny_model(tok, hidden_size=32, heads=2)
    small.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="does not match the model .*size mismatch"):
        trainer_mod.load_weights(tiny_model(tok)[0], tmp_path / "m")
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        trainer_mod.load_weights(tiny_model(tok)[0], tmp_path)


# ----------------------------------------------------------------------------- numerical guards

def test_nan_loss_raises_and_keeps_last_good_checkpoint(tok, task, tmp_path, monkeypatch):
    real = latro_step_mod.latro_loss
    calls = {"n": 0}

    def nan_on_step3(*args, **kw):
        calls["n"] += 1
        loss, terms = real(*args, **kw)
        return (loss * float("nan") if calls["n"] >= 3 else loss), terms   # one micro-batch per step

    monkeypatch.setattr(latro_step_mod, "latro_loss", nan_on_step3)
    cfg = make_cfg(tmp_path, steps=4, save_every=2)
    with pytest.raises(NumericalError) as e:
        run(cfg, tok, task)
    assert "step 3" in str(e.value) and "loss" in str(e.value)
    assert checkpoint_step(tmp_path / "checkpoint") == 2
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "checkpoint" / "model").values())
    assert len(metrics(tmp_path)) == 2 and not (tmp_path / "final").exists()


def test_nan_parameter_raises_numerical_error(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    with pytest.raises(NumericalError, match=r"non-finite .* at step 1"):
        run(make_cfg(tmp_path, steps=1), tok, task, model)


def test_inf_gradient_stops_before_the_optimizer_step(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    w = model.model.layers[0].mlp.down_proj.weight
    w.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NumericalError, match="non-finite grad_norm at step 1"):
        run(make_cfg(tmp_path, steps=1), tok, task, model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k            # nothing written into the weights
