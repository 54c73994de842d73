"""What only a CUDA GPU can show: training on the device in bf16 autocast, scoring on the GPU equal
to the CPU's, sampling with per-question generators on the device. Skipped without a GPU;
``scripts/tools/gpu_check.sh`` runs them (its ``--dry-run`` on a CPU sees them skipped)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from latro_core.logprobs import pack, sequence_logprobs
from latro_core.models import prepare_tokenizer, tiny_model
from latro_core.rollout import sample_rationales
from latro_core.tasks import load_task
from latro_core.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/tools/gpu_check.sh)")


@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return prepare_tokenizer(smol_tokenizer)


def test_latro_trains_on_the_gpu_in_bf16_autocast_with_fp32_weights(tok, tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), steps=2, k=4, questions_per_step=2, max_new_tokens=16, micro_batch=8,
                      save_every=100, device="cuda", mixed_precision="bf16", progress=False, lr=1e-3)
    tr = Trainer(cfg, model=tiny_model(tok)[0], tokenizer=tok, task=load_task("arithmetic", "train", n=16))
    tr.train()
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert tr.acc.device.type == "cuda" and {p.device.type for p in tr.policy.lm.parameters()} == {"cuda"}
    assert {p.dtype for p in tr.policy.lm.parameters()} == {torch.float32}
    assert rows[0]["kl_mean"] == 0.0                  # π0 scored under the same autocast as πθ
    assert all(math.isfinite(r["reward_mean"]) and math.isfinite(r["grad_norm"]) for r in rows)


def test_scores_on_the_gpu_equal_the_cpus(tok):
    model = tiny_model(tok)[0]
    batch = pack([[1, 2, 3, 4]] * 3, [[5, 6, 7], [8, 9], [10]], [[11, 12]] * 3, tok.pad_token_id)
    cpu = sequence_logprobs(model, batch)
    gpu = sequence_logprobs(model.cuda(), batch.to("cuda"))
    # fp32 sums of <= 3 tokens (|sum| <= ~33, ulp 3.8e-6), CUDA kernels vs CPU ones (TF32 is off: torch's default,
    # set nowhere here): a few ulps; allowed 1e-4 + 1e-4·|sum| >= 1e-3, and a token scored wrongly is off by ~10
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-4)


def test_sampling_on_the_gpu_takes_per_question_generators_and_is_reproducible(tok):
    model = tiny_model(tok)[0].cuda()
    prompts = ["What is 2 + 3?", "What is 7 - 4?"]

    def draw():
        gens = [torch.Generator("cuda").manual_seed(q) for q in range(2)]
        return sample_rationales(model, tok, prompts, k=3, max_new_tokens=8, generator=gens).rationale_ids
    assert draw() == draw()


def test_latros_decoder_gives_transformers_logits_and_tokens_on_the_gpu(tok):
    """latro's own decode step (latro_core/decoder.py) on CUDA: its logits equal transformers' on a
    padded batch, and sampling draws the same tokens with either decoder (GPU kernels: fp32 tolerance)."""
    from test_decoder import PROMPTS, _side_by_side

    model = tiny_model(tok)[0].to("cuda")
    assert _side_by_side(model, tok) < 1e-3
    runs = {}
    for decoder in ("transformers", "latro"):
        gens = [torch.Generator("cuda").manual_seed(i) for i in range(len(PROMPTS))]
        runs[decoder] = sample_rationales(model.eval(), tok, PROMPTS, k=2, max_new_tokens=12, generator=gens,
                                          decoder=decoder, stop_strings=None)
    assert runs["latro"].decoder == "latro" and runs["latro"].rationale_ids == runs["transformers"].rationale_ids
