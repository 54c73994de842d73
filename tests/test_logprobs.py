"""Tests for latro_core.logprobs: packed, chunked, checkpointed log π(z|x), log π(y|x⊕z) against a
plain one-sequence-at-a-time computation (values and gradients), with pad == EOS as in SmolLM2."""

import pytest
import torch

from latro_core import fast_logprobs as lp_mod
from latro_core.logprobs import PolicyScorer, pack, reference_logprobs, sequence_logprobs, token_logprobs
from latro_core.models import enable_checkpointing, tiny_model


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    model, tok = tiny_model(smol_tokenizer, seed=0)
    model.eval()
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2: pad == eos == <|im_end|>
    return model, tok


def _random_batch(seed, eos, vocab, z_lens=(0, 1, 5, 3, 7, 2), y_lens=(1, 3, 2, 4, 1, 2),
                  x_lens=(4, 1, 7, 2, 3, 5)):
    """Random x, z, y token lists of different lengths; every answer ends with EOS; one empty z."""
    g = torch.Generator().manual_seed(seed)

    def rnd(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    xs = [rnd(n) for n in x_lens]
    zs = [rnd(n) for n in z_lens]
    ys = [rnd(n - 1) + [eos] for n in y_lens]
    return xs, zs, ys


def _naive_tokens(model, xs, zs, ys, T):
    """(B, T) naive per-token log-probs laid out like the right-padded pack (0 on prompt and pad)."""
    out = torch.zeros(len(xs), T)
    for i, (x, z, y) in enumerate(zip(xs, zs, ys)):
        ids = torch.tensor([x + z + y])
        logp = model(ids).logits[0].float().log_softmax(-1)
        out[i, len(x):ids.shape[1]] = logp[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)[len(x) - 1:]
    return out


# sums of ~10 log-probs of size ~log(49152) ≈ 10.8 reach ~100, where one fp32 ulp is ~8e-6: per-token
# values are compared at 1e-5 absolute, sums at 1e-5 absolute plus one part in 1e6. Measured: at most one ulp
# apart (7.6e-6 at |sum| ~ 76), >= 5x inside; a token wrongly masked or shifted moves a sum by ~10.
SUM_TOL = dict(atol=1e-5, rtol=1e-6)


def _naive_batch(model, xs, zs, ys):
    out = [reference_logprobs(model, x, z, y) for x, z, y in zip(xs, zs, ys)]
    return torch.stack([a for a, _ in out]), torch.stack([b for _, b in out])


def test_pack_layout_and_errors():
    b = pack([[5, 6], [7]], [[8], []], [[9, 2], [2]], pad_id=2)
    assert b.input_ids.tolist() == [[5, 6, 8, 9, 2], [7, 2, 2, 2, 2]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b.z_mask.tolist() == [[False, False, True, False, False], [False] * 5]
    assert b.y_mask.tolist() == [[False, False, False, True, True], [False, True, False, False, False]]
    with pytest.raises(ValueError):
        pack([[]], [[1]], [[2]], pad_id=2)
    with pytest.raises(ValueError):
        pack([[1]], [[1], [2]], [[2]], pad_id=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_logprobs_equals_unpadded_per_sequence(tiny, seed):
    model, tok = tiny
    eos = tok.eos_token_id
    xs, zs, ys = _random_batch(seed, eos, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    # the padding really is EOS tokens, right after answers that end with EOS
    assert (batch.input_ids[batch.attention_mask == 0] == eos).all()
    with torch.no_grad():
        lz, ly = sequence_logprobs(model, batch)
        lz3, ly3 = sequence_logprobs(model, batch, chunk=3)
        nz, ny = _naive_batch(model, xs, zs, ys)
    assert lz.dtype == torch.float32 and lz.shape == (len(xs),)
    torch.testing.assert_close(lz, nz, **SUM_TOL)
    torch.testing.assert_close(ly, ny, **SUM_TOL)
    torch.testing.assert_close(lz3, nz, **SUM_TOL)
    torch.testing.assert_close(ly3, ny, **SUM_TOL)
    with torch.no_grad():
        t = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.z_mask | batch.y_mask, chunk=3)
        nt = _naive_tokens(model, xs, zs, ys, batch.input_ids.shape[1])
    torch.testing.assert_close(t, nt, atol=1e-5, rtol=0)   # per-token, |value| <= 11 (see SUM_TOL): measured 1.9e-6
    assert lz[zs.index([])] == 0.0  # empty rationale: log π(∅|x) = 0
    assert (ly < 0).all() and (lz[[i for i, z in enumerate(zs) if z]] < 0).all()


@pytest.mark.parametrize("bias", [False, True])
def test_tempered_scoring_is_log_softmax_of_logits_over_T_on_z_only(tiny, bias):
    model, tok = tiny
    xs, zs, ys = _random_batch(5, tok.eos_token_id, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    head = model.get_output_embeddings()
    if bias:   # a head with a bias cannot fold 1/T into h; it takes the generic (logits / T) path
        old = head
        head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
        with torch.no_grad():
            head.weight.copy_(old.weight)
            head.bias.copy_(torch.randn(old.out_features, generator=torch.Generator().manual_seed(0)))
        model.set_output_embeddings(head)
    try:
        lz, ly = sequence_logprobs(model, batch, chunk=3, temperature=0.6)
        with torch.no_grad():
            ref = [reference_logprobs(model, x, z, y, 0.6) for x, z, y in zip(xs, zs, ys)]
        torch.testing.assert_close(lz.detach(), torch.stack([a for a, _ in ref]), **SUM_TOL)
        torch.testing.assert_close(ly.detach(), torch.stack([b for _, b in ref]), **SUM_TOL)
        # and they differ from untempered scoring (the test would pass with T ignored otherwise)
        plain_z, _ = sequence_logprobs(model, batch)
        assert (plain_z.detach() - lz.detach()).abs().max() > 0.1
        # gradients of the tempered scores equal the naive ones
        params = [p for p in model.parameters() if p.requires_grad]
        g_fast = torch.autograd.grad(lz.sum() + ly.sum(), params, allow_unused=True)
        naive = [reference_logprobs(model, x, z, y, 0.6) for x, z, y in zip(xs, zs, ys)]
        g_naive = torch.autograd.grad(sum(a + b for a, b in naive), params, allow_unused=True)
        # fp32 gradients, batched vs one sequence at a time: the fused head's 3-row-chunk grad_h is ~1e-6 off and
        # the final RMSNorm (hidden rms ~0.02 here) scales it ~50x, so the tied embedding's gradient (|g| <= 7.9) is
        # 4e-5 from float64 where the naive one is 3e-6; measured worst margin only 1.6x (at |g| = 0.3)
        for a, b in zip(g_fast, g_naive):
            if a is not None or b is not None:
                torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
        scorer = PolicyScorer(model, temperature=0.6)
        sz, _ = scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
        # default fp32 tolerances (atol 1e-5, rtol 1.3e-6): the same computation at the default chunk, <= 1 ulp apart
        torch.testing.assert_close(sz.detach(), lz.detach())
    finally:
        if bias:
            model.set_output_embeddings(old)


def test_token_logprobs_zero_outside_score_mask(tiny):
    model, tok = tiny
    xs, zs, ys = _random_batch(5, tok.eos_token_id, len(tok))
    b = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    with torch.no_grad():
        t = token_logprobs(model, b.input_ids, b.attention_mask, b.z_mask | b.y_mask, chunk=4)
    scored = b.z_mask | b.y_mask
    assert (t[~scored] == 0).all()
    assert (t[scored] < 0).all()


def test_final_eos_of_answer_is_scored(tiny):
    """Raising the EOS logit must raise log π(y|x⊕z) by about as much: the EOS ending y (which
    equals the pad id) is a scored token, not mistaken for padding."""
    model, tok = tiny
    eos = tok.eos_token_id
    xs, zs, ys = _random_batch(7, eos, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    delta = 4.0
    head = model.get_output_embeddings()

    def bump(module, inputs, output):
        output = output.clone()
        output[..., eos] += delta
        return output

    with torch.no_grad():
        lz0, ly0 = sequence_logprobs(model, batch)
        h = head.register_forward_hook(bump)
        try:
            lz1, ly1 = sequence_logprobs(model, batch)
            nz1, ny1 = _naive_batch(model, xs, zs, ys)
        finally:
            h.remove()
    # each y holds exactly one EOS (its last token): log π(EOS) goes up by ≈ delta, the rest drop a bit
    assert ((ly1 - ly0) > delta - 0.1).all(), ly1 - ly0
    assert ((ly1 - ly0) < delta).all()
    # z holds no EOS: its log-prob only goes down slightly (by ~1e-3 a token, log(1 + (e⁴−1)/49152); the empty z
    # stays exactly 0), so the 1e-6 slack is never what decides it
    assert (lz1 <= lz0 + 1e-6).all()
    torch.testing.assert_close(ly1, ny1, **SUM_TOL)
    torch.testing.assert_close(lz1, nz1, **SUM_TOL)
    # and the last scored position of every row is exactly the answer's EOS
    last = batch.attention_mask.sum(1) - 1
    assert batch.y_mask[torch.arange(len(xs)), last].all()
    assert (batch.input_ids[torch.arange(len(xs)), last] == eos).all()


def _grouped_batch(seed, eos, vocab, k=3):
    """Two questions x k samples, question-major, as the trainer packs them: each prompt repeated k
    times, rationales of different lengths (one empty)."""
    xs, zs, ys = _random_batch(seed, eos, vocab, z_lens=(0, 4, 2, 6, 1, 3)[:2 * k], y_lens=(2, 1, 3, 2, 2, 1)[:2 * k],
                               x_lens=(5, 5, 5, 3, 3, 3)[:2 * k])
    xs = [xs[0]] * k + [xs[k]] * k
    return xs, zs, ys


def _assert_grads_close(grads, ngrads):
    # fp32 gradients accumulated over different summation orders: compare each tensor relative to
    # its own scale (1e-4 of its largest entry), which a wrong gradient (missing term, wrong
    # position) exceeds by orders of magnitude
    for a, b in zip(grads, ngrads):
        scale = b.abs().max()
        assert scale > 0
        assert (a - b).abs().max() <= 1e-4 * scale, ((a - b).abs().max(), scale)


@pytest.mark.parametrize("head_path", ["linear", "generic"])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("call_tokens", [32, 0])
def test_gradients_through_chunked_logprobs_match_naive(tiny, monkeypatch, head_path, grouped, call_tokens):
    """Values and gradients equal the naive per-sequence computation, for the fused linear head and
    for any other head (here: the same head with a no-op forward hook, which takes the generic,
    checkpointed path), with repeated prompts (shared prompt forward) and without, with the batch
    run whole (these short rows are not worth a second call at 32 tokens a call) and in length
    groups (a call costing 0 tokens: one group per distinct length)."""
    model, tok = tiny
    monkeypatch.setattr(lp_mod, "BUCKET_CALL_TOKENS", call_tokens)
    calls = []
    real_decoder_forward = type(model.get_decoder()).forward
    monkeypatch.setattr(type(model.get_decoder()), "forward",
                        lambda self, *a, **kw: calls.append(kw["input_ids"].shape[0]) or real_decoder_forward(self, *a, **kw))
    model.zero_grad(set_to_none=True)
    xs, zs, ys = (_grouped_batch if grouped else _random_batch)(11, tok.eos_token_id, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    g = torch.Generator().manual_seed(0)
    wz, wy = torch.randn(len(xs), generator=g), torch.randn(len(xs), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]

    rows_per_chunk, shared = [], []
    real_generic, real_logits = lp_mod._generic_target_logprobs, lp_mod.LinearTargetLogProb._logits
    real_prompts = lp_mod._run_prompts
    monkeypatch.setattr(lp_mod, "_generic_target_logprobs", lambda head, h, t, s=None: rows_per_chunk.append(h.shape[0]) or real_generic(head, h, t, s))
    monkeypatch.setattr(lp_mod.LinearTargetLogProb, "_logits",
                        staticmethod(lambda h, w, b: rows_per_chunk.append(h.shape[0]) or real_logits(h, w, b)))
    monkeypatch.setattr(lp_mod, "_run_prompts", lambda dec, prompts, *a: shared.append(len(prompts)) or real_prompts(dec, prompts, *a))
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: o) if head_path == "generic" else None
    try:
        lz, ly = sequence_logprobs(model, batch, chunk=3)
        n_scored = int((batch.z_mask | batch.y_mask).sum())
        # forward: one chunk of at most 3 rows at a time, covering every scored position once
        assert sum(rows_per_chunk) == n_scored and len(rows_per_chunk) == -(-n_scored // 3)
        assert max(rows_per_chunk) == 3
        assert shared == ([2] if grouped else [])      # two distinct prompts, each run once
        # every row runs once (after the prompts' call): in one call, or in one per distinct length
        lens = ((batch.attention_mask.sum(1) - (batch.z_mask | batch.y_mask).int().argmax(1)) if grouped
                else batch.attention_mask.sum(1)).tolist()
        rows_per_call = calls[len(shared):]
        assert sum(rows_per_call) == len(xs)
        assert len(rows_per_call) == (1 if call_tokens else len(set(lens)))
        grads = torch.autograd.grad((wz * lz).sum() + (wy * ly).sum(), params)
        assert sum(rows_per_chunk) == 2 * n_scored      # backward recomputed each chunk's logits once
    finally:
        if hook is not None:
            hook.remove()

    nz, ny = _naive_batch(model, xs, zs, ys)
    torch.testing.assert_close(lz.detach(), nz.detach(), **SUM_TOL)
    torch.testing.assert_close(ly.detach(), ny.detach(), **SUM_TOL)
    _assert_grads_close(grads, torch.autograd.grad((wz * nz).sum() + (wy * ny).sum(), params))


def test_shared_prompt_equals_unshared_and_is_off_under_gradient_checkpointing(smol_tokenizer):
    """share_prompt changes the cost, not the numbers; under HF gradient checkpointing (which drops
    KV caches in training mode) the plain path is taken and the numbers are still right."""
    model, tok = tiny_model(smol_tokenizer, seed=2)
    xs, zs, ys = _grouped_batch(5, tok.eos_token_id, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    out = {}
    for share in (True, False):
        lz, ly = sequence_logprobs(model, batch, share_prompt=share)
        out[share] = (lz.detach(), ly.detach(), torch.autograd.grad(lz.sum() - 2 * ly.sum(), params))
    torch.testing.assert_close(out[True][0], out[False][0], **SUM_TOL)
    torch.testing.assert_close(out[True][1], out[False][1], **SUM_TOL)
    _assert_grads_close(out[True][2], out[False][2])
    assert lp_mod.can_share_prompt(model.get_decoder())
    enable_checkpointing(model)
    assert not lp_mod.can_share_prompt(model.get_decoder())
    lz, ly = sequence_logprobs(model, batch)
    torch.testing.assert_close(lz.detach(), out[False][0], **SUM_TOL)
    torch.testing.assert_close(ly.detach(), out[False][1], **SUM_TOL)


def test_linear_target_logprob_matches_autograd():
    """The fused head's values and hand-written backward (with a bias, a chunk smaller than the rows)
    equal autograd through log_softmax of the same fp32 logits."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (7,), generator=g)

    def f(h, w, b):
        return lp_mod.LinearTargetLogProb.apply(h, w, b, t, 3).double()

    logp = torch.log_softmax((h @ w.t() + b).float(), -1).gather(-1, t[:, None]).squeeze(-1)
    # the same fp32 logits over 11 classes, logits − logsumexp vs log_softmax: |log p| <= 9, where one ulp is
    # 9.5e-7 (measured: one ulp); the bound is >= 2e-6, and a wrong target or lse is off by O(1)
    torch.testing.assert_close(f(h, w, b), logp.double(), atol=1e-6, rtol=1e-6)
    ref = torch.autograd.grad(logp.sum(), (h, w, b))
    got = torch.autograd.grad(f(h, w, b).sum(), (h, w, b))
    # gradients (|g| <= 3.4) from fp32 softmax values, hand-written vs autograd: measured 7e-7, >= 50x inside;
    # a missing onehot or transposed product is off by O(1)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r.to(a.dtype), atol=1e-5, rtol=1e-5)


def test_policy_scorer_forward_matches(tiny):
    model, tok = tiny
    xs, zs, ys = _random_batch(3, tok.eos_token_id, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    scorer = PolicyScorer(model)
    assert scorer.lm is model
    assert {id(p) for p in scorer.parameters()} == {id(p) for p in model.parameters()}
    lz, ly = scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
    with torch.no_grad():
        nz, ny = _naive_batch(model, xs, zs, ys)
    torch.testing.assert_close(lz.detach(), nz, **SUM_TOL)
    torch.testing.assert_close(ly.detach(), ny, **SUM_TOL)
    (lz.sum() + ly.sum()).backward()
    assert model.get_input_embeddings().weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_lora_wrapped_model_keeps_adapter_active(smol_tokenizer):
    """Through a peft wrapper, the decoder/lm_head split must still apply the LoRA weights."""
    pytest.importorskip("peft")
    from latro_core.models import LoraSpec, add_lora

    model, tok = tiny_model(smol_tokenizer, seed=1, hidden_size=32, layers=1)
    peft_model = add_lora(model, LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    peft_model.eval()
    xs, zs, ys = _random_batch(4, tok.eos_token_id, len(tok))
    batch = pack(xs, zs, ys, pad_id=tok.pad_token_id)
    with torch.no_grad():
        lz, ly = sequence_logprobs(peft_model, batch)
        nz, ny = _naive_batch(peft_model, xs, zs, ys)
        with peft_model.disable_adapter():
            bz, by = sequence_logprobs(peft_model, batch)
    torch.testing.assert_close(lz, nz, **SUM_TOL)
    torch.testing.assert_close(ly, ny, **SUM_TOL)
    assert (ly - by).abs().max() > 1e-3  # the adapter changes the numbers


def test_target_logprobs_accurate_at_full_vocabulary_size():
    """At SmolLM2's vocabulary size the fused head (logits − logsumexp) is unbiased against float64,
    within 1e-7 on average per token; torch's fp32 log_softmax on CPU is not (it loses the smallest
    exponentials: ~2.5e-6 per token here), which is why the update benchmark holds the literal way,
    built on log_softmax, to a looser tolerance than latro_core's own variants."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(64, 16, generator=g), torch.randn(49152, 16, generator=g) * 0.75
    t = torch.randint(0, 49152, (64,), generator=g)
    exact = torch.log_softmax(h.double() @ w.double().t(), -1).gather(-1, t[:, None]).squeeze(-1)
    fused = lp_mod.LinearTargetLogProb.apply(h, w, None, t, 16).double()
    # |log p| ~ 15-24, where half an fp32 ulp is 5e-7 to 1e-6: measured mean 6e-8 (about the rounding noise of a
    # 64-token mean) and max 1.5e-6, against log_softmax's mean 1.2e-6 and max 6e-6; both bounds sit near the floor
    assert (fused - exact).mean().abs() < 1e-7 and (fused - exact).abs().max() < 2e-6


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


@pytest.mark.parametrize("seed", range(5))
def test_length_buckets_is_the_cheapest_split(seed):
    """The dynamic program over sorted rows finds the cheapest of *all* ways to split the rows
    (brute force over every set partition), and returns each row exactly once."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 140, (6,), generator=g).tolist()

    def cost(groups):
        return sum(len(gr) * max(lengths[i] for i in gr) + 32 for gr in groups)

    groups = lp_mod.length_buckets(lengths, call_tokens=32)
    assert sorted(i for gr in groups for i in gr) == list(range(6))
    assert cost(groups) == min(cost(p) for p in _partitions(list(range(6))))


def test_length_buckets_examples():
    assert lp_mod.length_buckets([50, 50, 50]) == [[0, 1, 2]]
    assert lp_mod.length_buckets([10, 12, 11], call_tokens=32) == [[0, 1, 2]]
    # a benchmark batch's rationale + answer lengths: the long rows together, the short ones apart
    lens = [136, 136, 136, 136, 50, 136, 89, 35]
    assert lp_mod.length_buckets(lens, call_tokens=32) == [[0, 1, 2, 3, 5], [6], [4, 7]]
    assert lp_mod.length_buckets(lens, call_tokens=10_000) == [list(range(8))]
