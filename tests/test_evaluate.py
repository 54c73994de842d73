"""Tests for latro_core.evaluate: statistics, answer scoring, run_evaluation end to end (tiny models)."""

import argparse
import json
import math
import shlex

import numpy as np
import pytest
import torch

from latro_core import answers
from latro_core.errors import ConfigError
from latro_core.provenance import command_line
from latro_core.answers import (answer_logprobs, answer_nll, generate_answers, greedy_report, k_values, maj_at_k,
                                majority_vote)
from latro_core.evaluate import EvalConfig, resolve_model, run_evaluation
from latro_core.stats import auroc, bootstrap_interval, wilson_interval
from latro_core.rollout import Rollout
from latro_core.tasks import ARCChallenge, Example, Task, load_task


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    from latro_core.models import tiny_model
    return tiny_model(smol_tokenizer, hidden_size=32, layers=1, heads=2)


@pytest.fixture(scope="module")
def arith():
    return load_task("arithmetic", "test").subset(3, seed=0)


# ----------------------------------------------------------------------------- Wilson, bootstrap

@pytest.mark.parametrize("s,n,lo,hi", [
    # by hand from center = (p + z²/2n)/(1 + z²/n), half = z/(1 + z²/n)·sqrt(p(1−p)/n + z²/4n²), z = 1.96:
    (0, 10, 0.0, 0.27754),        # center = half = 0.19208/1.38416 = 0.13877
    (5, 10, 0.23659, 0.76341),    # center 0.5, half = 1.41602·sqrt(0.025 + 0.009604) = 0.26341
    (10, 10, 0.72246, 1.0),
    (0, 0, 0.0, 1.0),             # no data: uninformative
])
def test_wilson_known_values(s, n, lo, hi):
    got = wilson_interval(s, n)
    # float64 formula against 5-decimal hand values: rounding them is <= 5e-6 (measured <= 4.1e-7); the Wald
    # interval (no z²/n terms) is ~0.05 off at 5/10
    assert got == pytest.approx((lo, hi), abs=1e-5)


def test_wilson_properties():
    lo, hi = wilson_interval(30, 100)
    assert lo < 0.3 < hi
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < hi - lo   # narrows with n
    assert wilson_interval(7, 20, z=2.576)[0] < wilson_interval(7, 20)[0]           # 99% is wider
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_interval():
    rng = np.random.default_rng(1)
    v = rng.normal(5.0, 1.0, size=400)
    lo, hi = bootstrap_interval(v, n_boot=500, seed=0)
    # 0.196 for σ = 1, n = 400; seeded: this sample's std is 0.91 and 500 resamples add a few % of noise, measured
    # ratio 0.87, inside 25%; a width off by √n or by 2 is far outside
    assert lo < v.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.25)  # ≈ ±1.96 σ/√n
    assert bootstrap_interval(v, n_boot=500, seed=0) == (lo, hi)                      # seeded
    assert all(math.isnan(x) for x in bootstrap_interval([]))


# ----------------------------------------------------------------------------- majority vote, maj@k

def test_majority_vote():
    assert majority_vote(["3", "5", "3"]) == "3"
    assert majority_vote(["5", "3", "3", "5"]) == "5"          # tie: first to appear wins
    assert majority_vote(["3", "5", "5", "3"]) == "3"
    assert majority_vote([None, None, "2", "7"]) == "2"        # None ignored; tie → first
    assert majority_vote([None, "b", None, "a", "a"]) == "a"   # None never counts, even when frequent
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_k_values():
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(1) == [1] and k_values(0) == []


def test_maj_at_k_made_up():
    exs = [Example(question=f"q{i}", answer=a) for i, a in enumerate(["1", "2", "3", "4"])]
    task = Task("test", exs)
    preds = [["1", "9", "9", "9"],      # maj@1 right, maj@2 tie → "1" right, maj@4 "9" wrong
             ["9", "2", "2", "9"],      # maj@1 wrong, maj@2 tie → "9" wrong, maj@4 tie → "9" wrong
             [None, "3", None, None],   # None ignored: right at k >= 2
             ["4.0", "4", "5", "5"]]    # numeric check: "4.0" == 4; maj@4 tie "4.0"/"4"/"5"x2 → "5"
    assert maj_at_k(preds, exs, task, [1, 2, 4]) == {1: 0.5, 2: 0.75, 4: 0.25}
    with pytest.raises(ConfigError):
        maj_at_k(preds, exs, task, [8])


# ----------------------------------------------------------------------------- AUROC

def test_auroc_hand_made():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0          # perfect
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0          # reversed
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5          # all tied: each pair counts 1/2
    # worked: positives 0.35 (beats 0.1, loses to 0.4), 0.8 (beats both) → 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # with a tie: positive 2 vs negatives {1, 2} → 1 + 1/2; positive 3 → 2; total 3.5/4
    assert auroc([1, 2, 2, 3], [0, 1, 0, 1]) == 0.875
    assert math.isnan(auroc([1, 2], [1, 1])) and math.isnan(auroc([1, 2], [0, 0]))


def test_auroc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, size=60).astype(float)    # many ties
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auroc(s, y) == pytest.approx(brute)   # both a count over 60 samples in float64: exact but for rounding


# ----------------------------------------------------------------------------- scoring

def test_answer_logprobs_match_full_softmax(tiny):
    model, tok = tiny
    xs, zs, ys = [[5, 6, 7], [8, 9]], [[10, 11], []], [[12, 13, 2], [14]]
    got = answer_logprobs(model, tok, xs, zs, ys, batch_size=1)
    assert got.shape == (2,) and got.dtype == torch.float32
    for i in range(2):
        seq = torch.tensor([xs[i] + zs[i] + ys[i]])
        with torch.no_grad():
            lp = model(input_ids=seq).logits.float().log_softmax(-1)[0]
        start = len(xs[i]) + len(zs[i])
        want = sum(lp[t - 1, seq[0, t]].item() for t in range(start, seq.shape[1]))
        # fp32 packed sums of <= 3 tokens (|sum| <= 33, ulp 3.8e-6) vs a float64 sum of fp32 log_softmax values:
        # measured 9.5e-7, ~100x inside; a token scored off by one position changes the sum by O(1)
        assert got[i].item() == pytest.approx(want, abs=1e-4)
    # one padded micro-batch of both rows vs one row a call (another padding): measured equal; bound 1e-4 + 1e-5·|sum|
    assert torch.allclose(answer_logprobs(model, tok, xs, zs, ys, batch_size=16), got, atol=1e-4)


def _fake_sampler(task):
    """A stand-in for rollout.sample_rationales: question q's sample j says the gold answer when
    (q + j) is even, else 99999, so every quantity of the run is known in advance."""
    by_prompt = {}

    def fake(model, tok, prompts, *, k=1, generator=None, **kw):
        texts, finish = [], []
        for p in prompts:
            q, ex = by_prompt[p]
            for j in range(k):
                right = (q + j) % 2 == 0
                texts.append(f"Count them. The answer is {ex.answer if right else 99999}.")
                finish.append("eos")
        z = [tok("Count them.", add_special_tokens=False)["input_ids"]] * len(texts)
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(k)]
        return Rollout(prompt_ids=enc, rationale_ids=z, truncated=torch.zeros(len(texts), dtype=torch.bool),
                       finish=finish, texts=["Count them."] * len(texts), k=k, full_texts=texts)

    return fake, by_prompt


def test_answer_scoring_through_run(tiny, arith, tmp_path, monkeypatch):
    model, tok = tiny
    fake, by_prompt = _fake_sampler(arith)
    by_prompt.update({arith.prompt(ex, tok): (q, ex) for q, ex in enumerate(arith)})
    monkeypatch.setattr(answers, "sample_rationales", fake)
    s = run_evaluation(EvalConfig(task="arithmetic", limit=3, k=2, max_new_tokens=8, device="cpu",
                                  progress=False, out=str(tmp_path / "ev")), model, tok)
    # greedy = sample 0: right for q = 0, 2; maj@2: ties → the first sample's answer, the same
    # (approx's default rel 1e-6: ratios of counts and the same Wilson formula in float64, through JSON: exact)
    assert s["greedy"]["correct"] == 2 and s["greedy"]["accuracy"] == pytest.approx(2 / 3)
    assert s["maj_at_k"]["1"]["correct"] == 2 and s["maj_at_k"]["2"]["correct"] == 2
    assert s["sample_accuracy"]["correct"] == 3 and s["sample_accuracy"]["n"] == 6
    assert s["greedy"]["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert 0.0 <= s["self_eval"]["auroc"] <= 1.0 and s["self_eval"]["n_correct"] == 3
    recs = [json.loads(ln) for ln in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [ex.id for ex in arith]
    for q, r in enumerate(recs):
        assert r["greedy"]["correct"] == (q % 2 == 0) and r["gold"] == arith[q].answer
        assert [x["correct"] for x in r["samples"]] == [(q + j) % 2 == 0 for j in range(2)]
        assert [x["pred"] for x in r["samples"]][(q + 1) % 2] == "99999"
        assert r["maj_pred"] == r["samples"][0]["pred"]


# ----------------------------------------------------------------------------- end to end

def test_run_evaluation_end_to_end(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "eval"
    s = run_evaluation(EvalConfig(task="arithmetic", limit=3, k=2, max_new_tokens=8, device="cpu",
                                  progress=False, out=str(out), nll=True), model, tok)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == {k: v for k, v in s.items() if k != "out"}
    for key in ("model", "task", "split", "n", "greedy", "maj_at_k", "self_eval", "answer_nll", "argv",
                "command", "git_commit", "config", "method", "model_label", "train_seed", "kind"):
        assert key in saved, key
    assert saved["n"] == 3 and saved["task"] == "arithmetic" and saved["split"] == "test"
    assert saved["method"] == "base" and saved["model_label"] == "SmolLM2-135M-Instruct"
    assert set(saved["maj_at_k"]) == {"1", "2"}
    for entry in [saved["greedy"], *saved["maj_at_k"].values()]:
        assert entry["n"] == 3 and 0 <= entry["accuracy"] <= 1 and len(entry["ci95"]) == 2
    assert saved["command"].startswith("latro evaluate ") and "--k 2" in saved["command"]
    assert saved["config"]["limit"] == 3
    assert set(saved["answer_nll"]) == {"no_rationale", "gold_rationale", "own_correct", "own_wrong"}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 3
    r = json.loads(lines[0])
    assert {"id", "prompt", "gold", "greedy", "samples", "maj_pred"} <= set(r)
    assert len(r["samples"]) == 2
    assert all(isinstance(x["self_reward"], float) and x["self_reward"] < 0 for x in r["samples"])
    assert {"rationale", "text", "pred", "correct", "finish"} <= set(r["samples"][0])
    # same seed → same samples
    s2 = run_evaluation(EvalConfig(task="arithmetic", limit=3, k=2, max_new_tokens=8, device="cpu", greedy=False,
                                   auroc=False, progress=False, out=str(tmp_path / "again")), model, tok)
    r2 = json.loads((tmp_path / "again" / "predictions.jsonl").read_text().splitlines()[0])
    assert [x["text"] for x in r2["samples"]] == [x["text"] for x in r["samples"]]
    assert "greedy" not in s2 and "self_eval" not in s2


def test_run_evaluation_from_run_folder(tiny, tmp_path):
    """A trained run's folder: base model, method and seed come from the run's config.json."""
    model, tok = tiny
    final = tmp_path / "runs" / "demo" / "final"
    model.save_pretrained(final)
    tok.save_pretrained(final)
    (tmp_path / "runs" / "demo" / "config.json").write_text(json.dumps({"method": "latro", "model": None, "seed": 3}))
    s = run_evaluation(EvalConfig(model=str(final), task="arithmetic", limit=2, k=0, max_new_tokens=4,
                                  device="cpu", progress=False, out=str(tmp_path / "ev")))
    assert (s["method"], s["train_seed"], s["model_label"]) == ("latro", 3, "SmolLM2-135M-Instruct")
    assert s["name"] == "demo-arithmetic-test" and "maj_at_k" not in s and s["greedy"]["n"] == 2


def test_resolve_model_adapter_folder(tmp_path):
    run = tmp_path / "lora"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_config.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"method": "latro", "model": "org/Base-1B", "seed": 1}))
    base, adapter, cfg = resolve_model(str(run / "final"))
    assert (base, adapter, cfg["method"]) == ("org/Base-1B", str(run / "final"), "latro")
    assert resolve_model("org/x", None) == ("org/x", None, None)


def test_eval_config_validation_and_cli_flags():
    from latro_core.provenance import add_dataclass_args, config_from_args

    with pytest.raises(ConfigError):
        run_evaluation(EvalConfig(greedy=False, k=0))
    p = argparse.ArgumentParser()
    add_dataclass_args(p, EvalConfig)
    cfg = EvalConfig(task="gsm8k", limit=5, k=4, direct=True, task_kwargs={"n": 3}, method="sft", train_seed=2)
    argv = shlex.split(command_line("evaluate", cfg))
    assert argv[:2] == ["latro", "evaluate"]
    assert config_from_args(EvalConfig, p.parse_args(argv[2:])) == cfg


# ----------------------------------------------------------------------------- Figure 2 NLL, trainer hook

def test_answer_nll_shapes(tiny, arith):
    model, tok = tiny
    exs = list(arith)
    rats = [[("Count.", True), (tok("Hmm", add_special_tokens=False)["input_ids"], False)],
            [("Two.", False)], []]
    r = answer_nll(model, tok, arith, exs, rationales=rats, batch_size=2)
    assert set(r) == {"no_rationale", "gold_rationale", "own_correct", "own_wrong"}
    assert [r[c]["n"] for c in ("no_rationale", "gold_rationale", "own_correct", "own_wrong")] == [3, 3, 1, 2]
    assert all(r[c]["mean"] > 0 for c in r)                  # NLL of a multi-token answer is positive
    assert math.isnan(r["own_correct"]["se"]) and r["no_rationale"]["se"] >= 0
    # ARC has no gold rationale: that condition is left out
    arc = ARCChallenge("test", [Example(question="Color of sky?", answer="blue", choices=(("A", "red"), ("B", "blue")),
                                        label="B", id="arc-1")])
    assert set(answer_nll(model, tok, arc, list(arc))) == {"no_rationale"}


def test_generate_answers_gives_k_answers_per_question_and_the_greedy_report_scores_them(tiny, arith):
    model, tok = tiny
    rolls, preds = generate_answers(model, tok, arith, list(arith), k=2, max_new_tokens=3, batch_questions=2,
                                    temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len(rolls) == 2 and [len(p) for p in preds] == [2, 2, 2]
    _, greedy = generate_answers(model, tok, arith, list(arith), max_new_tokens=3, batch_questions=2)
    report = greedy_report(model, tok, arith, max_new_tokens=3, batch_questions=3)
    assert report["n"] == 3
    assert report["accuracy"] == sum(arith.is_correct(p[0], e) for p, e in zip(greedy, arith)) / 3
