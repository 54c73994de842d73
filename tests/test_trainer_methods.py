"""Tests for the trainer's methods and rewards on the tiny model: SFT and RFT, LaTRO with the other rewards
of the family, and the "batch_mean" truncation rule (its penalty does not depend on the micro-batch; a
nonnegative reward refuses it). Shared helpers: tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import dataclasses
import math

import pytest
import torch

from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core.trainer import Trainer
from equivalence import assert_adam_weights_close
from test_methods import _one_tiny_step_from_the_shell, tiny_model_dir  # noqa: F401 (a fixture)
from trainer_helpers import make_cfg, metrics, run, weights


# ----------------------------------------------------------------------------- SFT and RFT

def test_sft_two_steps(tok, task, tmp_path):
    tr, last = run(make_cfg(tmp_path, method="sft", steps=2, micro_batch=1), tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["sft_loss"] > 0 and r["samples"] == 2.0 for r in rows)
    assert (tmp_path / "final" / "config.json").exists()


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")   # no optimizer step: nothing kept
def test_rft_two_steps_skips_update_without_correct_samples(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(make_cfg(tmp_path, method="rft", steps=2), tok, task, model)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kept"] == 0 and "sft_loss" not in r for r in rows)     # random model: nothing right
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rft_two_steps_trains_on_kept_samples(tok, task, tmp_path, monkeypatch):
    monkeypatch.setattr(type(task), "is_correct", lambda self, pred, ex: True)
    model, _ = tiny_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(make_cfg(tmp_path, method="rft", steps=2, lr=1e-3), tok, task, model)
    rows = metrics(tmp_path)
    assert all(r["kept"] == 4 and r["sft_loss"] > 0 for r in rows)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- the reward family

@pytest.mark.parametrize("reward", ["probability", "verifier", "rlpr"])
def test_latro_trains_with_another_reward_of_the_family(tok, task, tmp_path, reward):
    """--reward probability (VeriFree's π(y|x⊕z)), verifier (the checker's 0/1) and rlpr (debiased mean
    token probability) run through the same sampling, scoring and update; their rewards lie in [0, 1]."""
    run(make_cfg(tmp_path, steps=2, reward=reward, truncation="none", beta=0.0, save_every=100), tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and all(r["samples"] == 4.0 for r in rows)
    for r in rows:
        assert 0.0 <= r["reward_mean"] <= 1.0 and math.isfinite(r["policy_loss"]), r
        # the verifier and RLPR have no direct term; the probability reward's is Σ π(y|x⊕z)·log π(y|x⊕z) ≠ 0
        assert (r["answer_loss"] == 0.0) == (reward != "probability"), r["answer_loss"]


@pytest.mark.slow
def test_the_k_sample_bound_trains_one_step_from_the_shell(tiny_model_dir, tmp_path):
    """``latro train --reward k_sample_bound``: JEPO's bound log (1/K) Σ_k πθ(y|x⊕z_k) of each question (≤ 0,
    so the batch_mean rule applies), its direct term weighted by each rationale's share."""
    _, config, rows = _one_tiny_step_from_the_shell(
        tiny_model_dir, tmp_path, ["train", "--reward", "k_sample_bound", "--k", "2", "--micro-batch", "4",
                                   "--max-new-tokens", "8"])
    assert config["reward"] == "k_sample_bound" and [r["step"] for r in rows] == [1]
    # πθ = π0 at the first step: r = L̂ ≤ 0 (or γ × the mean where cut); the shares sum to 1 per question,
    # so the answer loss −mean(K·s·ℓ) is a weighted −ℓ, > 0
    assert rows[0]["reward_mean"] < 0 and rows[0]["answer_loss"] > 0 and math.isfinite(rows[0]["policy_loss"]), rows[0]


@pytest.mark.slow
def test_the_information_gain_trains_one_step_from_the_shell_with_latros_update(tiny_model_dir, tmp_path):
    """``latro train --reward information_gain``: R = log πθ(y|x⊕z) − log πθ(y|x), the baseline held fixed and
    the same for a question's K rationales, so with nothing penalised the step's losses are LaTRO's on the
    same rationales (the same seed) and only the logged reward moves, by the questions' log πθ(y|x)."""
    steps = {}
    for reward in ("latro", "information_gain"):
        (tmp_path / reward).mkdir()
        _, config, rows = _one_tiny_step_from_the_shell(
            tiny_model_dir, tmp_path / reward, ["train", "--reward", reward, "--truncation", "none", "--k", "2",
                                                "--micro-batch", "4", "--max-new-tokens", "8"])
        assert config["reward"] == reward and [r["step"] for r in rows] == [1]
        steps[reward] = rows[0]
    gain, latro = steps["information_gain"], steps["latro"]
    # fp32 losses of log-probabilities ≤ ~90: RLOO centres the shifted rewards in another order (a few ulps)
    for key in ("policy_loss", "answer_loss", "logp_y_mean", "adv_std"):
        assert gain[key] == pytest.approx(latro[key], rel=1e-5, abs=1e-5), key
    # log πθ(y|x) < 0: the gain is above the log-likelihood it starts from
    assert gain["reward_mean"] > latro["reward_mean"]


# ----------------------------------------------------------------------------- the batch_mean truncation rule

@pytest.mark.parametrize("reward", ["latro", "doubled_log_likelihood"])
def test_batch_mean_penalty_does_not_depend_on_micro_batch(tok, task, tmp_path, reward, monkeypatch):
    """The "batch_mean" truncation rule uses the mean reward of the whole step: one micro-batch
    of 4 samples and two of 2 give the same metrics and weights (the tiny model cuts most
    rationales at L = 6, so the penalty is in play). Also for a registered negative reward other
    than LaTRO's (R = 2·log πθ(y|x⊕z)): the step's mean is of the run's own reward, not LaTRO's."""
    from latro_core.objective import REWARDS, Reward, RewardOutput

    monkeypatch.setitem(REWARDS, "doubled_log_likelihood", Reward(
        "doubled_log_likelihood", lambda inp: RewardOutput(2 * inp.logp_y, 2 * inp.direct_scale), negative=True))
    runs = {}
    for mb in (4, 2):
        cfg = make_cfg(tmp_path / f"mb{mb}", micro_batch=mb, steps=2, truncation="batch_mean", lr=1e-3, save_every=100,
                       reward=reward)
        run(cfg, tok, task, tiny_model(tok)[0])
        runs[mb] = metrics(tmp_path / f"mb{mb}")
    assert all(r["frac_truncated"] > 0 for r in runs[4])
    for a, b in zip(runs[4], runs[2]):
        for key in ("reward_mean", "reward_std", "adv_std", "policy_loss", "answer_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    # other micro-batches pad to other lengths and sum the loss in another order: AdamW's bound
    assert_adam_weights_close(weights(tmp_path / "mb4" / "final"), weights(tmp_path / "mb2" / "final"), lr=1e-3, steps=2)


def test_lora_scores_pi0_at_the_temperature_the_method_asks_for(tok, task, tmp_path, monkeypatch):
    """Under LoRA π0 is the same weights with the adapter off; a method whose record says
    ``tempered_scoring=False`` scores z at T = 1 for π0 too, whatever the sampling temperature."""
    from latro_core.logprobs import sequence_logprobs
    from latro_core.methods import METHODS

    monkeypatch.setitem(METHODS, "latro", dataclasses.replace(METHODS["latro"], tempered_scoring=False))
    tr = Trainer(make_cfg(tmp_path, lora=True, temperature=0.7), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    try:
        inputs = tr.step_inputs(0)
        rollout = tr.policy.sample(0, 0, inputs.questions, task)
        batch = tr.policy.pack(rollout.prompt_ids, rollout.rationale_ids,
                               [task.answer_ids(inputs.questions[i // 2], tok) for i in range(len(rollout.prompt_ids))])
        with torch.no_grad(), tr.policy.lm.disable_adapter():
            at_one, _ = sequence_logprobs(tr.policy.lm, batch, temperature=1.0)
            at_sampling, _ = sequence_logprobs(tr.policy.lm, batch, temperature=0.7)
        assert not torch.allclose(at_one, at_sampling)
        torch.testing.assert_close(tr.policy.reference_logp_z(batch), at_one)
    finally:
        tr.release()


def test_a_nonnegative_reward_refuses_the_batch_mean_truncation_rule(tok, task, tmp_path):
    with pytest.raises(ConfigError, match="penalises only negative rewards.*--truncation none"):
        Trainer(make_cfg(tmp_path, reward="probability"), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    with pytest.raises(ConfigError, match="reward 'likelihood' is not one of latro, probability, verifier, rlpr"):
        make_cfg(tmp_path, reward="likelihood").validate()
