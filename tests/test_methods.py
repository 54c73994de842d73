"""A method is one record (latro_core.methods.METHODS): a method registered from outside the
library trains through the ``latro`` command, its run folder and its results name, with nothing
else changed; the trainer reads each record's needs instead of method names."""

import json
import sys
from pathlib import Path

import pytest

import latro_core.trainer as trainer_mod
from latro_core import cli
from latro_core.errors import ConfigError
from latro_core.methods import METHODS, get_method
from latro_core.models import prepare_tokenizer, tiny_model
from latro_core.results import method_names
from latro_core.train_config import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))


def test_a_method_registered_outside_latro_core_trains_one_step_through_the_command_line(
        tmp_path, monkeypatch, smol_tokenizer, request):
    sys.modules.pop("toy_method", None)
    request.addfinalizer(lambda: METHODS.pop("answer_only", None))     # the other tests see the three methods
    import toy_method                                                    # importing it registers it

    assert METHODS["answer_only"] is toy_method.ANSWER_ONLY
    model, config, metrics, before = _one_tiny_step(tmp_path, monkeypatch, smol_tokenizer,
                                                    ["answer-only", "--micro-batch", "2"])
    assert config["method"] == "answer_only" and [m["step"] for m in metrics] == [1]
    assert metrics[0]["answer_nll"] > 0 and (tmp_path / "run" / "final").is_dir()
    assert any(not v.equal(before[k]) for k, v in model.state_dict().items())     # the step changed the weights
    assert method_names()["answer_only"] == "Answer only"


def _one_tiny_step(tmp_path, monkeypatch, smol_tokenizer, args):
    """``latro <args>`` for one step of 2 arithmetic questions on a tiny random model (not SmolLM2), into
    tmp_path/run: (the model, config.json, the metrics rows, the weights before)."""
    tok = prepare_tokenizer(smol_tokenizer)
    model = tiny_model(tok)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(trainer_mod, "load_model", lambda *a, **k: (model, tok))
    out = tmp_path / "run"
    assert cli.main([*args, "--task", "arithmetic", "--task-kwargs", '{"n": 8}', "--steps", "1", "--questions-per-step",
                     "2", "--lr", "1e-3", "--device", "cpu", "--progress", "false", "--out-dir", str(out)]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return model, json.loads((out / "config.json").read_text()), metrics, before


def test_a_reward_registered_outside_latro_core_trains_one_step_through_the_command_line(
        tmp_path, monkeypatch, smol_tokenizer, request):
    """tests/toy_reward.py registers φ = √ (objective.REWARDS); ``latro train --reward`` takes it
    with nothing else in the library changed."""
    from latro_core.objective import REWARDS
    sys.modules.pop("toy_reward", None)
    request.addfinalizer(lambda: REWARDS.pop("sqrt_probability", None))
    import toy_reward                                                    # noqa: F401  (registers it)

    _, config, metrics, _ = _one_tiny_step(tmp_path, monkeypatch, smol_tokenizer,
                                           ["train", "--reward", "sqrt_probability", "--truncation", "none", "--k", "2",
                                            "--micro-batch", "4", "--max-new-tokens", "8"])
    assert config["reward"] == "sqrt_probability" and [m["step"] for m in metrics] == [1]
    # R = √πθ(y|x⊕z) lies in (0, 1]; its direct term ½√π·log π makes the answer loss non-zero
    assert 0 < metrics[0]["reward_mean"] <= 1 and metrics[0]["answer_loss"] != 0


def test_the_trainer_reads_each_methods_needs_from_its_record():
    assert [m.command for m in METHODS.values()][:3] == ["sft", "rft", "train"]
    with pytest.raises(ConfigError, match=r"method='dpo' is not one of \('sft', 'rft', 'latro'"):
        TrainConfig(method="dpo").validate()
    with pytest.raises(ConfigError, match="k must be >= 2 for LaTRO"):
        TrainConfig(method="latro", k=1).validate()
    TrainConfig(method="rft", k=1).validate()                       # RFT's record asks for one sample only
    TrainConfig(method="sft", k=1, temperature=0).validate()        # SFT samples nothing: T = 0 is fine
    with pytest.raises(ConfigError, match="rft samples its rationales: temperature must be > 0"):
        TrainConfig(method="rft", temperature=0).validate()
    assert get_method("latro").reference and not get_method("rft").reference


def test_a_task_registered_outside_latro_core_loads_by_name_and_alias(request):
    from latro_core.experiments.runs import task_available
    from latro_core.tasks import TASKS, Example, Task, TaskRecord, load_task, register_task, task_splits

    request.addfinalizer(lambda: TASKS.pop("echo", None))
    register_task(TaskRecord("echo", ("train", "test"), aliases=("repeat",),
                             load=lambda split, data_dir, **_: Task(split, [Example("Say 7.", "7", id="echo-0")])))
    assert task_splits("repeat") == ("train", "test") and task_available("echo")
    task = load_task("ECHO", "test")
    assert len(task) == 1 and task.is_correct(task.extract_answer("The answer is 7."), task[0])
    with pytest.raises(ConfigError, match="task 'echo' has no split 'validation'; choose one of: train, test"):
        load_task("echo", "validation")


def test_the_verifier_scores_the_models_own_answer_and_latro_the_gold_one(smol_tokenizer):
    """RLVR reinforces the whole response, so the verifier's y is what the model wrote after z (the
    template and its own answer); LaTRO's is the gold answer y."""
    from types import SimpleNamespace

    import torch

    from latro_core.methods.latro import micro_batches
    from latro_core.policy import Policy, SamplingSettings
    from latro_core.objective import REWARDS
    from latro_core.rollout import Rollout
    from latro_core.tasks import load_task

    tok = prepare_tokenizer(smol_tokenizer)
    task = load_task("arithmetic", "train", n=1)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]     # noqa: E731
    z, after = ids("3 + 4 = 7."), ids(" The answer is 9.")
    roll = Rollout(prompt_ids=[ids("x")] * 2, rationale_ids=[z, z], truncated=torch.tensor([False, False]),
                   finish=["stop", "stop"], texts=["", ""], k=2, generated_ids=[z + after, z + after])
    policy = Policy(scorer=None, lm=None, tokenizer=tok, sampling=SamplingSettings(k=2, max_new_tokens=8, temperature=1.0))
    inputs = SimpleNamespace(config=SimpleNamespace(k=2, micro_batch=2), policy=policy, task=task, questions=list(task))
    scored = {}
    for reward in ("verifier", "latro"):
        _, [batch] = micro_batches(inputs, roll, own_answer=REWARDS[reward].own_answer)
        scored[reward] = batch.input_ids[0][batch.y_mask[0].bool()].tolist()
    assert scored["verifier"] == after
    assert scored["latro"] == task.answer_ids(task[0], tok, z) != after
