"""Tests for a training run stopped from outside: CLI training subprocesses get SIGINT / SIGTERM (each
writes a checkpoint, exits with 130, and a resume matches an uninterrupted run), and SIGKILL at random
moments (no handler runs; `--resume` from the last complete checkpoint still ends like an uninterrupted
run). The SIGINT / SIGTERM subprocesses start when this module's first test does. Shared helpers:
tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import signal
import time

import pytest

from latro_core.models import tiny_model
from latro_core.trainer import checkpoint_step
from equivalence import assert_adam_weights_close
from trainer_helpers import assert_metrics_close, make_cfg, metrics, popen, run, weights


# ----------------------------------------------------------------------------- subprocess runs

SIGNAL_SCRIPT = r"""
import sys, time
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
import latro_core.trainer as T
from latro_core.models import tiny_model
T.load_model = lambda *a, **k: tiny_model(tok)        # the CLI run, on the tiny model
import dataclasses, signal
from latro_core.methods import METHODS, register_method
latro = METHODS["latro"]
def gated_step(inputs):
    if inputs.step == 1:   # before the 2nd step, wait for the test's signal (it comes after metrics line 1)
        trainer = signal.getsignal(signal.SIGTERM).__self__     # the trainer's handler records it
        t = time.time()
        while trainer._stop_signal is None and time.time() - t < 600:
            time.sleep(0.02)
    return latro.step(inputs)
register_method(dataclasses.replace(latro, step=gated_step))
from latro_core.cli import main
sys.exit(main(sys.argv[2:]))
"""
SIGNAL_STEPS = 4
SIGNAL_ARGS = ["train", "--task", "arithmetic", "--task-kwargs", '{"n": 16}', "--steps", str(SIGNAL_STEPS),
               "--k", "2", "--questions-per-step", "2", "--max-new-tokens", "6", "--micro-batch", "4",
               "--save-every", "100", "--truncation", "none", "--lr", "1e-3", "--device", "cpu",
               "--progress", "false"]
SIGNAL_KW = dict(steps=SIGNAL_STEPS, save_every=100, truncation="none", lr=1e-3, task_kwargs={"n": 16})


@pytest.fixture(scope="module", autouse=True)
def background(request, tok_dir, tmp_path_factory):
    selected = {item.name.split("[")[0] for item in request.session.items}
    d = tmp_path_factory.mktemp("background")
    runs = {}
    if "test_sigint_and_sigterm_save_checkpoint_exit_130_and_resume_matches" in selected:
        (d / "latro_signal_run.py").write_text(SIGNAL_SCRIPT)
        for signum in (signal.SIGINT, signal.SIGTERM):
            out = d / signum.name
            runs[signum] = (out, popen([d / "latro_signal_run.py", tok_dir, *SIGNAL_ARGS, "--out-dir", out]))
    yield runs
    for _, procs in runs.values():
        for p in (procs if isinstance(procs, list) else [procs]):
            if p.poll() is None:
                p.kill()
                p.communicate()


# ----------------------------------------------------------------------------- SIGINT and SIGTERM

@pytest.mark.slow
def test_sigint_and_sigterm_save_checkpoint_exit_130_and_resume_matches(background, tok_dir, task, tmp_path):
    """CLI training subprocesses get SIGINT / SIGTERM after their first metrics line: each finishes
    the step it is in, writes a complete checkpoint, prints how to resume and exits with 130;
    resuming from that checkpoint reproduces an uninterrupted run's weights and metrics."""
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tok_dir)          # the subprocesses' tokenizer
    ref = tmp_path / "uninterrupted"
    run(make_cfg(ref, **SIGNAL_KW), tok2, task, tiny_model(tok2)[0])
    deadline = time.time() + 170
    for signum in (signal.SIGINT, signal.SIGTERM):
        out, proc = background[signum]
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no metrics line in time"
            time.sleep(0.05)
        proc.send_signal(signum)
    for signum in (signal.SIGINT, signal.SIGTERM):
        out, proc = background[signum]
        _, stderr = proc.communicate(timeout=max(10, deadline - time.time()))
        assert proc.returncode == 130, stderr
        assert f"stopped by signal {int(signum)} after step 2" in stderr and "continue with --resume" in stderr
        assert "Traceback" not in stderr
        assert checkpoint_step(out / "checkpoint") == 2
        assert len(metrics(out)) == 2 and not (out / "final").exists()
        # resume (in this process): the same weights and metrics as the uninterrupted run
        run(make_cfg(out, resume=True, **SIGNAL_KW), tok2, task, tiny_model(tok2)[0])
        # steps 1-2 ran in a one-thread subprocess, the reference in this process (the suite's thread
        # count): the same sums in another order, so weights after AdamW within Adam's bound, and
        # metrics within summation-order rounding (assert_metrics_close)
        assert_adam_weights_close(weights(ref / "final"), weights(out / "final"), lr=SIGNAL_KW["lr"], steps=SIGNAL_STEPS)
        assert_metrics_close(metrics(ref), metrics(out))


# ----------------------------------------------------------------------------- SIGKILL

KILL_SCRIPT = r"""
import sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
import latro_core.trainer as T
from latro_core.models import tiny_model
T.load_model = lambda *a, **k: tiny_model(tok)        # the CLI run, on the tiny model
from latro_core.cli import main
sys.exit(main(sys.argv[2:]))
"""
KILL_STEPS = 6
KILL_KW = dict(steps=KILL_STEPS, save_every=1, truncation="none", lr=1e-3, task_kwargs={"n": 16})


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tok_dir, task, tmp_path):
    """SIGKILL (no handler runs) lands at random moments after a new metrics line: inside a step,
    inside a checkpoint write, between the two renames. Each time `--resume` picks up from the
    last complete checkpoint; the end is the uninterrupted run's weights and metrics."""
    import random

    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tok_dir)
    ref = tmp_path / "uninterrupted"
    run(make_cfg(ref, **KILL_KW), tok2, task, tiny_model(tok2)[0])
    (tmp_path / "kill_run.py").write_text(KILL_SCRIPT)
    out = tmp_path / "killed"
    args = [tmp_path / "kill_run.py", tok_dir, "train", "--task", "arithmetic", "--task-kwargs", '{"n": 16}',
            "--steps", str(KILL_STEPS), "--k", "2", "--questions-per-step", "2", "--max-new-tokens", "6",
            "--micro-batch", "4", "--save-every", "1", "--truncation", "none", "--lr", "1e-3", "--device", "cpu",
            "--progress", "false", "--resume", "--out-dir", out]
    rng, kills = random.Random(0), 0
    for attempt in range(12):
        proc = popen(args)
        seen = len(metrics(out)) if (out / "metrics.jsonl").exists() else 0
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            n = len((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").exists() else 0
            if n > seen:
                time.sleep(rng.uniform(0.0, 0.25))
                break
            time.sleep(0.01)
        if proc.poll() is None and kills < 4:
            proc.kill()                                   # SIGKILL
            kills += 1
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert kills == 4 and proc.returncode == 0, (kills, proc.returncode)
    # one-thread subprocesses against this process's thread count: AdamW's bound (as the SIGINT test)
    assert_adam_weights_close(weights(ref / "final"), weights(out / "final"), lr=KILL_KW["lr"], steps=KILL_STEPS)
    assert_metrics_close(metrics(ref), metrics(out))
