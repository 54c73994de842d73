"""Bad files a user brings, and second runs (issue #41): a damaged or foreign data file, model folder,
GGUF file, adapter folder or run record gives ONE ``latro: error:`` line naming the file (for text, the
line and byte offset), what is wrong and what to do, and nothing is replaced unasked.

The fault-injection tests assert what is on disk afterwards, byte for byte where it must not change.
Every case uses the tiny random model (saved to a folder once per module) and runs in seconds.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from latro_core import cli
from latro_core.checkpoint import LOCK_FILE
from latro_core.models import prepare_tokenizer, tiny_model

TRAIN = ["--task", "arithmetic", "--task-kwargs", '{"n": 8}', "--device", "cpu", "--progress", "false", "--k", "2",
         "--questions-per-step", "2", "--max-new-tokens", "4", "--micro-batch", "4", "--save-every", "1",
         "--truncation", "none", "--lr", "1e-3"]
EVAL = ["--task", "arithmetic", "--limit", "2", "--k", "0", "--max-new-tokens", "3", "--device", "cpu",
        "--progress", "false"]


@pytest.fixture(scope="module")
def model_dir(smol_tokenizer, tmp_path_factory):
    """A folder holding the tiny random model and its tokenizer (save_pretrained)."""
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model, tok = tiny_model(prepare_tokenizer(smol_tokenizer))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dirs(smol_tokenizer, tmp_path_factory):
    """{"good": a LoRA adapter of the tiny model, "other": one of a model of another width}."""
    from latro_core.models import add_lora

    tok = prepare_tokenizer(smol_tokenizer)
    root = tmp_path_factory.mktemp("adapters")
    for name, width in (("good", 64), ("other", 32)):
        add_lora(tiny_model(tok, hidden_size=width)[0]).save_pretrained(root / name)
    return {"good": root / "good", "other": root / "other"}


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder`` except the lock file."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def latro(argv) -> int:
    """``latro <argv>`` in this process (paths as strings); its exit status."""
    return cli.main([str(a) for a in argv])


def error_line(capsys, argv) -> str:
    """Run ``latro <argv>``; assert exit 2, exactly one ``latro: error:`` line and no traceback; return it."""
    code = latro(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("latro: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cut(path: Path, keep: float = 0.5) -> None:
    """Cut the file ``path`` to the first ``keep`` of its bytes (a copy broken off mid-file)."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def damaged_copy(src: Path, dst: Path, damage) -> Path:
    shutil.copytree(src, dst)
    damage(dst)
    return dst


# ----------------------------------------------------------------------------- the four cases of #41

def test_a_data_file_with_a_byte_that_is_not_utf8_gives_one_line_naming_the_line_and_offset(capsys, tmp_path):
    d = tmp_path / "data" / "gsm8k"
    d.mkdir(parents=True)
    first = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}).encode() + b"\n"
    bad = b'{"question": "caf\xe9?", "answer": "#### 3"}\n'          # Latin-1 e-acute: not UTF-8
    (d / "test.jsonl").write_bytes(first + bad)
    before, offset = snapshot(tmp_path / "data"), len(first) + bad.index(b"\xe9")
    msg = error_line(capsys, ["evaluate", "--task", "gsm8k", "--data-dir", tmp_path / "data", "--out", tmp_path / "ev",
                              "--device", "cpu", "--progress", "false"])
    assert f"{d / 'test.jsonl'}, line 2, byte {offset}" in msg
    assert "0xe9 is not UTF-8" in msg and "save the file as UTF-8" in msg
    assert snapshot(tmp_path / "data") == before and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_a_model_folder_whose_safetensors_file_is_cut_gives_one_line_naming_the_file(command, model_dir, capsys,
                                                                                      tmp_path):
    bad = damaged_copy(model_dir, tmp_path / "model", lambda d: cut(d / "model.safetensors"))
    before = snapshot(bad)
    out = ["--out", tmp_path / "ev", *EVAL] if command == "evaluate" else ["--out-dir", tmp_path / "run", *TRAIN]
    msg = error_line(capsys, [command, "--model", bad, *out])
    assert f"{bad / 'model.safetensors'} is damaged" in msg and "save, copy or download it again" in msg
    assert snapshot(bad) == before
    assert not (tmp_path / "ev" / "summary.json").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_resume_with_a_cut_config_json_uses_the_checkpoints_settings_and_rewrites_config_json_saying_so(
        model_dir, capsys, tmp_path):
    run = tmp_path / "run"
    assert latro(["train", "--model", model_dir, "--out-dir", run, "--steps", "2", *TRAIN]) == 0
    saved = json.loads((run / "checkpoint" / "trainer.json").read_text())
    cut(run / "config.json")
    capsys.readouterr()
    assert latro(["train", "--model", model_dir, "--out-dir", run, "--steps", "3", "--resume", *TRAIN]) == 0
    said = [ln for ln in capsys.readouterr().out.splitlines() if "config.json" in ln]
    assert len(said) == 1 and said[0].startswith("latro: ") and "was damaged (line " in said[0], said
    assert "checkpoint's settings" in said[0] and "step 2" in said[0] and "rewritten" in said[0]
    record = json.loads((run / "config.json").read_text())            # whole again: the settings in force
    assert {k: v for k, v in record.items() if k not in ("steps", "resume")} == \
        {k: v for k, v in saved["config"].items() if k not in ("steps", "resume")}
    assert record["steps"] == 3
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_an_evaluation_into_a_folder_that_holds_results_is_refused_without_overwrite_and_they_stay_byte_for_byte(
        model_dir, capsys, tmp_path):
    out = tmp_path / "ev"
    assert latro(["evaluate", "--model", model_dir, "--out", out, *EVAL]) == 0
    before = snapshot(out)
    assert set(before) == {"summary.json", "predictions.jsonl"}
    capsys.readouterr()
    other = ["evaluate", "--model", model_dir, "--out", out, *EVAL, "--max-new-tokens", "5"]
    msg = error_line(capsys, other)
    assert str(out) in msg and "summary.json, predictions.jsonl" in msg and "--overwrite" in msg
    assert snapshot(out) == before                                      # nothing replaced
    assert latro([*other, "--overwrite"]) == 0
    assert "--overwrite deletes summary.json, predictions.jsonl" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["max_new_tokens"] == 5


# ----------------------------------------------------------------------------- the audit: model files

@pytest.mark.parametrize("name,damage,expected", [
    ("cut config.json", lambda d: cut(d / "config.json"), "config.json, line "),
    ("cut tokenizer.json", lambda d: cut(d / "tokenizer.json"), "tokenizer.json, line "),
    ("Latin-1 config.json", lambda d: (d / "config.json").write_bytes(b'{"a": "\xe9"}'),
     "config.json, line 1, byte 7: byte 0xe9 is not UTF-8"),
    ("config.json a list", lambda d: (d / "config.json").write_text("[]"), "holds a JSON list"),
    ("no model_type", lambda d: (d / "config.json").write_text('{"hidden_size": 8}'), "model_type"),
    ("no weights", lambda d: (d / "model.safetensors").unlink(), "no file named model.safetensors"),
    ("not safetensors", lambda d: (d / "model.safetensors").write_text("hello"), "model.safetensors is damaged"),
])
def test_a_model_folder_with_a_damaged_or_foreign_file_gives_one_line_naming_what_is_wrong(
        name, damage, expected, model_dir, capsys, tmp_path):
    bad = damaged_copy(model_dir, tmp_path / "model", damage)
    before = snapshot(bad)
    msg = error_line(capsys, ["evaluate", "--model", bad, "--out", tmp_path / "ev", *EVAL])
    assert str(bad) in msg and expected in msg and ("again" in msg or "pass" in msg), msg
    assert snapshot(bad) == before


@pytest.mark.parametrize("keep_bytes", [100, 4096])
def test_a_cut_gguf_file_gives_one_line(keep_bytes, capsys, tmp_path):
    from latro_core.models import embedded_gguf_path

    bad = tmp_path / "cut.gguf"
    with open(embedded_gguf_path(), "rb") as f:
        bad.write_bytes(f.read(keep_bytes))
    msg = error_line(capsys, ["evaluate", "--model", bad, "--out", tmp_path / "ev", *EVAL])
    assert f"Could not load the model at {bad}" in msg and "damaged" in msg


@pytest.mark.parametrize("name,make,expected", [
    ("cut weights", lambda a, t: damaged_copy(a["good"], t, lambda d: cut(d / "adapter_model.safetensors")),
     "adapter_model.safetensors is damaged"),
    ("cut adapter_config.json", lambda a, t: damaged_copy(a["good"], t, lambda d: cut(d / "adapter_config.json")),
     "adapter_config.json, line "),
    ("another model's adapter", lambda a, t: a["other"], "trained on another model"),
    ("no such folder", lambda a, t: t / "missing" / "adapter", "no such adapter folder"),
])
def test_a_damaged_or_foreign_adapter_folder_gives_one_line(name, make, expected, model_dir, adapter_dirs, capsys,
                                                             tmp_path):
    adapter = make(adapter_dirs, tmp_path / "adapter")
    msg = error_line(capsys, ["evaluate", "--model", model_dir, "--adapter", adapter, "--out", tmp_path / "ev", *EVAL])
    assert str(adapter) in msg and expected in msg, msg


def test_evaluating_a_run_model_whose_run_config_json_is_damaged_gives_one_line(model_dir, capsys, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "final")
    (run / "config.json").write_bytes(b'{"method": "latro", "seed": ')
    msg = error_line(capsys, ["evaluate", "--model", run / "final", "--out", tmp_path / "ev", *EVAL])
    assert f"{run / 'config.json'}, line 1, byte 28" in msg and "--method" in msg


# ----------------------------------------------------------------------------- the audit: run records

@pytest.fixture
def trained(model_dir, tmp_path):
    """A run folder after 2 steps with a checkpoint, and the arguments that resume it to 3."""
    run = tmp_path / "run"
    assert latro(["train", "--model", model_dir, "--out-dir", run, "--steps", "2", *TRAIN]) == 0
    return run, ["train", "--model", model_dir, "--out-dir", run, "--steps", "3", "--resume", *TRAIN]


@pytest.mark.parametrize("record,damage,expected", [
    ("checkpoint/trainer.json", lambda f: cut(f), "trainer.json, line "),
    ("checkpoint/trainer.json", lambda f: f.write_text('{"hello": 1}'), "not a latro checkpoint record"),
    ("best.json", lambda f: f.write_bytes(b'{"step": 1, \xff}'), "best.json, line 1, byte 12: byte 0xff"),
    ("best.json", lambda f: f.write_text("[1, 2]"), "holds a JSON list"),
    ("checkpoint/state.pt", lambda f: cut(f), "state.pt is missing or damaged"),
    ("checkpoint/model/model.safetensors", lambda f: cut(f), "model.safetensors is missing or damaged"),
])
def test_a_resume_from_a_damaged_or_foreign_run_record_gives_one_line_and_changes_nothing(
        record, damage, expected, trained, capsys):
    run, resume = trained
    damage(run / record)
    before = snapshot(run)
    msg = error_line(capsys, resume)
    assert expected in msg, msg
    assert snapshot(run) == before


def test_a_metrics_line_with_a_byte_that_is_not_utf8_names_its_line_and_offset_and_stays_byte_for_byte(
        trained, capsys):
    run, resume = trained
    metrics = run / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(lines[0][:5] + b"\xfe" + lines[0][5:] + b"".join(lines[1:]))
    before = metrics.read_bytes()
    msg = error_line(capsys, resume)
    assert f"{metrics}, line 1, is damaged (byte 5: byte 0xfe is not UTF-8" in msg and "fix or delete that line" in msg
    assert metrics.read_bytes() == before


# ----------------------------------------------------------------------------- a study's records, profile overrides

def _study_record(tmp_path):
    """A recorded study cell: done.json, metrics.jsonl, eval-test/summary.json and predictions.jsonl."""
    from latro_core.experiments.study import Cell

    cell = Cell("tune/latro_seed0", "latro", train={"lr": 1e-5}, evals=("test",))
    folder = tmp_path / "study" / cell.name
    (folder / "eval-test").mkdir(parents=True)
    (folder / "done.json").write_text(json.dumps({"cell": {"method": "latro", "train": {"lr": 1e-5},
                                                           "evals": ["test"]}}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "eval_accuracy": 0.5}\n{"step": 2, "eval_accuracy": 0.6}\n')
    (folder / "eval-test" / "summary.json").write_text(json.dumps({"greedy": {"correct": 1, "n": 2}}))
    (folder / "eval-test" / "predictions.jsonl").write_text(
        '{"id": "a", "greedy": {"correct": true}}\n{"id": "b", "greedy": {"correct": false}}\n')
    return cell, folder


def _read_done(cell, folder):
    from latro_core.experiments.study import recorded
    return recorded(cell, folder.parents[1])


def _read_metrics(cell, folder):
    from latro_core.experiments.study import validation_accuracy
    return validation_accuracy(folder)


def _read_summary(cell, folder):
    from latro_core.experiments.study import per_seed_answers
    return per_seed_answers(folder.parents[1], [cell], "test")


def _read_predictions(cell, folder):
    from latro_core.results import question_correct
    return question_correct(folder / "eval-test" / "summary.json")


@pytest.mark.parametrize("damaged, read", [("done.json", _read_done), ("metrics.jsonl", _read_metrics),
                                           ("eval-test/summary.json", _read_summary),
                                           ("eval-test/predictions.jsonl", _read_predictions)])
@pytest.mark.parametrize("damage", ["cut", "not utf-8"])
def test_a_damaged_study_record_gives_one_line_naming_the_file_line_and_byte_and_stays_as_it_was(
        tmp_path, damaged, read, damage):
    from latro_core.errors import DataError

    cell, folder = _study_record(tmp_path)
    path = folder / damaged
    data = path.read_bytes()
    data = data[:len(data) - 6] if damage == "cut" else data[:5] + b"\xe9" + data[5:]
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        read(cell, folder)
    said = str(e.value)
    assert "\n" not in said and said.startswith(str(path)) and "line " in said and "byte " in said
    assert ("not UTF-8" in said) if damage == "not utf-8" else ("not valid JSON" in said)
    assert "rerun" in said or "evaluate the model again" in said
    assert path.read_bytes() == data                                        # read, never rewritten


@pytest.mark.parametrize("overrides, says", [
    (["seeds", 0], "overrides must be a dict of settings"),
    ({"seeds": 5}, "overrides: seeds=5 is a int where 04_train_latro holds a list"),
    ({"latro": 5}, "overrides: latro=5 is a int where 04_train_latro holds a dict"),
    ({"sedes": [0]}, "overrides ['sedes'] are not settings of 04_train_latro"),
])
def test_profile_overrides_of_the_wrong_kind_give_one_line_before_anything_runs(overrides, says):
    from latro_core.errors import ConfigError
    from latro_core.experiments.profiles import notebook_settings

    with pytest.raises(ConfigError) as e:
        notebook_settings("04_train_latro", "smoke", overrides)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert notebook_settings("04_train_latro", "smoke", {"seeds": [0, 1]})["seeds"] == [0, 1]   # the right kind
