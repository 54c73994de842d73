"""Failure modes a user can cause: each gives ONE clear message (a LatroError subclass), and the
``latro`` command prints ``latro: error: ...`` and exits with status 2, without a traceback.

Most cases go through ``latro_core.cli.main([...])`` in this process; none of them loads a real
model (they fail before, or use the tiny random model). One case runs ``python -m latro_core.cli``
in a subprocess, with the hub switched off, to check the real exit status and stderr.
"""

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import latro_core.trainer as trainer_mod
from latro_core import cli, tasks
from latro_core.errors import ConfigError, DataError, LatroError, ModelError
from latro_core.logprobs import pack, sequence_logprobs
from latro_core.models import load_model, load_tokenizer, prepare_tokenizer, tiny_model
from latro_core.rollout import sample_rationales
from latro_core.trainer import TrainConfig, Trainer, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "--progress", "false", "--steps", "1", "--k", "2", "--questions-per-step", "2",
         "--max-new-tokens", "4", "--micro-batch", "4"]


def cli_error(capsys, argv, out_dir) -> str:
    """Run ``latro <argv>``; assert exit 2 with exactly one ``latro: error:`` line; return it."""
    code = cli.main([*argv, "--out-dir", str(out_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("latro: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- data

def test_missing_data_and_no_hub(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LATRO_DATA_DIR", "/nonexistent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    msg = cli_error(capsys, ["train", "--task", "gsm8k", *SMALL], tmp_path)
    assert "openai/gsm8k" in msg and "/nonexistent/gsm8k/train.jsonl" in msg and "LATRO_DATA_DIR" in msg
    with pytest.raises(DataError):
        tasks.load_task("gsm8k", "train")


def test_malformed_jsonl_names_file_and_line(capsys, tmp_path):
    d = tmp_path / "data" / "gsm8k"
    d.mkdir(parents=True)
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    (d / "train.jsonl").write_text(good + "\n" + "{not json\n" + good + "\n")
    msg = cli_error(capsys, ["train", "--task", "gsm8k", "--data-dir", str(tmp_path / "data"), *SMALL], tmp_path)
    assert f"{d / 'train.jsonl'}, line 2" in msg and "not valid JSON" in msg
    # a row that parses but lacks a field: also file and line
    (d / "train.jsonl").write_text(good + "\n" + json.dumps({"question": "q"}) + "\n")
    msg = cli_error(capsys, ["train", "--task", "gsm8k", "--data-dir", str(tmp_path / "data"), *SMALL], tmp_path)
    assert f"{d / 'train.jsonl'}, line 2" in msg and "'answer'" in msg


@pytest.mark.parametrize("flags,expected", [
    (["--task", "no_such_task"], "unknown task 'no_such_task'"),
    (["--task", "arithmetic", "--split", "dev"], "has no split 'dev'"),
])
def test_unknown_task_or_split(capsys, tmp_path, flags, expected):
    msg = cli_error(capsys, ["train", *flags, *SMALL], tmp_path)
    assert expected in msg and "choose one of" in msg


# ----------------------------------------------------------------------------- models

@pytest.mark.slow
def test_unknown_model_offline_subprocess(tmp_path):
    """The real command (``python -m latro_core.cli``), hub off: one line, exit 2, no traceback,
    and the message points at the embedded default."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "latro_core.cli", "train", "--model", "no-such-org/no-such-model",
                        "--task", "arithmetic", "--task-kwargs", '{"n": 4}', *SMALL, "--out-dir", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("latro: error: ")]
    assert len(lines) == 1, p.stderr
    assert "no-such-org/no-such-model" in lines[0] and "embedded" in lines[0] and "--model" in lines[0]


def test_fake_gguf_is_a_model_error(capsys, tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_model(str(fake))
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_tokenizer(str(fake))
    msg = cli_error(capsys, ["train", "--model", str(fake), "--task", "arithmetic", "--task-kwargs", '{"n": 4}',
                             *SMALL], tmp_path)
    assert str(fake) in msg and "not a GGUF file" in msg
    msg = cli_error(capsys, ["train", "--model", str(tmp_path / "missing.gguf"), "--task", "arithmetic",
                             "--task-kwargs", '{"n": 4}', *SMALL], tmp_path)
    assert "does not exist" in msg


def test_tokenizer_without_chat_template_warns_once_and_trains(smol_tokenizer, tmp_path, monkeypatch):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    monkeypatch.setattr(tasks.base, "_warned_no_template", False)
    task = tasks.load_task("arithmetic", "train", n=4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        prompts = [task.prompt(e, tok) for e in task]
        Trainer(TrainConfig(out_dir=str(tmp_path), steps=1, k=2, questions_per_step=2, max_new_tokens=4,
                            micro_batch=4, device="cpu", progress=False),
                model=tiny_model(tok)[0], tokenizer=tok, task=task).train()
    said = [x for x in w if "no chat template" in str(x.message)]
    assert len(said) == 1                                    # said once, not per prompt / step
    assert prompts[0] == f"{task[0].question} {tasks.COT_SUFFIX}\n"   # plain text, no <|im_start|>
    assert "<|im_start|>" not in prompts[0]


def test_tokenizer_without_pad_token(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.pad_token = None
    assert tok.pad_token is None
    prepare_tokenizer(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    model, _ = tiny_model(tok)
    eos = tok.eos_token_id
    # pad == EOS must not hide the EOS that ends y: scores equal alone and in a padded batch
    xs, zs, ys = [[5, 6, 7], [8, 9]], [[10, 11], [12]], [[13, eos], [14, 15, 16, eos]]
    with torch.no_grad():
        lz, ly = sequence_logprobs(model, pack(xs, zs, ys, tok.pad_token_id))
        # fp32 sums of <= 4 tokens (|sum| <= 43, ulp 3.8e-6), alone vs padded next to the other row: allowed
        # >= 2e-4 (measured: equal); an EOS taken for padding would drop a whole token's log-prob, ~10.8
        for i in range(2):
            lz1, ly1 = sequence_logprobs(model, pack(xs[i:i + 1], zs[i:i + 1], ys[i:i + 1], tok.pad_token_id))
            torch.testing.assert_close(lz[i:i + 1], lz1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ly[i:i + 1], ly1, atol=1e-5, rtol=1e-5)
        # the final EOS is scored: dropping it changes log p(y) (by ~10.8, far outside allclose's 1e-8 + 1e-5·|x|)
        _, ly_no_eos = sequence_logprobs(model, pack(xs[:1], zs[:1], [[13]], tok.pad_token_id))
        assert not torch.allclose(ly[:1], ly_no_eos)
    roll = sample_rationales(model, tok, ["Hi there", "A much longer prompt than the first one"], k=2,
                             max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    assert len(roll.rationale_ids) == 4


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("flags,expected", [
    (["--k", "4", "--micro-batch", "6"], ["micro_batch=6", "k=4", "micro_batch=4"]),
    (["--k", "0"], ["k must be >= 2", "k=0"]),
    (["--max-new-tokens", "0"], ["max_new_tokens must be >= 1", "got 0"]),
    (["--steps", "0"], ["steps must be >= 1"]),
    (["--truncation", "sometimes"], ["truncation='sometimes'"]),
    (["--temperature", "nan"], ["temperature=nan is out of range", "[0.0, 10.0]"]),
    (["--lr", "inf"], ["lr=inf is out of range"]),
    (["--beta", "-1"], ["beta=-1.0 is out of range"]),
    (["--top-p", "1.5"], ["top_p=1.5 is out of range"]),
] + ([] if __import__("torch").cuda.is_available() else [
    (["--device", "cuda"], ["no CUDA GPU is visible"])]))
def test_bad_settings_are_config_errors(capsys, tmp_path, flags, expected):
    msg = cli_error(capsys, ["train", "--task", "arithmetic", *SMALL, *flags], tmp_path)
    for e in expected:
        assert e in msg


def test_config_errors_direct():
    with pytest.raises(ConfigError, match=r"questions_per_step=4 does not divide among 3 processes"):
        TrainConfig(questions_per_step=4).validate(world_size=3)
    with pytest.raises(ConfigError, match="k must be >= 2"):
        TrainConfig(k=1).validate()
    TrainConfig(method="rft", k=1).validate()                  # rejection sampling can use K=1
    TrainConfig(method="sft", k=0).validate()                  # SFT samples nothing
    with pytest.raises(ConfigError, match="need k >= 1 and max_new_tokens"):
        sample_rationales(None, None, ["x"], k=0)
    with pytest.raises(ConfigError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"lr": 1e-4, "learning_rate": 1})
    assert issubclass(ConfigError, LatroError) and issubclass(ModelError, LatroError)


# ----------------------------------------------------------------------------- CLI parsing

def test_cli_flags_map_into_train_config(monkeypatch):
    seen = []
    monkeypatch.setattr(trainer_mod, "train", lambda cfg: seen.append(cfg) or {"step": cfg.steps})
    assert cli.main(["train", "--lr", "1e-4", "--lora", "--steps", "3"]) == 0
    cfg = seen[-1]
    assert isinstance(cfg, TrainConfig)
    assert (cfg.method, cfg.lr, cfg.lora, cfg.steps) == ("latro", 1e-4, True, 3)
    assert cfg.k == TrainConfig().k                             # untouched flags keep the defaults
    assert cli.main(["sft", "--lora", "false", "--task-kwargs", '{"n": 8}', "--top-k", "5"]) == 0
    cfg = seen[-1]
    assert (cfg.method, cfg.lora, cfg.task_kwargs, cfg.top_k) == ("sft", False, {"n": 8}, 5)
    assert cli.main(["rft", "--resume"]) == 0 and seen[-1].method == "rft" and seen[-1].resume is True


def test_cli_interrupted_run_exits_130(monkeypatch, capsys):
    def interrupted(cfg):
        raise TrainingInterrupted("stopped by signal 2 after step 1; checkpoint saved in x; continue with --resume")

    monkeypatch.setattr(trainer_mod, "train", interrupted)
    assert cli.main(["train"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("latro: stopped by signal 2") and "Traceback" not in err


def test_cli_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--steps", "three"])
    assert e.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_cli_help_documents_each_flag_from_the_dataclass(capsys):
    """``--help`` shows each field's comment from the config dataclass, with its default."""
    from latro_core.cli import build_parser
    from latro_core.provenance import field_comments
    from latro_core.train_config import TrainConfig

    notes = field_comments(TrainConfig)
    assert notes["k"].startswith("rationales per question") and "release" in notes["lam"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "rationales per question (paper: 16) (default 4)" in out
