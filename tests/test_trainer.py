"""Tests for latro_core.trainer: the LaTRO / SFT / RFT loops on a tiny random Llama model.

Everything runs on CPU with a 2-layer, 64-wide model and the real SmolLM2 tokenizer, K=2,
L=6 tokens, two questions per step: a step takes well under a second. Covered: metrics and
output files, exact resume (passed-in model, model loaded by name, LoRA), SIGINT/SIGTERM in a
subprocess (through the CLI) then resume, atomic checkpoints, NaN/inf guards, SFT and RFT, LoRA's
reference policy, 1 vs 2 processes (gloo) and same-seed determinism (see docs/determinism.md).
"""

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import latro_core.methods as methods_mod
import latro_core.trainer as trainer_mod
from latro_core.errors import ConfigError, NumericalError
from latro_core.models import prepare_tokenizer, tiny_model
from latro_core.tasks import load_task
from equivalence import assert_adam_weights_close, assert_gradients_close, save_first_gradients
from latro_core.trainer import (TrainConfig, Trainer, TrainingInterrupted, checkpoint_step,
                                question_indices, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
METRIC_FIELDS = ("reward_mean", "reward_std", "logp_y_mean", "kl_mean", "adv_std", "rationale_len",
                 "frac_truncated", "policy_loss", "answer_loss", "samples_per_s")
TIMING = {"sample_s", "update_s", "step_s", "samples_per_s", "score_s", "backward_s", "optim_s"}


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return prepare_tokenizer(smol_tokenizer)


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory):
    """The tokenizer saved as a plain folder: subprocesses load it in a fraction of a second."""
    d = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def task():
    return load_task("arithmetic", "train", n=16)


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

    def step(ctx, s):
        out = latro.step(ctx, s)
        if s + 1 == n_steps:
            signal.raise_signal(signum)
        return out

    monkeypatch.setitem(methods_mod.METHODS, "latro", dataclasses.replace(latro, step=step))


# ----------------------------------------------------------------------------- subprocess runs
# The subprocess runs (SIGINT, SIGTERM, two gloo ranks) start when this module's first test does and
# run alongside the in-process tests (importing torch + transformers costs each one several
# seconds); the tests at the end of this file collect them.

SIGNAL_SCRIPT = r"""
import sys, time
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
import latro_core.trainer as T
from latro_core.models import tiny_model
T.load_model = lambda *a, **k: tiny_model(tok)        # the CLI run, on the tiny model
import dataclasses, signal
from latro_core.methods import METHODS, register
latro = METHODS["latro"]
def gated_step(ctx, s):
    if s == 1:   # before the 2nd step, wait for the test's signal (it comes after metrics line 1)
        trainer = signal.getsignal(signal.SIGTERM).__self__     # the trainer's handler records it
        t = time.time()
        while trainer._stop_signal is None and time.time() - t < 600:
            time.sleep(0.02)
    return latro.step(ctx, s)
register(dataclasses.replace(latro, step=gated_step))
from latro_core.cli import main
sys.exit(main(sys.argv[2:]))
"""
SIGNAL_STEPS = 4
SIGNAL_ARGS = ["train", "--task", "arithmetic", "--task-kwargs", '{"n": 16}', "--steps", str(SIGNAL_STEPS),
               "--k", "2", "--questions-per-step", "2", "--max-new-tokens", "6", "--micro-batch", "4",
               "--save-every", "100", "--truncation", "none", "--lr", "1e-3", "--device", "cpu",
               "--progress", "false"]
SIGNAL_KW = dict(steps=SIGNAL_STEPS, save_every=100, truncation="none", lr=1e-3, task_kwargs={"n": 16})

# argv: tokenizer folder, TrainConfig JSON, "skip_all_reduce" or "". Every rank saves the first step's
# gradients (after the all-reduce) through tests/equivalence.py; "skip_all_reduce" plants the bug the
# equivalence checks must catch: the ranks never all-reduce their gradients (DDP's no_sync left on, as a
# misplaced `accelerator.no_sync` would), so each steps on its own question's gradient.
DDP_SCRIPT = r"""
import json, sys
from pathlib import Path
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
from equivalence import save_first_gradients
from latro_core.models import tiny_model
from latro_core.tasks import load_task
from latro_core.trainer import TrainConfig, Trainer
cfg = TrainConfig(**json.loads(sys.argv[2]))
save_first_gradients(Path(cfg.out_dir) / "grads.pt")
tr = Trainer(cfg, model=tiny_model(tok)[0], tokenizer=tok, task=load_task("arithmetic", "train", n=16))
assert tr.acc.num_processes == 2, tr.acc.num_processes
if sys.argv[3] == "skip_all_reduce":
    tr.scorer.require_backward_grad_sync = False
tr.train()
"""
DDP_KW = dict(steps=2, save_every=100, truncation="none", lr=1e-3, max_new_tokens=8)

# Two steps, a checkpoint, then a resumed third step, in the same processes; every rank checks
# that it holds half of each decoder weight.
FSDP_SCRIPT = r"""
import json, sys
from pathlib import Path
import torch
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
from equivalence import save_first_gradients
from latro_core.models import tiny_model
from latro_core.tasks import load_task
from latro_core.trainer import TrainConfig, Trainer
cfg = json.loads(sys.argv[2])
save_first_gradients(Path(cfg["out_dir"]) / "grads.pt")
for steps, resume in ((2, False), (3, True)):
    tr = Trainer(TrainConfig(**{**cfg, "steps": steps, "resume": resume}), model=tiny_model(tok)[0], tokenizer=tok,
                 task=load_task("arithmetic", "train", n=16))
    assert tr.sharded and tr.acc.num_processes == 2, (tr.sharded, tr.acc.num_processes)
    w = tr.scorer.lm.model.layers[0].mlp.down_proj.weight
    assert w.to_local().numel() * 2 == w.numel(), (w.to_local().shape, w.shape)
    tr.train()
"""
FSDP_KW = dict(DDP_KW, steps=3, save_every=2)


def fsdp_launch_env(n: int = 2) -> dict:
    """The environment ``accelerate launch --config_file configs/accelerate_fsdp.yaml`` gives its
    processes (accelerate's own parsing of the shipped file), with mixed precision off: the test
    compares against an fp32 process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "configs/accelerate_fsdp.yaml"),
                                               "--num_processes", str(n), "x.py"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    return {**{k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))},
            "ACCELERATE_MIXED_PRECISION": "no"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _popen(args, **env):
    # tests/ on the path too: the scripts import tests/equivalence.py
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **env}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module", autouse=True)
def background(request, tok_dir, tmp_path_factory):
    selected = {item.name.split("[")[0] for item in request.session.items}
    d = tmp_path_factory.mktemp("background")
    runs = {}
    if "test_sigint_and_sigterm_save_checkpoint_exit_130_and_resume_matches" in selected:
        (d / "latro_signal_run.py").write_text(SIGNAL_SCRIPT)
        for signum in (signal.SIGINT, signal.SIGTERM):
            out = d / signum.name
            runs[signum] = (out, _popen([d / "latro_signal_run.py", tok_dir, *SIGNAL_ARGS, "--out-dir", out]))
    (d / "latro_ddp_run.py").write_text(DDP_SCRIPT)
    for test, name, kw, bug in (("test_two_gloo_processes_match_one_process", "ddp", DDP_KW, ""),
                                ("test_the_equivalence_checks_catch_ranks_that_skip_the_all_reduce", "ddp_bug",
                                 {**DDP_KW, "steps": 1}, "skip_all_reduce")):
        if test in selected:
            out, port = d / name, str(_free_port())
            cfg_json = json.dumps(vars(make_cfg(out, **kw)))
            runs[name] = (out, [_popen([d / "latro_ddp_run.py", tok_dir, cfg_json, bug], MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                       LOCAL_WORLD_SIZE="2")
                                for r in range(2)])
    if "test_fsdp2_sharded_processes_match_one_process" in selected:
        (d / "latro_fsdp_run.py").write_text(FSDP_SCRIPT)
        out, port = d / "fsdp", str(_free_port())
        cfg_json = json.dumps(vars(make_cfg(out, **FSDP_KW)))
        runs["fsdp"] = (out, [_popen([d / "latro_fsdp_run.py", tok_dir, cfg_json], MASTER_ADDR="127.0.0.1",
                                     MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                     LOCAL_WORLD_SIZE="2", **fsdp_launch_env())
                              for r in range(2)])
    yield runs
    for _, procs in runs.values():
        for p in (procs if isinstance(procs, list) else [procs]):
            if p.poll() is None:
                p.kill()
                p.communicate()


# ----------------------------------------------------------------------------- a LaTRO run

def test_latro_run_writes_metrics_config_checkpoint_final(tok, task, tmp_path):
    cfg = make_cfg(tmp_path)
    tr, last = run(cfg, tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for f in METRIC_FIELDS:
            assert f in r and isinstance(r[f], float) and r[f] == r[f], f
        assert r["samples"] == 4.0                       # 2 questions x K=2 per step
        assert r["rationale_len"] <= 6 and 0 <= r["frac_truncated"] <= 1
        assert r["logp_y_mean"] < 0 and r["answer_loss"] > 0
    assert last["step"] == 3 and last["lr"] == 0.0      # linear decay to 0 at the last step
    assert json.loads((tmp_path / "config.json").read_text())["k"] == 2
    assert checkpoint_step(tmp_path / "checkpoint") == 3
    for f in ("model/config.json", "model/tokenizer.json", "state.pt", "trainer.json"):
        assert (tmp_path / "checkpoint" / f).exists(), f
    assert (tmp_path / "final" / "config.json").exists() and (tmp_path / "final" / "tokenizer.json").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))
    # the saved final weights are the trained ones
    assert_same_weights(weights(tmp_path / "final"),
                        {k: v for k, v in tr.lm.state_dict().items() if k in weights(tmp_path / "final")})


def test_question_indices_cover_each_epoch_once():
    per_epoch = [i for s in range(4) for i in question_indices(s, 8, 2, seed=3)]
    assert sorted(per_epoch) == list(range(8))
    assert question_indices(5, 8, 2, seed=3) == question_indices(5, 8, 2, seed=3)
    assert question_indices(0, 8, 2, seed=3) != question_indices(0, 8, 2, seed=4)


# ----------------------------------------------------------------------------- resume

@pytest.mark.parametrize("variant", ["passed_in", "by_name", "lora"])
def test_resume_is_exact(variant, tok, task, tmp_path, monkeypatch):
    """4 steps in one go == 2 steps, stop (as on SIGTERM), resume to 4: same weights, same metrics."""
    kw = dict(steps=4, save_every=100, truncation="none", lr=1e-3)
    if variant == "lora":
        kw.update(lora=True, lora_r=4, lora_alpha=8, lr=1e-2)
    model_dir = None
    if variant == "by_name":
        model_dir = tmp_path / "start"
        m, _ = tiny_model(tok)
        m.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        kw["model"] = str(model_dir)

    def new_trainer(out, **extra):
        c = make_cfg(out, **kw, **extra)
        if variant == "by_name":
            return Trainer(c, task=task)
        return Trainer(c, model=tiny_model(tok)[0], tokenizer=tok, task=task)

    full = new_trainer(tmp_path / "full")
    full.train()

    with monkeypatch.context() as mp:
        stop_after(mp, 2)
        with pytest.raises(TrainingInterrupted, match="after step 2"):
            new_trainer(tmp_path / "split").train()
    assert checkpoint_step(tmp_path / "split" / "checkpoint") == 2
    assert len(metrics(tmp_path / "split")) == 2
    resumed = new_trainer(tmp_path / "split", resume=True)
    assert resumed.step == 2
    saved = torch.load(tmp_path / "split" / "checkpoint" / "state.pt", weights_only=False)
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])        # the RNG continues too
    resumed.train()

    # one process, the same kernels and the same order of every sum: bitwise equal
    assert_same_weights(weights(tmp_path / "full" / "final"), weights(tmp_path / "split" / "final"))
    assert no_timing(metrics(tmp_path / "full")) == no_timing(metrics(tmp_path / "split"))
    if variant != "lora":
        # the run did train (the weights moved), and after the resume π0 is still the starting
        # model, not the checkpoint's weights (the by-name run saved the same seeded tiny model)
        start = tiny_model(tok)[0].state_dict()
        end = weights(tmp_path / "full" / "final")
        assert any(not torch.equal(end[k], start[k]) for k in end)
        for k, v in resumed.ref.lm.state_dict().items():
            assert torch.equal(v, start[k]), k


def test_resume_without_checkpoint_starts_fresh(tok, task, tmp_path):
    tr = Trainer(make_cfg(tmp_path, resume=True, steps=1), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    assert tr.step == 0


def test_resume_of_finished_run_does_nothing_more(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2), tok, task)
    before = metrics(tmp_path)
    tr, _ = run(make_cfg(tmp_path, steps=2, resume=True), tok, task)
    assert tr.step == 2 and metrics(tmp_path) == before


# ----------------------------------------------------------------------------- checkpoints

def _opt_sched(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_save_checkpoint_is_atomic(tok, tmp_path, monkeypatch):
    model, _ = tiny_model(tok)
    opt, sched = _opt_sched(model)
    ck = tmp_path / "checkpoint"
    cfg = make_cfg(tmp_path)
    save_checkpoint(ck, model, opt.state_dict(), sched, 1, cfg, tokenizer=tok)
    assert checkpoint_step(ck) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]      # no .tmp / .old left
    saved = weights(ck / "model")

    # a crash in the middle of the next save: the step-1 checkpoint is intact and still read
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(ck, model, opt.state_dict(), sched, 2, cfg, tokenizer=tok)
    monkeypatch.undo()
    assert checkpoint_step(ck) == 1
    assert_same_weights(weights(ck / "model"), saved)
    assert (ck / "state.pt").exists()
    assert not (tmp_path / "checkpoint.tmp").exists()

    # a kill between the two renames (only checkpoint.old left): recovered on read
    os.replace(ck, tmp_path / "checkpoint.old")
    assert checkpoint_step(ck) == 1 and (ck / "trainer.json").exists()
    # and a complete new .tmp with no checkpoint (kill after old was removed): the newer one wins
    save_checkpoint(ck, model, opt.state_dict(), sched, 2, cfg)
    os.replace(ck, tmp_path / "checkpoint.tmp")
    assert checkpoint_step(ck) == 2
    # an incomplete .tmp (no trainer.json) is never taken for a checkpoint
    (tmp_path / "x.tmp").mkdir()
    assert checkpoint_step(tmp_path / "x") is None


# ----------------------------------------------------------------------------- numerical guards

def test_nan_loss_raises_and_keeps_last_good_checkpoint(tok, task, tmp_path, monkeypatch):
    real = methods_mod.latro_update
    calls = {"n": 0}

    def nan_on_step3(*args, **kw):
        calls["n"] += 1
        loss, terms = real(*args, **kw)
        return (loss * float("nan") if calls["n"] >= 3 else loss), terms   # one micro-batch per step

    monkeypatch.setattr(methods_mod, "latro_update", nan_on_step3)
    cfg = make_cfg(tmp_path, steps=4, save_every=2)
    with pytest.raises(NumericalError) as e:
        run(cfg, tok, task)
    assert "step 3" in str(e.value) and "loss" in str(e.value)
    assert checkpoint_step(tmp_path / "checkpoint") == 2
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "checkpoint" / "model").values())
    assert len(metrics(tmp_path)) == 2 and not (tmp_path / "final").exists()


def test_nan_parameter_raises_numerical_error(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    with pytest.raises(NumericalError, match=r"non-finite .* at step 1"):
        run(make_cfg(tmp_path, steps=1), tok, task, model)


def test_inf_gradient_stops_before_the_optimizer_step(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    w = model.model.layers[0].mlp.down_proj.weight
    w.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NumericalError, match="non-finite grad_norm at step 1"):
        run(make_cfg(tmp_path, steps=1), tok, task, model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k            # nothing written into the weights


# ----------------------------------------------------------------------------- SFT and RFT

def test_sft_two_steps(tok, task, tmp_path):
    tr, last = run(make_cfg(tmp_path, method="sft", steps=2, micro_batch=1), tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["sft_loss"] > 0 and r["samples"] == 2.0 for r in rows)
    assert (tmp_path / "final" / "config.json").exists()


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")   # no optimizer step: nothing kept
def test_rft_two_steps_skips_update_without_correct_samples(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(make_cfg(tmp_path, method="rft", steps=2), tok, task, model)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kept"] == 0 and "sft_loss" not in r for r in rows)     # random model: nothing right
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rft_two_steps_trains_on_kept_samples(tok, task, tmp_path, monkeypatch):
    monkeypatch.setattr(type(task), "is_correct", lambda self, pred, ex: True)
    model, _ = tiny_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(make_cfg(tmp_path, method="rft", steps=2, lr=1e-3), tok, task, model)
    rows = metrics(tmp_path)
    assert all(r["kept"] == 4 and r["sft_loss"] > 0 for r in rows)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- LoRA

def test_lora_trains_only_the_adapter_and_pi0_is_the_disabled_adapter(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    tr, _ = run(make_cfg(tmp_path, lora=True, lora_r=4, lora_alpha=8, steps=2, lr=1e-2, truncation="none"),
                tok, task, model)
    assert tr.ref is None                                               # no second copy of the model
    trainable = [n for n, p in tr.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # the base weights did not move; the adapter did
    sd = tr.lm.get_base_model().state_dict()
    for k, v in base_before.items():
        key = next(n for n in sd if n.replace(".base_layer", "") == k)
        assert torch.equal(sd[key], v), k
    assert any(v.abs().sum() > 0 for n, v in tr.lm.state_dict().items() if "lora_B" in n)
    rows = metrics(tmp_path)
    assert rows[0]["kl_mean"] == 0.0            # LoRA B starts at zero: πθ = π0 exactly at step 1
    assert rows[1]["kl_mean"] != 0.0            # after one update the adapter-off π0 differs
    assert (tmp_path / "final" / "adapter_config.json").exists()


# ----------------------------------------------------------------------------- processes

def test_per_question_generators_make_samples_independent_of_batch_mates(tok):
    """sample_rationales with one generator per prompt (the trainer's seeding): a question's K
    rationales are the same whether it is sampled alone or next to other questions (which is what
    makes 1 and N processes sample alike)."""
    from latro_core.rollout import sample_rationales

    model, _ = tiny_model(tok)
    prompts = ["Tom has 3 apples. How many now?", "A longer question: Mia has 12 coins and finds 7 more."]
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 22)]     # noqa: E731
    both = sample_rationales(model, tok, prompts, k=3, max_new_tokens=8, generator=gens())
    for i, p in enumerate(prompts):
        alone = sample_rationales(model, tok, [p], k=3, max_new_tokens=8, generator=[gens()[i]])
        assert both.rationale_ids[3 * i:3 * i + 3] == alone.rationale_ids
    swapped = sample_rationales(model, tok, prompts[::-1], k=3, max_new_tokens=8, generator=gens()[::-1])
    assert swapped.rationale_ids == both.rationale_ids[3:] + both.rationale_ids[:3]
    with pytest.raises(ValueError, match="one per prompt"):
        sample_rationales(model, tok, prompts, k=3, max_new_tokens=8, generator=gens()[:1])


def test_questions_per_step_must_divide_among_processes():
    with pytest.raises(ConfigError, match=r"questions_per_step=3 .* 2 processes"):
        TrainConfig(questions_per_step=3).validate(world_size=2)
    TrainConfig(questions_per_step=4).validate(world_size=2)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_same_rationales_and_metrics(tok, task, tmp_path, monkeypatch):
    """Same seed -> the same sampled rationales and identical metrics on CPU (docs/determinism.md
    lists what is not bit-reproducible on GPU). A different seed samples differently."""
    real = trainer_mod.sample_rationales
    seen = []

    def record(*a, **k):
        r = real(*a, **k)
        seen.append([list(z) for z in r.rationale_ids])
        return r

    monkeypatch.setattr(trainer_mod, "sample_rationales", record)
    texts = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        seen.clear()
        run(make_cfg(tmp_path / name, seed=seed, steps=2, truncation="none", lr=1e-3), tok, task,
            tiny_model(tok)[0])
        texts[name] = list(seen)
    assert texts["a"] == texts["b"] and len(texts["a"]) == 2 and len(texts["a"][0]) == 4   # 2 steps, 2 x K
    assert no_timing(metrics(tmp_path / "a")) == no_timing(metrics(tmp_path / "b"))
    assert_same_weights(weights(tmp_path / "a" / "final"), weights(tmp_path / "b" / "final"))   # bitwise: same process
    assert texts["c"] != texts["a"]


def test_checkpoint_weights_must_fit_the_model(tok, tmp_path):
    small, _ = tiny_model(tok, hidden_size=32, heads=2)
    small.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="does not match the model .*size mismatch"):
        trainer_mod._load_weights(tiny_model(tok)[0], tmp_path / "m")
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        trainer_mod._load_weights(tiny_model(tok)[0], tmp_path)


def test_passed_in_model_needs_its_tokenizer(tok, task, tmp_path):
    with pytest.raises(ConfigError, match="tokenizer"):
        Trainer(make_cfg(tmp_path), model=tiny_model(tok)[0], task=task)


# ----------------------------------------------------------------------------- accelerate configs

@pytest.mark.parametrize("name,kind", [("accelerate_ddp", "MULTI_GPU"), ("accelerate_fsdp", "FSDP"),
                                       ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_load_and_show_the_launch_command(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    path = ROOT / "configs" / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type.value == kind
    header = path.read_text().split("compute_environment")[0]
    assert f"accelerate launch --config_file configs/{name}.yaml -m latro_core.cli train" in header
    if kind == "FSDP":
        assert int(cfg.fsdp_config["fsdp_version"]) == 2 and cfg.mixed_precision == "bf16"
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 3


def test_sharding_finds_the_decoder_layers_and_refuses_a_model_without_them(tok):
    """FSDP2 shards each decoder layer, named by the model's _no_split_modules; a model naming none
    is a ConfigError, not a silently unsharded run."""
    from latro_core.sharding import layer_classes

    model = tiny_model(tok)[0]
    assert {c.__name__ for c in layer_classes(model)} == {"LlamaDecoderLayer"}
    model._no_split_modules = []
    with pytest.raises(ConfigError, match="names no decoder layer class"):
        layer_classes(model)


def test_bf16_mixed_precision_keeps_fp32_weights_and_scores_pi0_in_the_same_precision(tok, task, tmp_path):
    """mixed_precision="bf16" without accelerate launch: the scorer computes in bf16 autocast (its
    log-probabilities differ from fp32's), the weights stay fp32, and π0 is scored under the same
    autocast, so at the first step (πθ = π0) the KL term is exactly 0."""
    fp32 = metrics(run(make_cfg(tmp_path / "fp32", steps=1), tok, task, tiny_model(tok)[0])[0].out)[0]
    tr, _ = run(make_cfg(tmp_path / "bf16", steps=1, mixed_precision="bf16"), tok, task, tiny_model(tok)[0])
    bf16 = metrics(tmp_path / "bf16")[0]
    assert tr.acc.mixed_precision == "bf16"
    assert {p.dtype for p in tr.lm.parameters()} == {torch.float32}
    assert bf16["kl_mean"] == 0.0 and math.isfinite(bf16["reward_mean"])
    assert bf16["logp_y_mean"] != fp32["logp_y_mean"]
    with pytest.raises(ConfigError, match="fp16 would need a loss scaler"):
        make_cfg(tmp_path, mixed_precision="fp16").validate()
    with pytest.raises(ConfigError, match="fp16 would need a loss scaler"):    # before accelerate sees it
        Trainer(make_cfg(tmp_path / "fp8", mixed_precision="fp8"), model=tiny_model(tok)[0], tokenizer=tok, task=task)


def test_sharding_asked_for_where_it_cannot_run_is_a_config_error(tok, task, tmp_path, monkeypatch):
    """--shard in one plain process, or an accelerate FSDP1 config: a ConfigError saying what to do."""
    with pytest.raises(ConfigError, match="needs several processes"):
        Trainer(make_cfg(tmp_path / "a", shard=True), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    with pytest.raises(ConfigError, match="RFT keeps a different number"):
        Trainer(make_cfg(tmp_path / "r", shard=True, method="rft"), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="set fsdp_version: 2"):
        Trainer(make_cfg(tmp_path / "b"), model=tiny_model(tok)[0], tokenizer=tok, task=task)


# ----------------------------------------------------------------------------- collected subprocess runs

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


def test_two_gloo_processes_match_one_process(background, tok_dir, task, tmp_path, monkeypatch):
    """Same global batch (2 questions) on 1 process and on 2 (gloo, one question each): rationales
    are seeded per question, gradients averaged over the global batch, the LR schedule steps once
    per optimizer step, so both take the same optimizer steps: the first step's gradients agree to
    float rounding, the weights after AdamW within Adam's per-element bound (tests/equivalence.py)."""
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tok_dir)
    one = tmp_path / "one"
    one.mkdir()
    save_first_gradients(one / "grads.pt", monkeypatch)
    run(make_cfg(one, **DDP_KW), tok2, task, tiny_model(tok2)[0])
    two, procs = background["ddp"]
    outs = [p.communicate(timeout=170) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert_gradients_close(torch.load(one / "grads.pt"), torch.load(two / "grads.pt"))
    print("weights after AdamW:", assert_adam_weights_close(weights(one / "final"), weights(two / "final"),
                                                         lr=DDP_KW["lr"], steps=DDP_KW["steps"]))
    m1, m2 = no_timing(metrics(one)), no_timing(metrics(two))
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        for k in ("reward_mean", "reward_std", "logp_y_mean", "kl_mean", "adv_std", "rationale_len",
                  "frac_truncated", "policy_loss", "answer_loss", "grad_norm", "samples", "lr"):
            # each process pads its own micro-batch, so per-sample log-probs (sums of magnitude ~86
            # here) differ in fp32 by up to ~2e-5; small spreads (reward_std) inherit that absolute
            # error, and policy_loss = -mean(A·log π(z|x)) cancels terms of size |A|·86 ≈ 10 down to
            # ~0.03, so there the same noise is ~1e-3 (per-sample log-probs agree, checked by hand)
            tol = 2e-3 if k == "policy_loss" else 1e-4
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=tol), k


def test_the_equivalence_checks_catch_ranks_that_skip_the_all_reduce(background, tok_dir, task, tmp_path, monkeypatch):
    """The planted bug: two gloo ranks that never all-reduce their gradients (each steps on its own
    question). The same checks as the test above fail on it, on the gradients and on the weights."""
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tok_dir)
    one = tmp_path / "one"
    one.mkdir()
    save_first_gradients(one / "grads.pt", monkeypatch)
    run(make_cfg(one, **{**DDP_KW, "steps": 1}), tok2, task, tiny_model(tok2)[0])
    bug, procs = background["ddp_bug"]
    outs = [p.communicate(timeout=170) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    with pytest.raises(AssertionError, match="gradients differ"):
        assert_gradients_close(torch.load(one / "grads.pt"), torch.load(bug / "grads.pt"))
    with pytest.raises(AssertionError, match="more than summation order can explain") as caught:
        assert_adam_weights_close(weights(one / "final"), weights(bug / "final"), lr=DDP_KW["lr"], steps=1)
    print(caught.value)


def test_fsdp2_sharded_processes_match_one_process(background, tok_dir, task, tmp_path, monkeypatch):
    """The shipped FSDP config on 2 CPU processes (gloo): each holds half of every weight, samples
    with the layers gathered, and after 2 steps, a checkpoint and a resumed 3rd step has the first
    step's gradients (to float rounding), the weights (within Adam's bound), metrics and gradient
    norm of one unsharded process doing the same (tolerances as the DDP test)."""
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tok_dir)
    one = tmp_path / "one"
    one.mkdir()
    save_first_gradients(one / "grads.pt", monkeypatch)
    for steps, resume in ((2, False), (3, True)):
        run(make_cfg(one, **{**FSDP_KW, "steps": steps, "resume": resume}), tok2, task, tiny_model(tok2)[0])
    two, procs = background["fsdp"]
    outs = [p.communicate(timeout=170) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert json.loads((two / "checkpoint" / "trainer.json").read_text())["step"] == 3
    assert_gradients_close(torch.load(one / "grads.pt"), torch.load(two / "grads.pt"))
    print("weights after AdamW:", assert_adam_weights_close(weights(one / "final"), weights(two / "final"),
                                                         lr=FSDP_KW["lr"], steps=FSDP_KW["steps"]))
    m1, m2 = no_timing(metrics(one)), no_timing(metrics(two))
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2, 3]
    for a, b in zip(m1, m2):
        for k in ("reward_mean", "reward_std", "logp_y_mean", "kl_mean", "adv_std", "policy_loss",
                  "answer_loss", "grad_norm", "lr"):
            # grad_norm: the shards' gradients are sums in another order than one process's (~2e-5 relative)
            rel = 1e-4 if k == "grad_norm" else 1e-5
            assert a[k] == pytest.approx(b[k], rel=rel, abs=2e-3 if k == "policy_loss" else 1e-4), k


def test_batch_mean_penalty_does_not_depend_on_micro_batch(tok, task, tmp_path):
    """The "batch_mean" truncation rule uses the mean reward of the whole step: one micro-batch
    of 4 samples and two of 2 give the same metrics and weights (the tiny model cuts most
    rationales at L = 6, so the penalty is in play)."""
    runs = {}
    for mb in (4, 2):
        cfg = make_cfg(tmp_path / f"mb{mb}", micro_batch=mb, steps=2, truncation="batch_mean", lr=1e-3, save_every=100)
        run(cfg, tok, task, tiny_model(tok)[0])
        runs[mb] = metrics(tmp_path / f"mb{mb}")
    assert all(r["frac_truncated"] > 0 for r in runs[4])
    for a, b in zip(runs[4], runs[2]):
        for key in ("reward_mean", "reward_std", "adv_std", "policy_loss", "answer_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    # other micro-batches pad to other lengths and sum the loss in another order: AdamW's bound
    assert_adam_weights_close(weights(tmp_path / "mb4" / "final"), weights(tmp_path / "mb2" / "final"), lr=1e-3, steps=2)


def test_gradient_checkpointing_same_training(tok, task, tmp_path):
    """Activation checkpointing only trades memory for time: same metrics and weights."""
    for name, gc in (("plain", False), ("ckpt", True)):
        tr, _ = run(make_cfg(tmp_path / name, steps=2, lr=1e-3, gradient_checkpointing=gc, save_every=100), tok,
                    task, tiny_model(tok)[0])
        lm = tr.lm     # transformers >= 5: is_activation_checkpointing (is_gradient_checkpointing is deprecated)
        assert (lm.is_activation_checkpointing if hasattr(lm, "is_activation_checkpointing") else lm.is_gradient_checkpointing) is gc
    for a, b in zip(metrics(tmp_path / "plain"), metrics(tmp_path / "ckpt")):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    # the plain run shares each question's prompt among its K samples, the checkpointed one cannot (HF
    # drops the KV cache under checkpointing): the same sums in another order, so AdamW's bound
    # (tests/equivalence.py); a wrong gradient would move most weights by ~lr and fail it.
    assert_adam_weights_close(weights(tmp_path / "plain" / "final"), weights(tmp_path / "ckpt" / "final"), lr=1e-3, steps=2)


# ----------------------------------------------------------------------------- run folders and resumes

def test_a_new_run_refuses_a_folder_holding_a_run_and_overwrite_starts_over(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2), tok, task)
    before = metrics(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        run(make_cfg(tmp_path, steps=1), tok, task)
    assert metrics(tmp_path) == before and (tmp_path / "final").exists()     # nothing was touched
    run(make_cfg(tmp_path, steps=1, overwrite=True), tok, task)
    assert [m["step"] for m in metrics(tmp_path)] == [1]
    assert checkpoint_step(tmp_path / "checkpoint") == 1


def test_resume_refuses_changed_settings_and_records_the_allowed_ones(tok, task, tmp_path):
    run(make_cfg(tmp_path, steps=2, lr=1e-3), tok, task)
    with pytest.raises(ConfigError, match=r"k: 2 in the checkpoint, 4 now.*lr: 0.001 in the checkpoint, 0.01 now"
                                          r".*--change k,lr"):
        run(make_cfg(tmp_path, steps=3, lr=1e-2, k=4, micro_batch=4, resume=True), tok, task)
    with pytest.raises(ConfigError, match="unknown settings"):
        run(make_cfg(tmp_path, steps=3, lr=1e-2, resume=True, change="lr,learning_rate"), tok, task)
    # the step budget may grow without asking; a named change is allowed and recorded with its step
    run(make_cfg(tmp_path, steps=3, lr=1e-2, resume=True, change="lr"), tok, task)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["lr"] == 1e-2 and cfg["steps"] == 3
    assert cfg["resumes"] == [{"step": 2, "changed": {"lr": [1e-3, 1e-2]}}]
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3]


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tok, task, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        Trainer(make_cfg(tmp_path / "file" / "run"), model=tiny_model(tok)[0], tokenizer=tok, task=task)


@pytest.mark.parametrize("damage", ["state.pt", "weights", "metrics line"])
def test_a_damaged_file_read_back_on_resume_is_one_clear_error(tok, task, tmp_path, damage):
    from latro_core.errors import CheckpointError

    run(make_cfg(tmp_path, steps=2, save_every=1), tok, task)
    if damage == "state.pt":
        f = tmp_path / "checkpoint" / "state.pt"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])          # a truncated file
        match = r"checkpoint/state.pt is missing or damaged"
    elif damage == "weights":
        f = next((tmp_path / "checkpoint" / "model").glob("*.safetensors"))
        f.write_bytes(f.read_bytes()[:100])
        match = r"model.safetensors is missing or damaged"
    else:
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        (tmp_path / "metrics.jsonl").write_text("\n".join(["{not json"] + lines) + "\n")
        match = r"metrics.jsonl, line 1, is damaged"
    with pytest.raises(CheckpointError, match=match):
        run(make_cfg(tmp_path, steps=3, save_every=1, resume=True), tok, task)


def test_a_failed_save_keeps_the_last_good_checkpoint(tok, task, tmp_path, monkeypatch):
    from latro_core.errors import WriteError

    real_save, calls = torch.save, {"n": 0}

    def save_that_fills_the_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:                                          # the second checkpoint
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(trainer_mod.torch, "save", save_that_fills_the_disk)
    with pytest.raises(WriteError, match="No space left on device.*the checkpoint of step 1 in .* is intact"):
        run(make_cfg(tmp_path, steps=3, save_every=1), tok, task)
    assert checkpoint_step(tmp_path / "checkpoint") == 1
    assert not (tmp_path / "checkpoint.tmp").exists()
    monkeypatch.setattr(trainer_mod.torch, "save", real_save)
    run(make_cfg(tmp_path, steps=3, save_every=1, resume=True), tok, task)     # and the run goes on
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3]


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
        proc = _popen(args)
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


def test_tracker_tensorboard_writes_an_event_file_holding_the_metrics(tok, task, tmp_path):
    import struct

    from tensorboardX.proto import event_pb2

    run(make_cfg(tmp_path, steps=2, tracker="tensorboard"), tok, task)
    files = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file under out_dir/tensorboard"
    data, seen = files[0].read_bytes(), {}
    while data:                                   # TFRecord: length, crc, Event proto, crc
        (n,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12:12 + n])
        data = data[12 + n + 4:]
        for v in event.summary.value:
            seen.setdefault(v.tag, []).append((event.step, v.simple_value))
    logged = metrics(tmp_path)
    assert [s for s, _ in seen["reward_mean"]] == [1, 2]
    assert [round(v, 4) for _, v in seen["reward_mean"]] == [round(m["reward_mean"], 4) for m in logged]


def test_an_unknown_tracker_is_a_config_error_naming_the_known_ones(tok, task, tmp_path):
    with pytest.raises(ConfigError, match=r"tracker='tensorbord' is not one of accelerate's trackers: .*tensorboard"):
        run(make_cfg(tmp_path, tracker="tensorbord"), tok, task)


# ----------------------------------------------------------------------------- the reward family

@pytest.mark.parametrize("reward", ["probability", "verifier", "rlpr"])
def test_latro_trains_with_another_reward_of_the_family(tok, task, tmp_path, reward):
    """--reward probability (VeriFree's π(y|x⊕z)), verifier (the checker's 0/1) and rlpr (debiased mean
    token probability) run through the same sampling, scoring and update; their rewards lie in [0, 1]."""
    run(make_cfg(tmp_path, steps=2, reward=reward, truncation="none", beta=0.0, save_every=100), tok, task)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and all(r["samples"] == 4.0 for r in rows)
    for r in rows:
        assert 0.0 <= r["reward_mean"] <= 1.0 and math.isfinite(r["policy_loss"]), r
        # the verifier and RLPR have no direct term; the probability reward's is Σ π(y|x⊕z)·log π(y|x⊕z) ≠ 0
        assert (r["answer_loss"] == 0.0) == (reward != "probability"), r["answer_loss"]


def test_a_nonnegative_reward_refuses_the_batch_mean_truncation_rule(tok, task, tmp_path):
    with pytest.raises(ConfigError, match="penalises only negative rewards.*--truncation none"):
        Trainer(make_cfg(tmp_path, reward="probability"), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    with pytest.raises(ConfigError, match="reward 'likelihood' is not one of latro, probability, verifier, rlpr"):
        make_cfg(tmp_path, reward="likelihood").validate()


# ----------------------------------------------------------------------------- π0 set apart from the start

def test_a_reference_model_anchors_the_kl_elsewhere_than_the_starting_model(tmp_path, tok, task):
    # without it π0 is a copy of the starting model, so the first step's KL estimate is 0; with the
    # reference model set to other weights, π0 differs from πθ from the first step on
    from latro_core.models import save_model

    base = tiny_model(tok, seed=1)[0]
    save_model(base, tok, tmp_path / "base")
    plain, _ = run(make_cfg(tmp_path / "plain", steps=1, beta=0.5), tok, task)
    anchored, _ = run(make_cfg(tmp_path / "anchored", steps=1, beta=0.5, reference_model=str(tmp_path / "base")),
                      tok, task)
    assert metrics(tmp_path / "plain")[0]["kl_mean"] == 0.0
    assert abs(metrics(tmp_path / "anchored")[0]["kl_mean"]) > 1e-3
    with pytest.raises(ConfigError, match="with LoRA π0 is the same weights"):
        make_cfg(tmp_path / "x", reference_model="embedded", lora=True).validate()
    with pytest.raises(ConfigError, match="SFT has no π0 to set"):
        make_cfg(tmp_path / "x", method="sft", reference_model="embedded").validate()


def test_take_step_is_one_step_of_the_loop_recording_nothing(tmp_path, tok, task):
    # the loop notebook 04 runs on the page: the same metrics as train() writes, step by step
    _, _ = run(make_cfg(tmp_path / "loop", steps=2), tok, task)
    tr = Trainer(make_cfg(tmp_path / "page", steps=2), model=tiny_model(tok)[0], tokenizer=tok, task=task)
    by_hand = [tr.take_step() for _ in range(2)]
    tr.release()
    assert not (tmp_path / "page" / "metrics.jsonl").exists()
    assert no_timing(by_hand) == no_timing(metrics(tmp_path / "loop"))
