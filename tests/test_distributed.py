"""Tests for several processes and sharding: per-question generators (what makes 1 and N processes sample
alike), the batch dividing among processes, the shipped accelerate configs, FSDP2's layer classes, bf16
mixed precision, sharding asked for where it cannot run, and CPU runs on two gloo ranks (DDP, a planted
missing all-reduce the equivalence checks must catch, FSDP2 with a resume) against one process. The
two-rank subprocesses start when this module's first test does and run alongside the in-process tests;
the tests at the end of this file collect them. Shared helpers: tests/trainer_helpers.py; fixtures:
tests/conftest.py.
"""

import json
import math
import socket

import pytest
import torch

from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core.trainer import TrainConfig, Trainer
from equivalence import assert_adam_weights_close, assert_gradients_close, save_first_gradients
from trainer_helpers import ROOT, make_cfg, metrics, no_timing, popen, run, weights


# ----------------------------------------------------------------------------- subprocess runs

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
    tr.processes.scorer.require_backward_grad_sync = False
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
    w = tr.processes.scorer.lm.model.layers[0].mlp.down_proj.weight
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


@pytest.fixture(scope="module", autouse=True)
def background(request, tok_dir, tmp_path_factory):
    selected = {item.name.split("[")[0] for item in request.session.items}
    d = tmp_path_factory.mktemp("background")
    runs = {}
    (d / "latro_ddp_run.py").write_text(DDP_SCRIPT)
    for test, name, kw, bug in (("test_two_gloo_processes_match_one_process", "ddp", DDP_KW, ""),
                                ("test_the_equivalence_checks_catch_ranks_that_skip_the_all_reduce", "ddp_bug",
                                 {**DDP_KW, "steps": 1}, "skip_all_reduce")):
        if test in selected:
            out, port = d / name, str(_free_port())
            cfg_json = json.dumps(vars(make_cfg(out, **kw)))
            runs[name] = (out, [popen([d / "latro_ddp_run.py", tok_dir, cfg_json, bug], MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                      LOCAL_WORLD_SIZE="2")
                                for r in range(2)])
    if "test_fsdp2_sharded_processes_match_one_process" in selected:
        (d / "latro_fsdp_run.py").write_text(FSDP_SCRIPT)
        out, port = d / "fsdp", str(_free_port())
        cfg_json = json.dumps(vars(make_cfg(out, **FSDP_KW)))
        runs["fsdp"] = (out, [popen([d / "latro_fsdp_run.py", tok_dir, cfg_json], MASTER_ADDR="127.0.0.1",
                                    MASTER_PORT=port, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                    LOCAL_WORLD_SIZE="2", **fsdp_launch_env())
                              for r in range(2)])
    yield runs
    for _, procs in runs.values():
        for p in (procs if isinstance(procs, list) else [procs]):
            if p.poll() is None:
                p.kill()
                p.communicate()


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
    assert {p.dtype for p in tr.policy.lm.parameters()} == {torch.float32}
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

@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
