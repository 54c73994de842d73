"""A method is one record (latro_core.methods.METHODS): a method registered from outside the
library trains through the ``latro`` command, its run folder and its results name, with nothing
else changed; the trainer reads each record's needs instead of method names."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latro_core.cli import load_plugins
from latro_core.errors import ConfigError
from latro_core.methods import METHODS, get_method
from latro_core.models import prepare_tokenizer, tiny_model
from latro_core.results import method_names
from latro_core.train_config import TrainConfig

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))


@pytest.mark.slow
def test_a_method_registered_outside_latro_core_trains_one_step_from_the_shell(tiny_model_dir, tmp_path, request):
    """``latro --plugin tests/toy_method.py answer-only ...`` in a shell: the plugin registers the
    method, the command line gets its sub-command, the run folder and results name it."""
    request.addfinalizer(lambda: METHODS.pop("answer_only", None))     # the other tests see the three methods
    load_plugins([str(TESTS / "toy_method.py")])                        # in this process too: the tables' name
    assert METHODS["answer_only"].label == method_names()["answer_only"] == "Answer only"
    out, config, metrics = _one_tiny_step_from_the_shell(
        tiny_model_dir, tmp_path, ["--plugin", str(TESTS / "toy_method.py"), "answer-only", "--micro-batch", "2"])
    assert config["method"] == "answer_only" and [m["step"] for m in metrics] == [1]
    assert metrics[0]["answer_nll"] > 0 and (out / "final").is_dir()
    assert _weights(out / "final") != _weights(tiny_model_dir)          # the step changed the weights


@pytest.mark.slow
def test_a_reward_registered_outside_latro_core_trains_one_step_from_the_shell(tiny_model_dir, tmp_path):
    """tests/toy_reward.py registers φ = √ (objective.REWARDS); ``latro --plugin ... train --reward``
    takes it with nothing else in the library changed (as LATRO_PLUGINS too)."""
    _, config, metrics = _one_tiny_step_from_the_shell(
        tiny_model_dir, tmp_path, ["train", "--reward", "sqrt_probability", "--truncation", "none", "--k", "2",
                                   "--micro-batch", "4", "--max-new-tokens", "8"],
        LATRO_PLUGINS=str(TESTS / "toy_reward.py"))
    assert config["reward"] == "sqrt_probability" and [m["step"] for m in metrics] == [1]
    # R = √πθ(y|x⊕z) lies in (0, 1]; its direct term ½√π·log π makes the answer loss non-zero
    assert 0 < metrics[0]["reward_mean"] <= 1 and metrics[0]["answer_loss"] != 0


@pytest.mark.slow
def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    for plugin, says in ((str(tmp_path / "missing.py"), "no such file"), (str(bad), "RuntimeError: boom"),
                         ("no_such_module_anywhere", "ModuleNotFoundError")):
        proc = subprocess.run([sys.executable, "-m", "latro_core.cli", "--plugin", plugin, "train", "--help"],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"latro: error: --plugin {plugin}") and says in proc.stderr


@pytest.fixture(scope="module")
def tiny_model_dir(smol_tokenizer, tmp_path_factory):
    """A tiny random model with the real tokenizer, saved as a folder ``--model`` can name."""
    tok = prepare_tokenizer(smol_tokenizer)
    folder = tmp_path_factory.mktemp("tiny_model")
    model = tiny_model(tok)[0]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.sum().item() for k, v in load_file(str(next(Path(folder).glob("*.safetensors")))).items()}


def _one_tiny_step_from_the_shell(model_dir, tmp_path, args, **env):
    """``python -m latro_core.cli <args>`` in a child process for one step of 2 arithmetic questions
    on the tiny model, into tmp_path/run: (the run folder, config.json, the metrics rows)."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "latro_core.cli", *args, "--model", str(model_dir), "--task", "arithmetic",
         "--task-kwargs", '{"n": 8}', "--steps", "1", "--questions-per-step", "2", "--lr", "1e-3", "--device", "cpu",
         "--progress", "false", "--out-dir", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, json.loads((out / "config.json").read_text()), metrics


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
