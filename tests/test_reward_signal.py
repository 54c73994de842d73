"""latro_core.experiments.reward_signal: the statistics of the signal study on hand-made records, and the
budget read-off (a shorter L from the same samples) against sampling at that L."""

import pytest
import torch

from latro_core.experiments.reward_signal import SignalConfig, sample_and_score, signal_stats
from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core.rollout import sample_rationales
from latro_core.tasks import load_task


def _rec(q, right, finished, reward):
    return {"q": q, "right": right, "finished": finished, "reward": reward, "length": 5}


def test_signal_stats_fractions_and_within_question_auroc():
    recs = [_rec(0, True, True, -1.0), _rec(0, False, True, -5.0), _rec(0, False, False, -0.5),   # q0: 1 of 2 pairs
            _rec(1, True, False, -9.0), _rec(1, True, True, -2.0), _rec(1, False, True, -3.0),    # q1: 1.5 of 2... see below
            _rec(2, False, False, -4.0), _rec(2, False, True, -4.0), _rec(2, False, False, -4.0)]  # q2: no right one
    s = signal_stats(recs, n_boot=200)
    assert s["n_samples"] == 9 and s["n_questions"] == 3
    # approx's default rel 1e-6 here: ratios of counts (and of pair counts for AUROC) in float64, exact but for
    # one rounding; a count off by one changes a fraction by >= 1/9
    assert s["frac_right"] == pytest.approx(3 / 9) and s["frac_finished"] == pytest.approx(5 / 9)
    assert s["frac_right_and_finished"] == pytest.approx(2 / 9)
    assert s["frac_questions_with_right_finished"] == pytest.approx(2 / 3)
    # q0: right -1 beats -5, loses to -0.5 -> 1/2; q1: wrong -3: right -9 loses, right -2 wins -> 1/2
    assert s["auroc_all"]["mean"] == pytest.approx(0.5) and s["auroc_all"]["n_questions"] == 2
    # among finished only: q0 (-1 vs -5) -> 1, q1 (-2 vs -3) -> 1
    assert s["auroc_finished"]["mean"] == pytest.approx(1.0) and s["auroc_finished"]["n_questions"] == 2
    lo, hi = s["auroc_all"]["ci95"]
    assert lo <= 0.5 <= hi
    # the share of right-and-finished samples is resampled by question: q0 and q1 have 1/3 each, q2 none,
    # so no draw of three questions gets beyond 1/3 or below 0
    lo, hi = s["frac_right_and_finished_ci95"]
    assert 0 <= lo <= 2 / 9 <= hi <= 1 / 3 + 1e-12


def test_a_shorter_budget_read_off_the_samples_equals_sampling_at_it(smol_tokenizer):
    model, tok = tiny_model(smol_tokenizer, seed=0)
    task = load_task("arithmetic", "train", n=3)
    exs = list(task)
    recs = sample_and_score(model, tok, task, exs, k=2, temperature=1.0, budgets=[3, 12], seed=0)
    # the same seeds, sampled at L = 3 (+ the answer room) directly
    from latro_core.experiments.reward_signal import ANSWER_ROOM
    for s in range(0, len(exs)):
        g = torch.Generator().manual_seed(s)
        roll = sample_rationales(model, tok, [task.prompt(exs[s], tok)], k=2, max_new_tokens=12 + ANSWER_ROOM,
                                 keep_going_after_stop=True, generator=[g])
        short = [r for r in recs if r["q"] == s and r["L"] == 3]
        direct = sample_rationales(model, tok, [task.prompt(exs[s], tok)], k=2, max_new_tokens=3,
                                   generator=[torch.Generator().manual_seed(s)])     # a budget-3 training draw
        assert [not r["finished"] for r in short] == direct.truncated.tolist()
        assert [r["length"] for r in short] == [len(z) for z in direct.rationale_ids]
        for j, r in enumerate(short):
            gen = roll.generated_ids[j]
            assert r["length"] == (len(roll.rationale_ids[j]) if r["finished"] else min(3, len(gen)))
            assert r["finished"] == (roll.end_steps[j] is not None and roll.end_steps[j] <= 3)
    assert {r["L"] for r in recs} == {3, 12} and len(recs) == len(exs) * 2 * 2


def test_signal_config_grid_is_checked():
    assert SignalConfig(temperatures="1.0, 0.5", budgets="64,32").grid() == ([1.0, 0.5], [32, 64])
    for bad in (dict(temperatures="hot"), dict(temperatures="0"), dict(budgets="0"), dict(k=1)):
        with pytest.raises(ConfigError):
            SignalConfig(**bad).grid()


def test_difficulty_labels_that_differ_only_in_their_signs_get_different_sample_files():
    from latro_core.experiments.reward_signal import difficulty_slug

    labels = ["1 step +, 2-12", "1 step +-, 2-12", "1 step -, 2-12", "2 steps +-, 2-12"]
    assert len({difficulty_slug(x) for x in labels}) == len(labels)
    assert difficulty_slug("1 step +, 2-12") == "1_step_plus_2_12"
