"""Tests for latro_core.trainer's loop: a LaTRO run on a tiny random Llama model (2 layers, 64 wide, the
real SmolLM2 tokenizer, K=2, L=6 tokens, two questions per step: a step takes well under a second).
Covered: metrics and output files, the epoch order of the questions, same-seed determinism (see
docs/determinism.md), `take_step`, gradient checkpointing, trackers, and a passed-in model's tokenizer.
Shared helpers: tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import json

import pytest

import latro_core.policy as policy_mod
import latro_core.trainer as trainer_mod
from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core.trainer import Trainer, checkpoint_step, question_indices
from equivalence import assert_adam_weights_close
from trainer_helpers import assert_same_weights, make_cfg, metrics, no_timing, run, weights


METRIC_FIELDS = ("reward_mean", "reward_std", "logp_y_mean", "kl_mean", "adv_std", "rationale_len",
                 "frac_truncated", "policy_loss", "answer_loss", "samples_per_s")


# ----------------------------------------------------------------------------- a LaTRO run

def test_latro_run_writes_metrics_config_checkpoint_final(tok, task, tmp_path):
    cfg = make_cfg(tmp_path)
    tr, last = run(cfg, tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for f in METRIC_FIELDS:
            assert f in r and isinstance(r[f], float) and r[f] == r[f], f
        assert r["samples"] == 4.0                       # 2 questions x K=2 per step
        assert r["rationale_len"] <= 6 and 0 <= r["frac_truncated"] <= 1
        assert r["logp_y_mean"] < 0 and r["answer_loss"] > 0
    assert last["step"] == 3 and last["lr"] == 0.0      # linear decay to 0 at the last step
    assert json.loads((tmp_path / "config.json").read_text())["k"] == 2
    assert checkpoint_step(tmp_path / "checkpoint") == 3
    for f in ("model/config.json", "model/tokenizer.json", "state.pt", "trainer.json"):
        assert (tmp_path / "checkpoint" / f).exists(), f
    assert (tmp_path / "final" / "config.json").exists() and (tmp_path / "final" / "tokenizer.json").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))
    # the saved final weights are the trained ones
    assert_same_weights(weights(tmp_path / "final"),
                        {k: v for k, v in tr.policy.lm.state_dict().items() if k in weights(tmp_path / "final")})


def test_question_indices_cover_each_epoch_once():
    per_epoch = [i for s in range(4) for i in question_indices(s, 8, 2, seed=3)]
    assert sorted(per_epoch) == list(range(8))
    assert question_indices(5, 8, 2, seed=3) == question_indices(5, 8, 2, seed=3)
    assert question_indices(0, 8, 2, seed=3) != question_indices(0, 8, 2, seed=4)


def test_take_step_is_one_step_of_the_loop_recording_nothing(tmp_path, tok, task):
    # the loop notebook 04 runs on the page: the same metrics as train() writes, step by step
    _, _ = run(make_cfg(tmp_path / "loop", steps=2), tok, task)
    tr = Trainer(make_cfg(tmp_path / "page", steps=2), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    by_hand = [tr.take_step() for _ in range(2)]
    tr.release()
    assert not (tmp_path / "page" / "metrics.jsonl").exists()
    assert no_timing(by_hand) == no_timing(metrics(tmp_path / "loop"))


def test_passed_in_model_needs_its_tokenizer(tok, task, tmp_path):
    with pytest.raises(ConfigError, match="tokenizer"):
        Trainer(make_cfg(tmp_path), model=tiny_model(tok)[0], task=task)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_rationales_and_metrics(tok, task, tmp_path, monkeypatch):
    """Same seed -> the same sampled rationales and identical metrics on CPU (docs/determinism.md
    lists what is not bit-reproducible on GPU). A different seed samples differently."""
    real = policy_mod.sample_rationales
    seen = []

    def record(*a, **k):
        r = real(*a, **k)
        seen.append([list(z) for z in r.rationale_ids])
        return r

    monkeypatch.setattr(policy_mod, "sample_rationales", record)
    texts = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        seen.clear()
        run(make_cfg(tmp_path / name, seed=seed, steps=2, truncation="none", lr=1e-3), tok, task,
            tiny_model(tok)[0])
        texts[name] = list(seen)
    assert texts["a"] == texts["b"] and len(texts["a"]) == 2 and len(texts["a"][0]) == 4   # 2 steps, 2 x K
    assert no_timing(metrics(tmp_path / "a")) == no_timing(metrics(tmp_path / "b"))
    assert_same_weights(weights(tmp_path / "a" / "final"), weights(tmp_path / "b" / "final"))   # bitwise: same process
    assert texts["c"] != texts["a"]


def test_gradient_checkpointing_same_training(tok, task, tmp_path):
    """Activation checkpointing only trades memory for time: same metrics and weights."""
    for name, gc in (("plain", False), ("ckpt", True)):
        tr, _ = run(make_cfg(tmp_path / name, steps=2, lr=1e-3, gradient_checkpointing=gc, save_every=100), tok,
                    task, tiny_model(tok)[0])
        lm = tr.policy.lm     # transformers >= 5: is_activation_checkpointing (is_gradient_checkpointing is deprecated)
        assert (lm.is_activation_checkpointing if hasattr(lm, "is_activation_checkpointing") else lm.is_gradient_checkpointing) is gc
    for a, b in zip(metrics(tmp_path / "plain"), metrics(tmp_path / "ckpt")):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # the plain run shares each question's prompt among its K samples, the checkpointed one cannot (HF
    # drops the KV cache under checkpointing): the same sums in another order, so AdamW's bound
    # (tests/equivalence.py); a wrong gradient would move most weights by ~lr and fail it.
    assert_adam_weights_close(weights(tmp_path / "plain" / "final"), weights(tmp_path / "ckpt" / "final"), lr=1e-3, steps=2)


# ----------------------------------------------------------------------------- trackers

def test_tracker_tensorboard_writes_an_event_file_holding_the_metrics(tok, task, tmp_path):
    import struct

    from tensorboardX.proto import event_pb2

    run(make_cfg(tmp_path, steps=2, tracker="tensorboard"), tok, task)
    files = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file under out_dir/tensorboard"
    data, seen = files[0].read_bytes(), {}
    while data:                                   # TFRecord: length, crc, Event proto, crc
        (n,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12:12 + n])
        data = data[12 + n + 4:]
        for v in event.summary.value:
            seen.setdefault(v.tag, []).append((event.step, v.simple_value))
    logged = metrics(tmp_path)
    assert [s for s, _ in seen["reward_mean"]] == [1, 2]
    assert [round(v, 4) for _, v in seen["reward_mean"]] == [round(m["reward_mean"], 4) for m in logged]


def test_an_unknown_tracker_is_a_config_error_naming_the_known_ones(tok, task, tmp_path):
    with pytest.raises(ConfigError, match=r"tracker='tensorbord' is not one of accelerate's trackers: .*tensorboard"):
        run(make_cfg(tmp_path, tracker="tensorbord"), tok, task)
