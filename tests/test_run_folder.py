"""A run folder nobody can break: one owner at a time, a finished run never deleted by --resume, a
failed write reported in one line with the last good checkpoint intact; and answers read right.

The fault-injection tests assert what is on disk afterwards, byte for byte where it must not change.
"""

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import latro_core.checkpoint as checkpoint_mod
from latro_core.checkpoint import LOCK_FILE, hold_folder
from latro_core.errors import ConfigError, WriteError
from latro_core.models import prepare_tokenizer, tiny_model
from latro_core.tasks import load_task
from latro_core.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return prepare_tokenizer(smol_tokenizer)


@pytest.fixture(scope="module")
def task():
    return load_task("arithmetic", "train", n=16)


def cfg(out, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), steps=2, k=2, questions_per_step=2, max_new_tokens=6, micro_batch=4,
                save_every=1, device="cpu", progress=False, seed=0, truncation="none", lr=1e-3)
    return TrainConfig(**{**base, **kw})


def train(c, tok, task):
    return Trainer(c, model=tiny_model(tok)[0], tokenizer=tok, task=task).train()


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder`` except the lock file."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def latro(*args, **env):
    return subprocess.run([sys.executable, "-m", "latro_core.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


# ----------------------------------------------------------------------------- 1. --resume never deletes

def test_resume_on_a_finished_run_without_resume_state_refuses_and_changes_nothing(tok, task, tmp_path):
    train(cfg(tmp_path, keep_resume_state=False), tok, task)
    before = snapshot(tmp_path)
    assert "final/model.safetensors" in before and "metrics.jsonl" in before and "checkpoint/trainer.json" not in before
    with pytest.raises(ConfigError, match=r"no resume state.*nothing was changed.*--model .*final --out-dir NEW.*--overwrite"):
        Trainer(cfg(tmp_path, resume=True, steps=4), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    assert snapshot(tmp_path) == before
    # the command line: exit 2, one line, nothing changed (it stops before loading any model)
    r = latro("train", "--resume", "--steps", "4", "--out-dir", tmp_path, "--progress", "false")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no resume state" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_overwrite_lists_what_it_deletes_in_one_line_first(tok, task, tmp_path, capsys):
    train(cfg(tmp_path), tok, task)
    capsys.readouterr()
    train(cfg(tmp_path, overwrite=True, steps=1), tok, task)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"latro: --overwrite deletes ") and "final" in first and "metrics.jsonl" in first


# ----------------------------------------------------------------------------- 2. one owner per folder

@pytest.mark.slow
def test_a_second_process_into_a_folder_in_use_exits_2_at_once_naming_the_holder_and_writes_nothing(tmp_path):
    held = hold_folder(tmp_path)           # this test process is the running training
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    before = snapshot(tmp_path) | {LOCK_FILE: (tmp_path / LOCK_FILE).read_text()}
    try:
        for args in (["train", "--out-dir", tmp_path, "--steps", "1"], ["sft", "--out-dir", tmp_path],
                     ["evaluate", "--out", tmp_path, "--limit", "1"]):
            r = latro(*args)
            assert r.returncode == 2, (args, r.stderr[-2000:])
            assert f"is in use by PID {os.getpid()}" in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert snapshot(tmp_path) | {LOCK_FILE: (tmp_path / LOCK_FILE).read_text()} == before
    finally:
        held.close()
    # released: the folder can be taken again, and a killed holder leaves no stale lock (the kernel drops it)
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                             "from latro_core.checkpoint import hold_folder; f = hold_folder(Path(sys.argv[1])); "
                             "print('held', flush=True); time.sleep(60)", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"in use by PID {proc.pid}"):
        hold_folder(tmp_path)
    proc.kill()
    proc.wait()
    hold_folder(tmp_path).close()


def test_a_trainer_holds_its_folder_until_training_ends(tok, task, tmp_path):
    tr = Trainer(cfg(tmp_path), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    with pytest.raises(ConfigError, match="in use by"):
        hold_folder(tmp_path)
    tr.train()
    hold_folder(tmp_path).close()          # released at the end of train()


# ----------------------------------------------------------------------------- 3. write failures

def _fail_on_save(monkeypatch, module, after: int, exc):
    """Make ``module.save_model`` write half a file and raise ``exc`` from its ``after``-th call on."""
    real, calls = module.save_model, []

    def save_model(model, tokenizer, folder, state_dict=None):
        calls.append(folder)
        if len(calls) < after:
            return real(model, tokenizer, folder, state_dict=state_dict)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 1000)    # half-way
        raise exc

    monkeypatch.setattr(module, "save_model", save_model)


class SafetensorError(Exception):
    """Stands in for safetensors' own SafetensorError (matched by name: it is not an OSError)."""


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                 SafetensorError("Error while serializing: I/O error: File too large (os error 27)")],
                         ids=["ENOSPC", "SafetensorError"])
def test_a_checkpoint_write_that_fails_half_way_is_one_line_and_leaves_the_last_checkpoint_byte_for_byte(
        tok, task, tmp_path, monkeypatch, exc):
    _fail_on_save(monkeypatch, checkpoint_mod, after=2, exc=exc)    # step 1's checkpoint is written, step 2's fails
    state_after_step_1 = {}
    real_save = checkpoint_mod.write_folder_atomically

    def spy(path, fill):
        if Path(path).name == "checkpoint" and Path(path).exists():
            state_after_step_1.update(snapshot(Path(path)))
        return real_save(path, fill)

    monkeypatch.setattr(checkpoint_mod, "write_folder_atomically", spy)
    with pytest.raises(WriteError) as e:
        train(cfg(tmp_path, steps=3), tok, task)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"could not write the checkpoint of step 2 to {tmp_path / 'checkpoint'}")
    assert "the checkpoint of step 1" in msg and "is intact" in msg and "--resume" in msg
    assert ("No space left on device" if isinstance(exc, OSError) else "File too large") in msg
    assert state_after_step_1 and snapshot(tmp_path / "checkpoint") == state_after_step_1
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "final").exists()
    hold_folder(tmp_path).close()          # the failed run gave its folder up
    monkeypatch.undo()
    train(cfg(tmp_path, steps=3, resume=True), tok, task)        # and --resume continues from step 1
    assert (tmp_path / "final" / "model.safetensors").exists()


def test_a_final_model_that_cannot_be_written_leaves_no_partial_final_folder(tok, task, tmp_path, monkeypatch):
    import latro_core.trainer as trainer_mod

    _fail_on_save(monkeypatch, trainer_mod, after=1, exc=OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    with pytest.raises(WriteError, match=r"could not write the final model .*File too large.*checkpoint of step 2"):
        train(cfg(tmp_path), tok, task)
    assert not (tmp_path / "final").exists() and not (tmp_path / "final.tmp").exists()


# ----------------------------------------------------------------------------- 4. answers read right

ANSWERS = [
    ("The answer is 42.", "42"), ("The answer is .5 hours", "0.5"), ("The answer is 0.5.", "0.5"),
    ("The answer is 12 + 5 = 17.", "17"), ("The answer is 2 + 3 = 5 and 5 + 1 = 6.", "6"),
    ("The answer is 5 x 3 = 15 apples.", "15"), ("The answer is: $1,234.50", "1234.5"),
    ("The answer is $5.00.", "5"), ("The answer is 1,000,000.", "1000000"), ("The answer is 1\u00a0234 km", "1234"),
    ("The answer is 1'234.", "1234"), ("The answer is -4 degrees.", "-4"), ("The answer is \u22127.", "-7"),
    ("The answer is \u20133", "-3"), ("The answer is -.25", "-0.25"), ("The answer is 3/4.", "0.75"),
    ("The answer is 1/2 of a pie", "0.5"), ("The answer is 72.0", "72"), ("The answer is 3.50 dollars", "3.5"),
    ("The answer is 50%.", "50"), ("The answer is five.", "5"), ("The answer is twenty-one!", "21"),
    ("The answer is minus three", "-3"), ("The answer is **18**", "18"), ("the final answer is 9", "9"),
    ("Answer: 14", "14"), ("The answer is: 8 cookies.", "8"), ("The answer is 0", "0"),
    ("So 3 + 4 = 7.\nThe answer is 7", "7"), ("He has 3 apples, then 5. The answer is\n\n11", "11"),
    ("No template, 4 then 9 apples.", "9"), ("The answer is unclear. It is 6.", "6"), ("nothing here", None),
    ("The answer is 12.\nThe answer is 13.", "12"),
]


@pytest.mark.parametrize("text, expected", ANSWERS)
def test_numeric_answers_are_read_as_a_person_would(text, expected):
    assert load_task("arithmetic", "test", n=1).extract_answer(text) == expected
