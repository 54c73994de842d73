"""One full LaTRO update, timed two ways on the same sampled batch: latro_core's ("fast") and the
authors' released trainer's ("literal").

    .venv/bin/python benchmarks/latro_update.py --k 4 --questions 2 --L 128 --repeats 3
    .venv/bin/python benchmarks/latro_update.py --lora --out results/benchmark_latro_update_lora

An update is: sample K rationales for each question, score them, reward -> truncation penalty ->
RLOO advantages -> Eq. 4 loss, backward, grad-norm clip, AdamW step.

fast     latro_core: ``sample_rationales`` as the trainer calls it, all questions in one batch, each
         with its own generator (prompt prefilled once per question, K rows share its cache, finished
         rows leave the batch, no logits kept; ``--also-per-question`` also times one call per
         question), then ONE forward over x⊕z⊕y for log pi(z|x) and log pi(y|x⊕z)
         (``PolicyScorer``: each question's prompt run once for its K samples, vocabulary logits
         only on z/y positions, 256 at a time, only their logsumexp kept), one no-grad pass of
         pi_0 for log pi0(z|x) (frozen copy; under ``--lora`` the adapter switched off);
         ``AdamW(fused=True)`` as the trainer.
literal  the released LaTRO trainer's pattern: ``model.generate(do_sample=True,
         output_scores=True, return_dict_in_generate=True)`` keeping every step's logits (stacked
         to B x L x V) and running until every row hits EOS or L (no stop strings; the stop string
         is cut afterwards); a full second copy of the model as pi_0; FIVE forwards per sample --
         policy on x⊕z, pi_0 on x⊕z, policy on x⊕z⊕y (no grad, rollout), then policy on x⊕z and
         on x⊕z⊕y again with gradients -- each with full-vocab ``logits.log_softmax(-1)`` over the
         whole left-padded sequence and ``output_hidden_states=True``, and ``gc.collect()`` after
         every pass as in that code. Both ways step the same AdamW(fused=True), so their weights
         stay equal update after update.

Same batch: the fast worker samples the rationales; the literal worker scores exactly those (its
generate call replays them token by token through a logits processor, so both ways generate the
same tokens; rows the fast sampler ended at a stop string then sample on freely until EOS/L, as
the released trainer does). Before each update the other workers load the fast worker's weights
(untimed), so every update scores the same batch with the same weights: its loss must agree to
1e-5 of the loss's scale (asserted; see ``loss_scale``), and the grad norms are compared too.

Each way runs in its own worker process (peak RSS is per process: VmHWM, reset before each update);
the two workers take turns update by update, so machine noise hits both alike. The script prints
a table and writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._provenance import (command_line, cuda_peak_mb, device_info, git_commit, machine_info,  # noqa: E402
                                    reset_cuda_peak, spec_peak_flops, sync)
from latro_core.fast_logprobs import _prompt_groups, _split_lm, can_share_prompt  # noqa: E402
from latro_core.logprobs import PolicyScorer, sequence_logprobs  # noqa: E402
from latro_core.models import LoraSpec, add_lora, enable_checkpointing, frozen_copy, load_model  # noqa: E402
from latro_core.objective import micro_batch_loss  # noqa: E402
from latro_core.policy import Policy, SamplingSettings  # noqa: E402
from latro_core.rollout import _eos_ids, sample_rationales  # noqa: E402
from latro_core.tasks import load_task  # noqa: E402

TOL = 1e-5          # loss agreement, relative to the loss's scale (see losses_agree): fast vs fast-ckpt
LITERAL_TOL = 3e-5  # fast vs literal: the literal way's fp32 log_softmax is itself ~1e-5 off (LOG_SOFTMAX_NOTE)
LOG_SOFTMAX_NOTE = (
    "torch's fp32 log_softmax on CPU sums the 49152 exponentials so that the smallest are lost: it underestimates "
    "the log-partition function, by 2.5e-6 per token on average for N(0, 3²) logits and ~1.5e-5 for this model's "
    "(a 128-token log π(z|x) came out 1.9e-3 above float64, ~1e-5 relative); latro_core's head takes logits − "
    "logsumexp (7e-5 from float64 on the same sums; tests/test_logprobs.py checks it). So the literal way is "
    "held to 3e-5 of the loss scale, fast-ckpt (same head as fast) to 1e-5.")
# the norm over every trainable gradient component, each a sum in another order (for literal, also of log_softmax's
# slightly biased log-probs): results/benchmark_latro_update*.json record <= 1.2e-5 relative, 8x inside
GRAD_TOL = 1e-4     # grad-norm agreement (relative), reported; asserted only with --strict-grad


@dataclass
class Hyper:
    """The update's settings (TrainConfig's defaults)."""

    k: int = 4
    L: int = 128
    beta: float = 0.05
    lam: float = 1.0
    truncation: str = "batch_mean"
    gamma: float = 2.0
    lr: float = 1e-5
    grad_clip: float = 1.0
    temperature: float = 1.0


@dataclass
class Batch:
    """One sampled batch, question-major; what the fast sampler produced, shared with the literal way."""

    prompt_ids: list
    rationale_ids: list
    answer_ids: list
    truncated: list
    finish: list
    k: int

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path) -> "Batch":
        return cls(**json.loads(Path(path).read_text()))


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def _step(loss, params, opt, clip) -> float:
    """backward, clip (returns the pre-clip total grad norm), AdamW step, zero_grad."""
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(gn)


# ------------------------------------------------------------------- model FLOPs and machine peaks

def _model_shape(model) -> dict:
    """Parameter counts of a causal LM (through a peft wrapper): ``body`` = the matmul weights a
    token passes through (2-D, not the embedding or the head; norms and biases are not matmuls),
    ``head`` = the vocabulary projection (d x V; tied to the embedding in SmolLM2), ``bytes`` = the
    unique weights in memory."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb, head = base.get_input_embeddings().weight, base.get_output_embeddings().weight
    uniq = {id(q): q for q in base.parameters()}
    body = sum(q.numel() for q in uniq.values() if q.dim() == 2 and q is not emb and q is not head)
    c = base.config
    return {"body": body, "head": head.numel(),
            "layers": c.num_hidden_layers, "d_attn": c.num_attention_heads * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads),
            "bytes": sum(q.numel() * q.element_size() for q in uniq.values())}


def forward_flops(shape: dict, seq_lens: list[int], scored: int, shared: list[int] = ()) -> float:
    """Model FLOPs (matmuls) of one forward over sequences of ``seq_lens`` tokens (no padding),
    projecting ``scored`` positions onto the vocabulary:

        2·P_body per token  +  2·P_head per scored position  +  4·n_layers·d_attn·Σ n(n+1)/2
    (the last term: QKᵀ and attention·V over the causal prefix of every token). ``shared``: lengths
    of prompt prefixes not run again (a sample continuing another's prompt from its KV cache); each
    saves its tokens' 2·P_body·p + 4·n_layers·d_attn·p(p+1)/2."""
    def tokens_and_attention(lens):
        return sum(lens), 4 * shape["layers"] * shape["d_attn"] * sum(n * (n + 1) / 2 for n in lens)
    (n, attn), (n_shared, attn_shared) = tokens_and_attention(seq_lens), tokens_and_attention(shared)
    return 2 * shape["body"] * (n - n_shared) + 2 * shape["head"] * scored + attn - attn_shared


def machine_peaks(repeats: int = 10, device: str = "cpu", dtype: str = "fp32") -> dict:
    """This process's measured peaks on ``device`` in ``dtype``, at the thread count in force: matmul FLOP/s on the model's
    own training shapes (2048 tokens x 576 x 1536 and back; the best of them); the memory read rate
    (one pass over the 49152 x 576 vocabulary projection, ``sum``: what a decode step that reads each
    weight once could reach); and, for comparison, the rate at which torch's default (MKL) matmul
    reads that weight in a decode-shaped product (8 rows). Each is the fastest of ``repeats`` calls:
    on a shared machine the best call is the closest to what the hardware can do. On CUDA also
    ``spec_flops``, the GPU's datasheet peak for ``dtype`` (None when the GPU is not in the table)."""
    def fastest(f):
        for _ in range(2):
            f()
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            best = min(best, time.perf_counter() - t)
        return best
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dt)
    best = 0.0
    for m, k, n in ((2048, 576, 1536), (2048, 1536, 576), (2048, 576, 576)):
        a, b = randn(m, k), randn(k, n)
        best = max(best, 2 * m * k * n / fastest(lambda: a @ b))
    w, x = randn(49152, 576), randn(8, 576)     # nn.Linear's layout
    nbytes = w.numel() * w.element_size()
    return {"matmul_flops": best, "stream_bytes_per_s": nbytes / fastest(w.sum),
            "decode_matmul_bytes_per_s": nbytes / fastest(lambda: torch.nn.functional.linear(x, w)),
            **({"spec_flops": spec_peak_flops(device, dtype)} if str(device).startswith("cuda") else {})}


# ------------------------------------------------------------------------------------ fast way

class FastWay:
    """latro_core's update: the :class:`~latro_core.policy.Policy` LaTRO's step samples and scores with
    (``methods.latro_step`` with one micro-batch), and ``objective.micro_batch_loss``, its stages 3–5."""

    name = "fast"

    def __init__(self, model, tok, hp: Hyper, *, lora: bool, grad_ckpt: bool = False, chunk: int | None = None):
        self.model, self.tok, self.hp, self.lora, self.chunk = model, tok, hp, lora, chunk
        self.dev = next(model.parameters()).device
        self.ref = None if lora or hp.beta == 0 else frozen_copy(model)
        if grad_ckpt:      # not latro_core's default: activation checkpointing of the decoder layers
            enable_checkpointing(model)      # (also makes the embeddings' output require grad, for LoRA)
        self.scorer = PolicyScorer(model)
        self.shape = _model_shape(model)             # for the model-FLOP count of every update
        self.params = _trainable(self.scorer)
        self.opt = torch.optim.AdamW(self.params, lr=hp.lr, weight_decay=0.0, fused=True)     # as the trainer
        self.scorer.train()
        with_ref = hp.beta != 0
        self.policy = Policy(scorer=self.scorer, lm=model, tokenizer=tok, device=self.dev,
                             sampling=SamplingSettings(k=hp.k, max_new_tokens=hp.L, temperature=hp.temperature),
                             reference=PolicyScorer(self.ref) if with_ref and not lora else None,
                             reference_is_adapter_off=with_ref and lora)

    def sample(self, prompts: list[str], answers: list[list[int]], seed: int) -> tuple[Batch, dict]:
        """As ``Policy.sample``: one ``sample_rationales`` call for all questions, each question drawing
        from its own generator (its samples do not depend on its batch-mates)."""
        hp = self.hp
        t0, c0 = time.perf_counter(), time.process_time()
        roll = sample_rationales(self.model, self.tok, prompts, k=hp.k, max_new_tokens=hp.L, temperature=hp.temperature,
                                 generator=[torch.Generator(self.dev).manual_seed(seed * 1009 + q) for q in range(len(prompts))])
        sync(self.dev)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        batch = Batch(roll.prompt_ids, roll.rationale_ids, [answers[i // hp.k] for i in range(len(roll.prompt_ids))],
                      roll.truncated.tolist(), roll.finish, hp.k)
        # decode steps: the longest row, plus the step that sampled its EOS (a stop string ends on its last token)
        steps = max(len(z) + (f == "eos") for z, f in zip(roll.rationale_ids, roll.finish))
        return batch, {"sampling_s": dt, "sampling_cpu_s": dc, "new_tokens": roll.new_tokens, "gen_steps": None,
                       "decode_steps": steps}

    def sample_per_question(self, prompts: list[str], seed: int) -> dict:
        """For comparison only: one ``sample_rationales`` call per question (the trainer before it
        batched the questions with per-question generators), with the same generators."""
        t0, c0 = time.perf_counter(), time.process_time()
        rolls = [sample_rationales(self.model, self.tok, [p], k=self.hp.k, max_new_tokens=self.hp.L,
                                   temperature=self.hp.temperature,
                                   generator=torch.Generator(self.dev).manual_seed(seed * 1009 + q))
                 for q, p in enumerate(prompts)]
        return {"per_question_sampling_s": time.perf_counter() - t0,
                "per_question_sampling_cpu_s": time.process_time() - c0,
                "per_question_new_tokens": sum(r.new_tokens for r in rolls),
                "per_question_rationales": [z for r in rolls for z in r.rationale_ids]}

    def _logprobs(self, model, pb):
        return sequence_logprobs(model, pb) if self.chunk is None else sequence_logprobs(model, pb, self.chunk)

    def _ref_logp_z(self, pb):
        if self.chunk is None:        # the step's call
            return self.policy.reference_logp_z(pb)
        with torch.no_grad():
            if self.lora:
                with self.model.disable_adapter():
                    return self._logprobs(self.model, pb)[0]
            return self._logprobs(self.ref, pb)[0]

    def _pass_flops(self, pb, models) -> list[float]:
        """Model FLOPs of one scoring forward of each of ``models`` over ``pb``: a sample whose prompt
        an earlier sample already ran skips it when the model can share prompts (not under gradient
        checkpointing), grouped as latro_core's forward groups them."""
        scored = pb.z_mask | pb.y_mask
        starts, group, _ = _prompt_groups(pb.input_ids, scored)
        groups = group.tolist()
        repeats = [n for i, (n, g) in enumerate(zip(starts, groups)) if g in groups[:i]]
        lens = pb.attention_mask.sum(1).tolist()
        return [forward_flops(self.shape, lens, int(scored.sum()), repeats if can_share_prompt(_split_lm(m)[0]) else [])
                for m in models]

    def update(self, batch: Batch) -> dict:
        hp = self.hp
        t0, c0 = time.perf_counter(), time.process_time()
        pb = self.policy.pack(batch.prompt_ids, batch.rationale_ids, batch.answer_ids)
        if self.chunk is None:        # the step's call (PolicyScorer uses sequence_logprobs' default chunk)
            logp_z, logp_y = self.policy.score(pb)
        else:
            logp_z, logp_y = sequence_logprobs(self.model, pb, self.chunk)
        ref = self._ref_logp_z(pb) if hp.beta != 0 else None
        loss, terms = micro_batch_loss(logp_z, logp_y, ref, torch.tensor(batch.truncated, device=self.dev), hp.k,
                                       beta=hp.beta, lam=hp.lam, truncation=hp.truncation, gamma=hp.gamma)
        adv = terms["adv"]
        sync(self.dev)
        t1, c1 = time.perf_counter(), time.process_time()
        gn = _step(loss, self.params, self.opt, hp.grad_clip)
        sync(self.dev)
        t2, c2 = time.perf_counter(), time.process_time()
        # model FLOPs: scoring = the policy forward (+ the pi_0 forward); backward = 2x the forward under
        # full fine-tuning (input and weight gradients), 1x under LoRA (input gradients; adapters negligible)
        fwd, *ref_fwd = self._pass_flops(pb, [self.model] + ([] if ref is None else [self.model if self.lora else self.ref]))
        flops = {"scoring": fwd + sum(ref_fwd), "backward": fwd * (1 if self.lora else 2)}
        return {"scoring_s": t1 - t0, "backward_step_s": t2 - t1, "scoring_cpu_s": c1 - c0, "backward_step_cpu_s": c2 - c1,
                "loss": float(loss.detach()), "grad_norm": gn, "reward_mean": float(terms["reward"].mean()), "forwards": 2,
                "loss_scale": loss_scale(adv, logp_z, logp_y, hp.lam), "logp_z": logp_z.detach().tolist(), "logp_y": logp_y.detach().tolist(),
                "model_flops": flops}


# --------------------------------------------------------------------------------- literal way

def _left_pad(seqs: list[list[int]], spans: list[tuple[int, int]]):
    """Left-padded ids (pad positions 0), attention mask, position ids and a mask of the scored span
    (start, end) of each sequence (the released trainer's layout, masks from lengths)."""
    T = max(len(s) for s in seqs)
    B = len(seqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    att = torch.zeros(B, T, dtype=torch.long)
    score = torch.zeros(B, T, dtype=torch.bool)
    for i, (s, (a, b)) in enumerate(zip(seqs, spans)):
        off = T - len(s)
        ids[i, off:] = torch.tensor(s, dtype=torch.long)
        att[i, off:] = 1
        score[i, off + a:off + b] = True
    pos = (att.cumsum(1) - att).clamp(min=0)
    return ids, att, pos, score


def literal_logprob_sum(model, ids, att, pos, score, collect: bool = True) -> torch.Tensor:
    """The released trainer's ``get_logprob_reward``: full forward with hidden states, full-vocab
    log_softmax, gather, masked sum; ``gc.collect()`` after each stage. Returns (B,)."""
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos, return_dict=True,
                   output_hidden_states=True).logits
    _collect(collect)
    logprobs = torch.log_softmax(logits, dim=-1)
    del logits
    _collect(collect)
    token_lp = torch.gather(logprobs[:, :-1], 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    del logprobs
    _collect(collect)
    out = (token_lp * score[:, 1:]).sum(1)
    del token_lp
    _collect(collect)
    return out


def _collect(on: bool) -> None:
    if on:
        gc.collect()


class _Replay:
    """Logits processor forcing row i's token at step t to ``forced[i, t]`` (-1: sample freely)."""

    def __init__(self, forced: torch.Tensor, prompt_len: int):
        self.forced, self.prompt_len = forced, prompt_len

    def __call__(self, input_ids, scores):
        t = input_ids.shape[1] - self.prompt_len
        if t >= self.forced.shape[1]:
            return scores
        f = self.forced[:, t].to(scores.device)
        rows = (f >= 0).nonzero().squeeze(-1)
        if rows.numel():
            scores[rows] = float("-inf")
            scores[rows, f[rows]] = 0.0
        return scores


class LiteralWay:
    """The released LaTRO trainer's update pattern (see module doc), with latro_core's objective."""

    name = "literal"

    def __init__(self, model, tok, hp: Hyper, *, ref, collect: bool = True):
        self.model, self.tok, self.hp, self.ref = model, tok, hp, ref   # ref: a full frozen copy
        self.dev = next(model.parameters()).device
        self.collect = collect                                         # gc.collect() as the released code
        self.params = _trainable(model)
        self.opt = torch.optim.AdamW(self.params, lr=hp.lr, weight_decay=0.0, fused=True)   # as fast: same steps
        self.model.train()

    def sample(self, prompts: list[str], batch: Batch, seed: int) -> dict:
        """generate() on the same prompts (K copies each), every step's scores kept; it replays the
        fast sampler's rationales, then (rows the fast way stopped at a stop string) samples on to EOS/L."""
        from transformers import GenerationConfig, LogitsProcessorList

        hp, tok, model = self.hp, self.tok, self.model
        eos = sorted(_eos_ids(model, tok))
        B = len(batch.prompt_ids)
        forced = torch.full((B, hp.L), -1, dtype=torch.long)
        for i, (z, fin) in enumerate(zip(batch.rationale_ids, batch.finish)):
            forced[i, :len(z)] = torch.tensor(z, dtype=torch.long)
            if fin == "eos" and len(z) < hp.L:
                forced[i, len(z)] = eos[0]
        P = max(len(x) for x in batch.prompt_ids)
        ids, att, _, _ = _left_pad(batch.prompt_ids, [(0, 0)] * B)
        ids, att = ids.masked_fill(att == 0, tok.pad_token_id).to(self.dev), att.to(self.dev)
        cfg = GenerationConfig(max_new_tokens=hp.L, temperature=hp.temperature, top_k=0, top_p=1.0, do_sample=True,
                               pad_token_id=tok.pad_token_id, eos_token_id=eos)
        torch.manual_seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=att, generation_config=cfg,
                                 logits_processor=LogitsProcessorList([_Replay(forced, P)]),
                                 return_dict_in_generate=True, output_scores=True)
            logits = torch.stack(out.scores, 1)                     # (B, steps, V), as the released code
            seqs = out.sequences[:, P:]
            del out, logits
            _collect(self.collect)
        model.train(was)
        sync(self.dev)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        new = seqs != tok.pad_token_id
        for i, z in enumerate(batch.rationale_ids):                  # it generated exactly the fast way's z
            if seqs[i, :len(z)].tolist() != list(z):
                raise AssertionError(f"generate did not replay rationale {i}")
        return {"sampling_s": dt, "sampling_cpu_s": dc, "new_tokens": int(new.sum()), "gen_steps": int(seqs.shape[1])}

    def update(self, batch: Batch) -> dict:
        hp, model = self.hp, self.model
        t0, c0 = time.perf_counter(), time.process_time()
        xs, zs, ys = batch.prompt_ids, batch.rationale_ids, batch.answer_ids
        xz = [t.to(self.dev) for t in _left_pad([x + z for x, z in zip(xs, zs)],
                                                 [(len(x), len(x) + len(z)) for x, z in zip(xs, zs)])]
        xzy = [t.to(self.dev) for t in _left_pad([x + z + y for x, z, y in zip(xs, zs, ys)],
                                                  [(len(x) + len(z), len(x) + len(z) + len(y)) for x, z, y in zip(xs, zs, ys)])]
        c = self.collect
        with torch.no_grad():                                        # rollout: 3 no-grad passes
            roll_z = literal_logprob_sum(model, *xz, collect=c)
            ref_z = literal_logprob_sum(self.ref, *xz, collect=c) if hp.beta != 0 else None
            literal_logprob_sum(model, *xzy, collect=c)                # its values: logp_y below
        _collect(c)
        logp_z = literal_logprob_sum(model, *xz, collect=c)           # training: 2 passes with grad
        logp_y = literal_logprob_sum(model, *xzy, collect=c)
        # the released code takes the rewards from the rollout passes: the same values (same weights and
        # sequences), so the update reads them off the training passes' detached values: the same fp32 kernels
        # on the same inputs (no dropout), so ~equal (the smoke test: bit-equal); sums of <= 128 tokens ~ -200 are
        # allowed 1e-4 + 2e-3, while other sequences or masks would differ by whole tokens (~1-10)
        assert torch.allclose(logp_z.detach(), roll_z, rtol=1e-5, atol=1e-4), "rollout and training passes differ"
        loss, terms = micro_batch_loss(logp_z, logp_y, ref_z, torch.tensor(batch.truncated, device=self.dev), hp.k,
                                       beta=hp.beta, lam=hp.lam, truncation=hp.truncation, gamma=hp.gamma)
        adv = terms["adv"]
        sync(self.dev)
        t1, c1 = time.perf_counter(), time.process_time()
        gn = _step(loss, self.params, self.opt, hp.grad_clip)
        scale, lz, ly = loss_scale(adv, logp_z, logp_y, hp.lam), logp_z.detach().tolist(), logp_y.detach().tolist()
        del logp_z, logp_y
        _collect(c)
        sync(self.dev)
        t2, c2 = time.perf_counter(), time.process_time()
        return {"scoring_s": t1 - t0, "backward_step_s": t2 - t1, "scoring_cpu_s": c1 - c0, "backward_step_cpu_s": c2 - c1,
                "loss": float(loss.detach()), "grad_norm": gn, "reward_mean": float(terms["reward"].mean()), "forwards": 5,
                "loss_scale": scale, "logp_z": lz, "logp_y": ly}


# ------------------------------------------------------------------------------ building ways

def build_way(way: str, model, tok, hp: Hyper, *, lora: bool, seed: int = 0, collect: bool = True,
              lowmem: dict | None = None):
    """A fresh way around ``model`` (plain weights): ``way`` is "fast", "literal", or "fast-ckpt" (fast
    with activation checkpointing, plus ``lowmem``: ``{"chunk": head chunk}``). LoRA is added here,
    seeded, so both ways get the same adapter init; the literal way's pi_0 is always a full frozen
    copy of the plain weights."""
    if way == "literal":
        ref = frozen_copy(model) if hp.beta != 0 else None
        if lora:
            torch.manual_seed(seed)
            model = add_lora(model, LoraSpec())
        return LiteralWay(model, tok, hp, ref=ref, collect=collect)
    if lora:
        torch.manual_seed(seed)
        model = add_lora(model, LoraSpec())
    return FastWay(model, tok, hp, lora=lora, grad_ckpt=way == "fast-ckpt", **((lowmem or {}) if way == "fast-ckpt" else {}))


def questions(n: int, tok, task_name: str = "arithmetic", split: str = "train"):
    """Prompts and answer token ids of the first ``n`` questions."""
    task = load_task(task_name, split)
    exs = [task[i] for i in range(n)]
    prompts = [task.prompt(e, tok) for e in exs]
    answers = [tok(task.answer_target(e, tok), add_special_tokens=False)["input_ids"] for e in exs]
    return prompts, answers


def loss_scale(adv: torch.Tensor, logp_z: torch.Tensor, logp_y: torch.Tensor, lam: float) -> float:
    """The size of the terms the Eq. 4 loss sums: mean|A·log π(z|x)| + λ·mean|log π(y|x⊕z)|.

    The surrogate −mean(A·log π(z|x)) cancels terms of ~10³ (A ~ ±10, log π(z|x) ~ −200 for 128
    tokens) down to ~10¹, so two correct fp32 computations of log π(z|x) that differ in summation
    order by ~1e-7 relative move the loss by ~1e-5 of its own value (measured here: shared vs
    unshared prompt, logsumexp vs log_softmax). Agreement is therefore judged against this scale.
    """
    return float((adv.abs() * logp_z.detach().abs()).mean() + lam * logp_y.detach().abs().mean())


def losses_agree(a: float, b: float, scale: float = 0.0, tol: float = TOL) -> bool:
    """|a − b| ≤ tol · max(|a|, |b|, scale), or ≤ tol outright (``scale``: :func:`loss_scale`)."""
    return abs(a - b) <= tol or abs(a - b) <= tol * max(abs(a), abs(b), scale)


def logprobs_rel_diff(a: dict, b: dict) -> float:
    """Largest relative difference between two updates' per-sample log π(z|x) and log π(y|x⊕z)."""
    pairs = [(x, y) for key in ("logp_z", "logp_y") for x, y in zip(a[key], b[key])]
    return max(abs(x - y) / max(abs(x), abs(y), 1e-30) for x, y in pairs)


def run_pair(fast: FastWay, literal: LiteralWay, prompts, answers, seed: int = 0) -> dict:
    """One update both ways in this process (the smoke test's path): same batch, loss compared."""
    batch, fs = fast.sample(prompts, answers, seed)
    ls = literal.sample(prompts, batch, seed)
    fu, lu = fast.update(batch), literal.update(batch)
    if not losses_agree(fu["loss"], lu["loss"], max(fu["loss_scale"], lu["loss_scale"]), LITERAL_TOL):
        raise AssertionError(f"loss differs: fast {fu['loss']!r} vs literal {lu['loss']!r}")
    return {"fast": {**fs, **fu}, "literal": {**ls, **lu}, "batch": batch}


# ------------------------------------------------------------------------------------ workers

DEVICE = "cpu"       # the worker's device (--device); on CUDA "peak memory" is the GPU's


def _mem() -> dict:
    """Memory now and at its peak: on a CPU the process's resident set (RSS, VmHWM); on CUDA
    ``hwm_mb`` is the peak CUDA memory held by tensors (the RSS fields stay the host's)."""
    st = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in st.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}
    import resource
    out = {"rss_mb": kb.get("VmRSS", 0) / 1024, "hwm_mb": kb.get("VmHWM", 0) / 1024,
           "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if (cuda := cuda_peak_mb(DEVICE)) is not None:
        out.update(hwm_mb=cuda, cuda_peak_mb=cuda, host_hwm_mb=out["hwm_mb"])
    return out


def _reset_hwm() -> bool:
    reset_cuda_peak(DEVICE)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _trainable_state(way) -> dict:
    return {n: p.detach() for n, p in way.model.named_parameters() if p.requires_grad}


def _load_trainable(way, path: str) -> None:
    """Set the way's trainable weights to those saved at ``path`` (the fast worker's)."""
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    mine = _trainable_state(way)
    if saved.keys() != mine.keys():
        raise RuntimeError("the ways' trainable parameters differ; cannot share weights")
    with torch.no_grad():
        for n, p in mine.items():
            p.copy_(saved[n])


def worker(args) -> None:
    """Serve update requests on stdin (JSON lines); answer on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                   # library prints go to stderr
    global DEVICE
    DEVICE = args.device
    hp = Hyper(k=args.k, L=args.L, lr=args.lr)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, tok = load_model(device=args.device, dtype=args.dtype)
    way = build_way(args.way, model, tok, hp, lora=args.lora, seed=args.seed,
                    lowmem={"chunk": args.ckpt_chunk})
    prompts, answers = questions(args.questions, tok)
    load_s = time.perf_counter() - t0
    peaks = machine_peaks(device=args.device, dtype=args.dtype) if args.way == "fast" else None     # before the window whose memory is measured
    gc.collect()
    after_load = _mem()
    reset_ok = _reset_hwm()
    proto.write(json.dumps({"ready": True, "load_s": load_s, "mem_after_load": after_load, "peaks": peaks,
                            "model_shape": getattr(way, "shape", None), "hwm_reset": reset_ok, "threads": torch.get_num_threads()}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "exit":
            proto.write(json.dumps({"bye": True, "mem": _mem()}) + "\n")
            return
        seed = args.seed * 1000 + msg["r"]
        if msg.get("weights"):                      # start from the fast way's weights (untimed)
            _load_trainable(way, msg["weights"])
            gc.collect()
        _reset_hwm()                                # this update's own high-water mark
        t0 = time.perf_counter()
        extra = {}
        if args.way == "fast":
            batch, s = way.sample(prompts, answers, seed)
            batch.save(msg["batch"])
            if args.also_per_question:                 # same weights, same generators: same samples?
                extra = way.sample_per_question(prompts, seed)
                extra["per_question_same_samples"] = extra.pop("per_question_rationales") == batch.rationale_ids
                t0 += extra["per_question_sampling_s"]                 # not part of this update's time
        elif args.way == "literal":
            batch = Batch.load(msg["batch"])
            s = way.sample(prompts, batch, seed)
        else:                                       # fast-ckpt: fast's sampler, so only its update is timed
            batch = Batch.load(msg["batch"])
            s = {"sampling_s": 0.0, "sampling_cpu_s": 0.0, "new_tokens": None, "gen_steps": None}
        u = way.update(batch)
        total = time.perf_counter() - t0
        u["total_cpu_s"] = s["sampling_cpu_s"] + u["scoring_cpu_s"] + u["backward_step_cpu_s"]
        mem, n = _mem(), len(batch.prompt_ids)
        del batch
        if msg.get("save_weights"):
            torch.save(_trainable_state(way), msg["save_weights"])
        gc.collect()            # (no malloc_trim: handing memory back made the next update page it in again)
        proto.write(json.dumps({**s, **u, **extra, "total_s": total, "samples": n, "mem": mem}) + "\n")


class _Worker:
    def __init__(self, way: str, args):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--way", way, "--k", str(args.k), "--questions",
               str(args.questions), "--L", str(args.L), "--seed", str(args.seed), "--lr", str(args.lr),
               "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]
        if args.lora:
            cmd.append("--lora")
        if args.also_per_question:
            cmd.append("--also-per-question")
        cmd += ["--ckpt-chunk", str(args.ckpt_chunk)] if args.ckpt_chunk else []
        self.way = way
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def recv(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.way} worker died (exit code {self.p.wait()})")
        return json.loads(line)

    def ask(self, msg: dict) -> dict:
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        return self.recv()


# ------------------------------------------------------------------------------------- driver

def _med(rows, key):
    return statistics.median(r[key] for r in rows)


def utilisation(rows: list[dict], ready: dict, literal_rows: list[dict]) -> dict:
    """How close the fast update runs to this machine's peaks (medians over the timed updates):
    scoring and backward in model FLOP/s (MFU = that / the matmul peak), sampling in GB/s of weights
    streamed (every decode step reads every weight once; / the memory read rate), and the
    floor: the update's model FLOPs at the matmul peak plus its decode steps at the memory read rate,
    i.e. the fastest this update could run here, and literal / floor, the largest ratio it allows."""
    pk, shape = ready["peaks"], ready["model_shape"]
    per = []
    for r, lt in zip(rows, literal_rows):
        f = r["model_flops"]
        # every decode step reads every weight once, at best at the memory read rate
        stream_s = r["decode_steps"] * shape["bytes"] / pk["stream_bytes_per_s"]
        floor = (f["scoring"] + f["backward"]) / pk["matmul_flops"] + stream_s
        per.append({"scoring_flops_per_s": f["scoring"] / r["scoring_s"],
                    "backward_flops_per_s": f["backward"] / r["backward_step_s"],
                    "sampling_bytes_per_s": r["decode_steps"] * shape["bytes"] / r["sampling_s"],
                    "floor_s": floor, "literal_over_floor": lt["total_s"] / floor})
    out = {k: statistics.median(x[k] for x in per) for k in per[0]}
    out["scoring_mfu"] = out["scoring_flops_per_s"] / pk["matmul_flops"]
    out["backward_mfu"] = out["backward_flops_per_s"] / pk["matmul_flops"]
    out["sampling_of_stream_peak"] = out["sampling_bytes_per_s"] / pk["stream_bytes_per_s"]
    if pk.get("spec_flops"):      # on a GPU: MFU against its datasheet peak as well
        out["scoring_mfu_spec"] = out["scoring_flops_per_s"] / pk["spec_flops"]
        out["backward_mfu_spec"] = out["backward_flops_per_s"] / pk["spec_flops"]
    return {**out, "peaks": pk, "model_shape": shape}


def drive(args) -> dict:
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # so the workers are stopped too
    tmp = tempfile.mkdtemp(prefix="latro_bench_")
    names = ["fast", "literal"] + (["fast-ckpt"] if args.fast_ckpt else [])
    workers = {w: _Worker(w, args) for w in names}
    ready = {w: wk.recv() for w, wk in workers.items()}
    if args.peak_tflops and ready["fast"].get("peaks"):
        ready["fast"]["peaks"]["spec_flops"] = args.peak_tflops * 1e12
    rows = {w: [] for w in names}
    hwm = {w: 0.0 for w in names}        # peak RSS over all updates (warm-up included)
    checks = []
    try:
        for r in range(args.warmup + args.repeats):
            path = os.path.join(tmp, f"batch{r}.json")
            res = {}
            # fast first: it samples the batch, and the others start each update from its weights, so
            # that all score the same batch with the same weights (AdamW turns float-level gradient
            # differences into weight differences of ~lr, which would build up over the updates)
            weights = os.path.join(tmp, f"weights{r}.pt")
            for w in names:
                res[w] = workers[w].ask({"cmd": "update", "r": r, "batch": path} | (
                    {"save_weights": weights} if w == "fast" else
                    {"weights": os.path.join(tmp, f"weights{r - 1}.pt")} if r else {}))
            for w in names:
                hwm[w] = max(hwm[w], res[w]["mem"]["hwm_mb"])
            if r:
                os.remove(os.path.join(tmp, f"weights{r - 1}.pt"))
            f, lt = res["fast"], res["literal"]
            if "fast-ckpt" in res:                                   # same sampler as fast
                c = res["fast-ckpt"]
                c.update(sampling_s=f["sampling_s"], sampling_cpu_s=f["sampling_cpu_s"], new_tokens=f["new_tokens"],
                         total_s=c["total_s"] + f["sampling_s"], total_cpu_s=c["total_cpu_s"] + f["sampling_cpu_s"])
            ok = all(losses_agree(f["loss"], res[w]["loss"], max(f["loss_scale"], res[w]["loss_scale"]),
                                  LITERAL_TOL if w == "literal" else TOL) for w in names)
            g_rel = abs(f["grad_norm"] - lt["grad_norm"]) / max(abs(f["grad_norm"]), 1e-30)
            checks.append({"update": r, "warmup": r < args.warmup, "loss_fast": f["loss"], "loss_literal": lt["loss"],
                           "loss_abs_diff": abs(f["loss"] - lt["loss"]), "loss_scale": max(f["loss_scale"], lt["loss_scale"]),
                           "logprobs_rel_diff": logprobs_rel_diff(f, lt), "grad_norm_fast": f["grad_norm"],
                           "grad_norm_literal": lt["grad_norm"], "grad_norm_rel_diff": g_rel, "loss_ok": ok,
                           **({"loss_fast_ckpt": res["fast-ckpt"]["loss"],
                               "logprobs_rel_diff_ckpt": logprobs_rel_diff(f, res["fast-ckpt"])} if "fast-ckpt" in res else {})})
            tag = "warm-up" if r < args.warmup else f"rep {r - args.warmup + 1}"
            print(f"[{tag}] " + "  ".join(
                f"{w} {res[w]['total_s']:.2f}s/{res[w]['total_cpu_s']:.2f} CPU (sample {res[w]['sampling_s']:.2f} score {res[w]['scoring_s']:.2f} "
                f"bwd+step {res[w]['backward_step_s']:.2f}, loss {res[w]['loss']:.6f})" for w in names)
                + f"  grad-norm rel diff fast/literal {g_rel:.1e}", flush=True)
            if not ok:
                raise AssertionError(f"update {r}: losses differ: " + ", ".join(f"{w} {res[w]['loss']!r}" for w in names))
            if args.strict_grad and g_rel > GRAD_TOL:
                raise AssertionError(f"update {r}: grad norms differ by {g_rel:.2e} (relative)")
            if r >= args.warmup:
                for w in names:
                    rows[w].append(res[w])
        bye = {w: wk.ask({"cmd": "exit"}) for w, wk in workers.items()}
    finally:
        for wk in workers.values():
            if wk.p.poll() is None:
                wk.p.kill()
        shutil.rmtree(tmp, ignore_errors=True)      # each update's weights are ~0.5 GB at 135M
    summary = {}
    for w in names:
        rs = rows[w]
        tot = _med(rs, "total_s")
        summary[w] = {"sampling_s": _med(rs, "sampling_s"), "scoring_s": _med(rs, "scoring_s"),
                      "backward_step_s": _med(rs, "backward_step_s"), "total_s": tot,
                      "cpu": {k: _med(rs, k) for k in ("sampling_cpu_s", "scoring_cpu_s", "backward_step_cpu_s", "total_cpu_s")},
                      "samples_per_s": rs[0]["samples"] / tot,
                      "peak_rss_mb": hwm[w] if ready[w]["hwm_reset"] else bye[w]["mem"]["ru_maxrss_mb"],
                      "ru_maxrss_mb": bye[w]["mem"]["ru_maxrss_mb"], "rss_after_load_mb": ready[w]["mem_after_load"]["rss_mb"],
                      "load_peak_mb": ready[w]["mem_after_load"]["hwm_mb"],
                      "new_tokens": [r_["new_tokens"] for r_ in rs], "gen_steps": [r_["gen_steps"] for r_ in rs],
                      "forwards_per_sample": rs[0]["forwards"], "threads": ready[w]["threads"], "per_update": rs}
        if "per_question_sampling_s" in rs[0]:
            summary[w]["per_question_sampling_s"] = _med(rs, "per_question_sampling_s")
            summary[w]["cpu"]["per_question_sampling_cpu_s"] = _med(rs, "per_question_sampling_cpu_s")
            summary[w]["per_question_same_samples"] = [r_["per_question_same_samples"] for r_ in rs]
    if ready["fast"].get("peaks"):
        summary["fast"]["utilisation"] = utilisation(rows["fast"], ready["fast"], rows["literal"])
    ratio = {"time_literal_over_fast": summary["literal"]["total_s"] / summary["fast"]["total_s"],
             "peak_mem_fast_over_literal": summary["fast"]["peak_rss_mb"] / summary["literal"]["peak_rss_mb"]}
    for ph in ("sampling_s", "scoring_s", "backward_step_s"):
        ratio[f"{ph[:-2]}_literal_over_fast"] = summary["literal"][ph] / summary["fast"][ph]
    fc, lc = summary["fast"]["cpu"], summary["literal"]["cpu"]
    ratio["cpu_time_literal_over_fast"] = lc["total_cpu_s"] / fc["total_cpu_s"]
    if "fast-ckpt" in summary:
        ratio["time_literal_over_fast_ckpt"] = summary["literal"]["total_s"] / summary["fast-ckpt"]["total_s"]
        ratio["peak_mem_fast_ckpt_over_literal"] = summary["fast-ckpt"]["peak_rss_mb"] / summary["literal"]["peak_rss_mb"]
    if "per_question_sampling_s" in summary["fast"]:
        t = summary["fast"]["total_s"] - summary["fast"]["sampling_s"] + summary["fast"]["per_question_sampling_s"]
        ratio["time_literal_over_fast_per_question_sampling"] = summary["literal"]["total_s"] / t
        t = fc["total_cpu_s"] - fc["sampling_cpu_s"] + fc["per_question_sampling_cpu_s"]
        ratio["cpu_time_literal_over_fast_per_question_sampling"] = lc["total_cpu_s"] / t
    if "fast-ckpt" in summary:
        ratio["cpu_time_literal_over_fast_ckpt"] = lc["total_cpu_s"] / summary["fast-ckpt"]["cpu"]["total_cpu_s"]
    info = {**machine_info(), **device_info(args.device)}
    info["torch_threads"] = ready["fast"]["threads"]
    return {"command": command_line(),
            "settings": {"k": args.k, "questions": args.questions, "L": args.L, "samples": args.k * args.questions,
                         "repeats": args.repeats, "warmup": args.warmup, "lora": args.lora, "lr": args.lr,
                         "seed": args.seed, "dtype": args.dtype, "device": args.device, "task": "arithmetic/train",
                         "fast_ckpt": {"chunk": args.ckpt_chunk} if args.fast_ckpt else None,
                         "model": "SmolLM2-135M-Instruct (embedded)"},
            "git_commit": git_commit(), "machine": info, "summary": summary, "ratio": ratio,
            "checks": checks, "hwm_reset": all(r["hwm_reset"] for r in ready.values())}


def report_md(res: dict, notes: str | None = None) -> str:
    s, rt, st = res["summary"], res["ratio"], res["settings"]
    m = res["machine"]
    lines = ["# One LaTRO update: latro_core (fast) vs the released trainer's pattern (literal)", "",
             f"Command: `{res['command']}`  ", f"Commit: `{res['git_commit']}`  ",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads per worker), "
             f"transformers {m['transformers']}, Python {m['python']}"
             + (f"; GPU {m['gpu']} ({m['gpu_memory_gb']} GB, CUDA {m['cuda']})" if m.get("gpu") else "") + "  ",
             f"Settings: {st['model']}, {st['dtype']}, {st['task']}, {st['questions']} questions x K={st['k']} = "
             f"{st['samples']} samples, L={st['L']}, {'LoRA (r=16, all-linear)' if st['lora'] else 'full fine-tuning'}, "
             f"AdamW lr={st['lr']}, grad clip 1.0; median of {st['repeats']} updates after {st['warmup']} warm-up, the "
             f"ways alternating update by update, each in its own process.", "",
             "| | sampling s | scoring s | backward+step s | total s | samples/s | "
             + ("peak CUDA MB" if m.get("gpu") else "peak RSS MB") + " | forwards/sample |",
             "|---|---|---|---|---|---|---|---|"]
    for w, x in s.items():
        lines.append(f"| {w} | {x['sampling_s']:.2f} | {x['scoring_s']:.2f} | {x['backward_step_s']:.2f} | "
                     f"{x['total_s']:.2f} | {x['samples_per_s']:.3f} | {x['peak_rss_mb']:.0f} | {x['forwards_per_sample']} |")
    lines += ["", "The same updates in CPU seconds of the worker process (`time.process_time()`; with one thread this is "
              "the work itself, without the time spent queueing for a core on the shared machine):", "",
              "| | sampling CPU s | scoring CPU s | backward+step CPU s | total CPU s |", "|---|---|---|---|---|"]
    for w, x in s.items():
        c = x["cpu"]
        lines.append(f"| {w} | {c['sampling_cpu_s']:.2f} | {c['scoring_cpu_s']:.2f} | {c['backward_step_cpu_s']:.2f} | "
                     f"{c['total_cpu_s']:.2f} |")
    lines += ["", f"**literal / fast time: {rt['time_literal_over_fast']:.2f}x** wall, {rt['cpu_time_literal_over_fast']:.2f}x CPU (sampling {rt['sampling_literal_over_fast']:.2f}x, "
              f"scoring {rt['scoring_literal_over_fast']:.2f}x, backward+step {rt['backward_step_literal_over_fast']:.2f}x)  ",
              f"**fast / literal peak memory: {rt['peak_mem_fast_over_literal']:.2f}x**  ",
              f"Issue target: >= 3x faster and <= 0.4x peak memory -> time {'met' if rt['time_literal_over_fast'] >= 3 else 'NOT met'}, "
              f"memory {'met' if rt['peak_mem_fast_over_literal'] <= 0.4 else 'NOT met'}.", ""]
    if "fast-ckpt" in s:
        lm = res["settings"].get("fast_ckpt") or {}
        extra = f", vocabulary chunks of {lm.get('chunk')} positions" if lm.get("chunk") else ""
        lines += [f"fast-ckpt = the fast update with activation checkpointing of the decoder layers "
                  f"(`enable_checkpointing`{extra}; not latro_core's defaults; it scores the fast sampler's batch, so its "
                  f"sampling time is the fast row's): literal / fast-ckpt time {rt['time_literal_over_fast_ckpt']:.2f}x "
                  f"({rt['cpu_time_literal_over_fast_ckpt']:.2f}x CPU), "
                  f"fast-ckpt / literal peak memory {rt['peak_mem_fast_ckpt_over_literal']:.2f}x.", ""]
    u = s["fast"].get("utilisation")
    if u:
        pk, sh = u["peaks"], u["model_shape"]
        lines += ["## How close to this machine's limits (fast way)", "",
                  f"Peaks measured in the fast worker before its updates, same threads: fp32 matmul "
                  f"{pk['matmul_flops'] / 1e9:.1f} GFLOP/s (the model's training shapes), memory read "
                  f"{pk['stream_bytes_per_s'] / 1e9:.2f} GB/s (`sum` over the vocabulary projection's weight; torch's default "
                  f"MKL matmul reads that weight at {pk.get('decode_matmul_bytes_per_s', float('nan')) / 1e9:.2f} GB/s when it "
                  f"multiplies 8 rows by it, as in decoding). "
                  f"Model: {sh['body'] / 1e6:.1f}M matmul weights + {sh['head'] / 1e6:.1f}M vocabulary projection, "
                  f"{sh['bytes'] / 1e6:.0f} MB in memory. Model FLOPs count real tokens only (2 per weight per token, "
                  f"vocabulary projection on z/y positions, causal attention, a question's prompt once where the pass "
                  f"shares it among its K samples), no padding, no recomputation; "
                  f"backward = 2x the forward (1x under LoRA).", "",
                  "| phase | achieved | of the peak |", "|---|---|---|",
                  f"| sampling (weights read per decode step) | {u['sampling_bytes_per_s'] / 1e9:.2f} GB/s | "
                  f"{100 * u['sampling_of_stream_peak']:.0f}% |",
                  f"| scoring (policy + pi_0 forwards) | {u['scoring_flops_per_s'] / 1e9:.1f} GFLOP/s | "
                  f"{100 * u['scoring_mfu']:.0f}% (MFU) |",
                  f"| backward + AdamW step | {u['backward_flops_per_s'] / 1e9:.1f} GFLOP/s | {100 * u['backward_mfu']:.0f}% (MFU) |",
                  *([f"| scoring, of the GPU's datasheet peak ({pk['spec_flops'] / 1e12:.0f} TFLOP/s {st['dtype']}) | | "
                     f"{100 * u['scoring_mfu_spec']:.1f}% (MFU) |",
                     f"| backward + step, of the datasheet peak | | {100 * u['backward_mfu_spec']:.1f}% (MFU) |"]
                    if u.get("scoring_mfu_spec") is not None else []),
                  "", f"Floor (an estimate): the update's model FLOPs at the matmul peak plus its decode steps at the "
                  f"memory read rate take {u['floor_s']:.1f} s "
                  f"(median), so by these measured peaks no implementation of this update can be more than "
                  f"**{u['literal_over_floor']:.2f}x** faster than the literal way's measured time here.", ""]
    if "per_question_sampling_s" in s["fast"]:
        lines += [f"latro_core samples all questions in one `sample_rationales` call, each question with its own "
                  f"generator (the trainer's `_sample`). One call per question instead (same generators, same weights, timed right after "
                  f"the batched call, not in the totals) takes median {s['fast']['per_question_sampling_s']:.2f}s "
                  f"({s['fast']['cpu']['per_question_sampling_cpu_s']:.2f} CPU s) instead of {s['fast']['sampling_s']:.2f}s "
                  f"({s['fast']['cpu']['sampling_cpu_s']:.2f} CPU s); with it, literal / fast time would be "
                  f"{rt['time_literal_over_fast_per_question_sampling']:.2f}x "
                  f"({rt['cpu_time_literal_over_fast_per_question_sampling']:.2f}x CPU). The per-question calls sampled "
                  f"the same rationales as the batched call: {s['fast']['per_question_same_samples']}.", ""]
    lines += ["On the GPU, peak memory is the CUDA memory tensors held (`torch.cuda.max_memory_allocated`), reset at "
              "the start of every update; the host's RSS is in the JSON." if m.get("gpu") else
              "Peak RSS is VmHWM of each worker process, reset at the start of every update (after the model, copies and "
              "optimizer were built, and after loading the fast way's weights), the largest over all updates: the high-water "
              "mark of the updates themselves." if res["hwm_reset"] else
              "Peak RSS is ru_maxrss of each worker process (includes model loading).",
              "RSS after setup: " + ", ".join(f"{w} {x['rss_after_load_mb']:.0f} MB" for w, x in s.items())
              + " (AdamW state is allocated at the first step, inside the measured window).", "",
              f"Generated tokens per update (fast / literal): {s['fast']['new_tokens']} / {s['literal']['new_tokens']}; "
              f"literal decode steps {s['literal']['gen_steps']} (generate keeps finished rows in the batch and samples on "
              f"past the stop string to EOS or L).", "",
              "## Same batch, same loss", "",
              "| update | loss fast | loss literal | abs diff | loss scale | abs diff / scale | log-probs rel diff | "
              "grad norm fast | grad norm literal | rel diff |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["checks"]:
        lines.append(f"| {c['update']}{' (warm-up)' if c['warmup'] else ''} | {c['loss_fast']:.6f} | {c['loss_literal']:.6f} | "
                     f"{c['loss_abs_diff']:.1e} | {c['loss_scale']:.0f} | {c['loss_abs_diff'] / c['loss_scale']:.1e} | "
                     f"{c['logprobs_rel_diff']:.1e} | {c['grad_norm_fast']:.6f} | {c['grad_norm_literal']:.6f} | {c['grad_norm_rel_diff']:.1e} |")
    ckpt = [c for c in res["checks"] if "loss_fast_ckpt" in c]
    lines += ["", f"Loss agreement asserted on every update: |loss difference| <= {LITERAL_TOL:g} (literal) and {TOL:g} "
              f"(fast-ckpt{'' if ckpt else ', when run'}) x the loss scale, mean|A·log π(z|x)| + λ·mean|log π(y|x⊕z)|. The "
              "surrogate loss cancels terms of that scale down to its value, so fp32 computations that sum in another order "
              "differ by ~1e-5 of the value itself; the per-sample log-probabilities ('log-probs rel diff': the largest "
              "relative difference of any sample's log π(z|x) or log π(y|x⊕z)) show the actual agreement. " + LOG_SOFTMAX_NOTE]
    if ckpt:
        lines += ["", "fast-ckpt against fast (no prompt sharing under checkpointing): loss differences "
                  + ", ".join(f"{abs(c['loss_fast_ckpt'] - c['loss_fast']):.1e}" for c in ckpt)
                  + "; log-probs rel diff " + ", ".join(f"{c['logprobs_rel_diff_ckpt']:.1e}" for c in ckpt) + "."]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4, help="rationales per question")
    ap.add_argument("--questions", type=int, default=2, help="questions per update (arithmetic/train, the first n)")
    ap.add_argument("--L", type=int, default=128, help="rationale token budget")
    ap.add_argument("--repeats", type=int, default=3, help="timed updates per way (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    ap.add_argument("--lora", action="store_true", help="LoRA (fast: pi_0 = adapter off; literal: still a full copy)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then peak memory is CUDA memory, and MFU is also "
                    "given against the GPU's datasheet peak)")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="the weights' dtype")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (default: datasheet table)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in each worker (0: torch's default)")
    ap.add_argument("--also-per-question", action="store_true",
                    help="fast worker also times one sample_rationales call per question (after the update, not in totals)")
    ap.add_argument("--fast-ckpt", action="store_true",
                    help="a third worker: the fast update with activation checkpointing (memory/time trade-off)")
    ap.add_argument("--ckpt-chunk", type=int, default=None, help="fast-ckpt: positions per vocabulary chunk (default: latro_core's, 256)")
    ap.add_argument("--strict-grad", action="store_true", help=f"also assert grad norms agree to {GRAD_TOL:g}")
    ap.add_argument("--out", default="results/benchmark_latro_update", help="writes OUT.md and OUT.json")
    ap.add_argument("--notes", default=None, help="a markdown file appended to OUT.md (analysis)")
    ap.add_argument("--from-json", default=None, help="no run: rewrite OUT.md from a saved OUT.json (with --notes)")
    ap.add_argument("--way", choices=("fast", "literal", "fast-ckpt"), help=argparse.SUPPRESS)   # worker mode
    args = ap.parse_args(argv)
    if args.way:
        return worker(args)
    res = json.loads(Path(args.from_json).read_text()) if args.from_json else drive(args)
    s, rt = res["summary"], res["ratio"]
    for w, x in s.items():
        print(f"{w:9s} sampling {x['sampling_s']:.2f}s scoring {x['scoring_s']:.2f}s backward+step "
              f"{x['backward_step_s']:.2f}s total {x['total_s']:.2f}s  {x['samples_per_s']:.3f} samples/s  "
              f"peak RSS {x['peak_rss_mb']:.0f} MB")
    print(f"literal/fast time {rt['time_literal_over_fast']:.2f}x (CPU {rt['cpu_time_literal_over_fast']:.2f}x)   "
          f"fast/literal peak memory {rt['peak_mem_fast_over_literal']:.2f}x")
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    notes = Path(args.notes).read_text() if args.notes else None
    out.with_suffix(".md").write_text(report_md(res, notes))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
