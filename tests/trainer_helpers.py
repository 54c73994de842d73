"""Helpers the trainer tests share (tests/test_trainer_*.py, test_resume.py, test_checkpoints.py, ...):
a small run configuration, a run on the tiny model, reading a run's metrics and weights back, and a
Python subprocess with latro_core and tests/ on its path. The fixtures `tok`, `tok_dir` and `task`
are in tests/conftest.py.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latro_core.methods as methods_mod
from latro_core.models import tiny_model
from latro_core.trainer import TrainConfig, Trainer


ROOT = Path(__file__).resolve().parents[1]
TIMING = {"sample_s", "update_s", "step_s", "samples_per_s", "score_s", "backward_s", "optim_s"}


def make_cfg(out, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), steps=3, k=2, questions_per_step=2, max_new_tokens=6, micro_batch=4,
                save_every=2, device="cpu", progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def run(cfg, tok, task, model=None):
    model = model if model is not None else tiny_model(tok)[0]
    tr = Trainer(cfg, model=model, tokenizer=tok, task=task)
    return tr, tr.train()


def metrics(out) -> list[dict]:
    return [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def no_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


# Two runs that make the same sums in another order (another thread count, a resumed process) log the
# same metrics within fp32 rounding of those sums. The metrics are log-probability sums over ≤ 32
# tokens of magnitude ≤ ~86 here, or functions of them with Lipschitz constant ≤ 2 (the std of the
# rewards, the advantages); reordering a T-term fp32 sum moves it by about u·|sum|·√T, u ≈ 6e-8:
# 6e-8 · 86 · √32 ≈ 3e-5. A resume that restored anything wrong samples other rationales and moves the
# metrics by far more (measured on an Intel Xeon with AMX, two threads against one: 6e-6).
METRIC_ROUNDING = 3e-5


def assert_metrics_close(ref_rows: list[dict], out_rows: list[dict]) -> None:
    for a, b in zip(no_timing(ref_rows), no_timing(out_rows), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=METRIC_ROUNDING), (k, a["step"])


def weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no weights in {folder}"
    return out


def assert_same_weights(a: dict, b: dict, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


def stop_after(monkeypatch, n_steps: int, signum=signal.SIGTERM):
    """Deliver ``signum`` to the trainer during its ``n_steps``-th step (the handler it installed runs)."""
    latro = methods_mod.METHODS["latro"]

    def step(inputs):
        out = latro.step(inputs)
        if inputs.step + 1 == n_steps:
            signal.raise_signal(signum)
        return out

    monkeypatch.setitem(methods_mod.METHODS, "latro", dataclasses.replace(latro, step=step))


def popen(args, **env):
    # tests/ on the path too: the scripts import tests/equivalence.py
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **env}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
