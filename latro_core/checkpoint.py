"""Checkpoints: atomic save, recovery after a kill between renames, and reading files back with one
clear error when they are missing or damaged. A checkpoint folder holds ``model/`` (weights or the
LoRA adapter, and the tokenizer), ``state.pt`` (optimizer, scheduler, RNG states) and
``trainer.json`` (the step and the config), written last. Also the run folder's rules: the files a
run writes, a writable folder checked before any work, and which settings a resume may change."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError, LatroError, json_fault, json_fault_at, read_json, writing
from .models import save_model


def save_checkpoint(path: Path, model, optimizer_state: dict, scheduler, step: int, config,
                    tokenizer=None, model_state: dict | None = None) -> None:
    """Write model/adapter (and tokenizer), the optimizer's state dict, scheduler, RNG state and step
    to ``path`` (``model_state``: the weights to write, when not the model's own, e.g. gathered
    from shards) atomically (:func:`write_folder_atomically`, ``trainer.json`` last)."""

    def fill(tmp: Path) -> None:
        save_model(model, tokenizer, tmp / "model", state_dict=model_state)
        rng = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), **rng},
                   tmp / "state.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, "config": asdict(config)}, indent=1))

    write_folder_atomically(path, fill)


def write_folder_atomically(path: Path, fill) -> None:
    """``fill(tmp)`` writes the folder's files into ``<path>.tmp``, which is then renamed to ``path``:
    a kill or a failed write at any moment leaves either the old folder or the new one, never a
    partial one (:func:`_recover_checkpoint` restores the one complete folder if a kill fell between
    the two renames). A failure inside ``fill`` removes the temporary folder and re-raises."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    _recover_checkpoint(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # the previous folder is untouched
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _recover_checkpoint(path: Path) -> None:
    """If a kill fell between save_checkpoint's two renames, ``path`` is missing while ``.old``
    (previous) and/or a complete ``.tmp`` (new, trainer.json is written last) exist: restore one."""
    path = Path(path)
    if path.exists():
        return
    for cand in (path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")):
        if (cand / "trainer.json").exists():
            os.replace(cand, path)
            return


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint folder ``path`` (its ``trainer.json``), or None when it has none;
    CheckpointError naming the file (line, byte offset) when trainer.json is damaged or foreign."""
    _recover_checkpoint(Path(path))
    f = Path(path) / "trainer.json"
    if not f.exists():
        return None
    fix = f"delete {path} to restart the run, or start over with --overwrite."
    record = read_json(f, fix)
    if not isinstance(record.get("step"), int) or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{f} is not a latro checkpoint record (no step and config); {fix}")
    return record["step"]


def load_weights(model, folder: Path) -> None:
    """Load a ``save_pretrained`` folder's safetensors weights into ``model`` in place (resume
    without a second copy of the model). Tied weights (lm_head = embeddings) may be absent."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"no *.safetensors weights in checkpoint folder {folder}; delete the "
                          f"checkpoint or train without --resume.")
    state = {}
    for f in files:
        state.update(read_back(f, lambda path: load_file(str(path))))
    own = model.state_dict()
    try:
        res = model.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatches
        first = str(e).strip().splitlines()[-1].strip()
        raise ConfigError(f"checkpoint {folder} does not match the model ({first[:200]}); "
                          f"resume with the same --model.") from None
    loaded = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in res.missing_keys if own[k].data_ptr() not in loaded]
    if missing or res.unexpected_keys:
        raise ConfigError(f"checkpoint {folder} does not match the model: missing {missing[:3]}, "
                          f"unexpected {list(res.unexpected_keys)[:3]}; resume with the same --model.")


def read_back(path: Path, read):
    """``read(path)``, or one CheckpointError naming the file when it is missing or damaged."""
    try:
        return read(path)
    except LatroError:
        raise
    except Exception as e:  # noqa: BLE001 - torch / safetensors raise many kinds for a cut file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is missing or damaged ({reason}); the run cannot resume from it: delete "
                              f"{Path(path).parent} (keeping metrics.jsonl) and start over with --overwrite, "
                              f"or resume from a copy of an intact checkpoint.") from None


def truncate_records(path: Path, step: int) -> None:
    """Drop metric lines beyond ``step`` (after a resume) so the file has each step once. A line a kill
    cut (the last) is dropped; any other line that is not one JSON object is a CheckpointError naming
    its line and byte offset, and the file is left as it was."""
    if not path.exists():
        return
    keep, lines, offset = [], path.read_bytes().splitlines(keepends=True), 0
    for i, raw in enumerate(lines):
        fault = json_fault_at(raw) if raw.strip() else None
        row = json.loads(raw) if raw.strip() and fault is None else None
        if fault is None and raw.strip() and not isinstance(row, dict):
            fault = 0, f"a JSON {type(row).__name__}, not a row of records"
        if fault is not None and i < len(lines) - 1:    # the last line, cut by a kill mid-write: dropped
            raise CheckpointError(f"{path}, line {i + 1}, is damaged (byte {offset + fault[0]}: {fault[1]}); fix "
                                  f"or delete that line, then resume.")
        offset += len(raw)
        if row is not None and row.get("step", 0) <= step:
            keep.append(raw.decode("utf-8").rstrip("\r\n"))
    path.write_text("".join(ln + "\n" for ln in keep))


# what a run writes into its out_dir (a new run refuses a folder holding any of them without --overwrite)
RUN_FILES = ("metrics.jsonl", "samples.jsonl", "config.json", "checkpoint", "checkpoint.old", "checkpoint.tmp",
             "final", "final.old", "final.tmp", "best", "best.old", "best.tmp", "best.json")
MODELS = ("final", "best")          # finished models: --resume never deletes them (a partial checkpoint.tmp is none)
LOCK_FILE = ".latro.lock"


def hold_folder(out: Path, what: str = "--out-dir"):
    """Take the folder ``out`` for this process: an exclusive ``flock`` on ``out/.latro.lock``, which
    the kernel releases when the process ends (a killed run leaves no stale lock). The lock file
    says who holds it (PID and command). A folder another process holds: ConfigError at once,
    naming that process, with nothing written. Returns the open lock file (close it to release)."""
    import fcntl
    import sys

    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / LOCK_FILE, "a+")
    except OSError as e:
        raise ConfigError(f"cannot write to the output folder {out} ({e.strerror or e}); "
                          f"choose a writable {what}.") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"{out} is in use by {holder}; wait for it to end, stop it, or choose another "
                          f"{what}.") from None
    f.seek(0)
    f.truncate()
    f.write(f"PID {os.getpid()} ({' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])})\n")
    f.flush()
    return f
# settings that --resume may change freely: the step budget, the progress bar, where things are read and written
RESUME_FREE = ("steps", "progress", "out_dir", "data_dir", "device", "resume", "overwrite", "change")


def check_writable(out: Path) -> None:
    """Create ``out`` and write a file in it, or fail with ConfigError before any work starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the output folder {out} ({e.strerror or e}); "
                          f"choose a writable --out-dir.") from None


def resume_changes(config, ckpt: Path) -> dict:
    """{field: [checkpoint's value, new value]} for the settings that differ from the checkpoint's;
    ConfigError for those not named in ``config.change``."""
    try:
        saved = json.loads((ckpt / "trainer.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"{ckpt / 'trainer.json'} is missing or damaged; delete {ckpt} to restart "
                          f"the run, or start over with --overwrite.") from None
    now = asdict(config)
    diff = {k: [saved.get(k), v] for k, v in now.items() if k not in RESUME_FREE and saved.get(k, v) != v}
    allowed = {c.strip().replace("-", "_") for c in config.change.split(",") if c.strip()}
    unknown = allowed - set(now)
    if unknown:
        raise ConfigError(f"--change names unknown settings {sorted(unknown)}; known: {sorted(now)}")
    refused = {k: d for k, d in diff.items() if k not in allowed}
    if refused:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in refused.items())
        raise ConfigError(f"--resume with other settings than the checkpoint's ({listed}); resume with the "
                          f"checkpoint's settings, or allow the change with --change {','.join(refused)} "
                          f"(recorded in config.json).")
    return diff


# ----------------------------------------------------------------------------- opening a run

def open_run_folder(config, out: Path, acc) -> tuple[Path | None, dict]:
    """(the checkpoint to resume from, or None for a fresh run; {field: [checkpoint's value, new]}
    for the settings the resume changes). A fresh run first clears, or refuses, a folder that holds
    one (:func:`_start_over`). ``acc``: the accelerator (``wait_for_everyone``, ``is_main_process``)."""
    check_writable(out)
    ckpt = out / "checkpoint"
    resume_from = ckpt if (config.resume and checkpoint_step(ckpt) is not None) else None
    if resume_from is not None:
        changes = resume_changes(config, resume_from)
        _restore_config_record(out, resume_from, acc)
        return resume_from, changes
    _start_over(config, out, acc)
    return None, {}


def _restore_config_record(out: Path, ckpt: Path, acc) -> None:
    """A resume whose run folder's ``config.json`` is missing, damaged or foreign: rewrite it from the
    checkpoint's copy of the settings (``trainer.json``, which the resume was checked against), and
    say so in one line; its record of earlier resumes ("resumes") cannot be read back and is lost."""
    path = out / "config.json"
    fault = json_fault(path.read_bytes()) if path.is_file() else "missing"
    if fault is None and not isinstance(json.loads(path.read_bytes()), dict):
        fault = "not a JSON object"
    if fault is None or not acc.is_main_process:
        return
    record = json.loads((ckpt / "trainer.json").read_text())
    with writing(f"{path}", "nothing else was changed: free space (or fix the folder's permissions), then resume"):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record["config"], indent=1))
        os.replace(tmp, path)
    print(f"latro: {path} was {'missing' if fault == 'missing' else 'damaged (' + fault + ')'}; the resume "
          f"uses the checkpoint's settings ({ckpt / 'trainer.json'}, step {record['step']}) and config.json "
          f"was rewritten from them (its record of earlier resumes is lost).", flush=True)


def _start_over(config, out: Path, acc) -> None:
    """A new run: refuse an out_dir that holds one, unless ``overwrite`` (then delete it)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    acc.wait_for_everyone()
    if not found:
        return
    models = [name for name in found if name in MODELS]
    if config.resume and not config.overwrite:
        if models:   # a finished run without resume state (--keep-resume-state false): never deleted
            raise ConfigError(
                f"{out} holds a run with {', '.join(models)} but no resume state (it was trained with "
                f"--keep-resume-state false), so --resume cannot continue it; nothing was changed. Train "
                f"further from its model into a new folder (--model {out / models[0]} --out-dir NEW), "
                f"or start over here with --overwrite (deletes it).")
        # killed before its first checkpoint: only records, which any resume drops beyond its checkpoint
        if acc.is_main_process:
            print(f"latro: {out} has no checkpoint to resume from; starting the run over "
                  f"(deletes {', '.join(found)}).", flush=True)
    elif not config.overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume, "
                          f"or start over with --overwrite (deletes it), or pick another --out-dir.")
    elif acc.is_main_process:
        print(f"latro: --overwrite deletes {', '.join(found)} in {out}", flush=True)
    if acc.is_main_process:
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    acc.wait_for_everyone()


def restore_training_state(resume_from: Path, load_optimizer, scheduler) -> int:
    """Read the optimizer, schedule and RNG state of the checkpoint ``resume_from`` back into the run
    (``load_optimizer(state)`` loads the optimizer's, sharded or not); returns its step."""
    state = read_back(resume_from / "state.pt", lambda f: torch.load(f, weights_only=False))
    load_optimizer(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return checkpoint_step(resume_from)


def read_best(out: Path) -> dict | None:
    """The resumed run's best model so far (``best.json``: its step and eval accuracy), or None;
    CheckpointError naming the file (line, byte offset) when it is damaged or foreign."""
    path = out / "best.json"
    if not path.exists():
        return None
    fix = f"delete {path} and {out / 'best'} to keep the best model from now on, or restore both from a copy."
    best = read_json(path, fix)
    if not isinstance(best.get("step"), int) or not isinstance(best.get("eval_accuracy"), (int, float)):
        raise CheckpointError(f"{path} is not a latro best-model record (no step and eval_accuracy); {fix}")
    return best
