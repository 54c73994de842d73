"""Tests for latro_core.rollout: stop strings, sampling order, seeding, KV-cache greedy decoding
against a cache-free reference, truncation flags, and scripted rollouts that hit stop strings."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from latro_core import cpu_kernels
from latro_core.cpu_kernels import prepacked_linears
from latro_core import rollout
from latro_core.rollout import _cut_at_stop, _growing_layer, _sample_next, find_stop, sample_rationales
from latro_core.tasks import STOP_STRINGS


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny(smol_tokenizer):
    model, tok = tiny_model(smol_tokenizer, seed=0)
    model.eval()
    return model, tok


PROMPTS = ["Q B", "Question A: 2+2?", "Longer question C: what is 3 times 4 plus 1? Think."]


# ----------------------------------------------------------------------------- find_stop / _cut_at_stop


def test_find_stop_earliest():
    assert find_stop("no stop here") is None
    assert find_stop("so 3+4=7. The answer is 7") == len("so 3+4=7. ")
    # "So, the answer is" starts before its substring "the answer is"
    assert find_stop("x. So, the answer is 3") == 3
    # several different stop strings: the earliest position wins, not the first in the list
    assert find_stop("Answer: 4. The answer is 4") == 0
    assert find_stop("a the answer is b. The answer is c") == 2
    assert find_stop("xx STOP yy END", stop_strings=("END", "STOP")) == 3
    assert find_stop("anything", stop_strings=()) is None


_CUT_CASES = [
    # (text, list of pieces whose separate encodings are concatenated)
    ("so 3+4=7. The answer is 7", None),
    ("so 3+4=7. The answer is 7", ["so 3+4=7. The ans", "wer is 7"]),
    ("so 3+4=7. The answer is 7", ["so 3+4=7. The", " answer is 7"]),
    ("so 3+4=7. The answer is 7", ["so 3+4=7. T", "he answer i", "s 7"]),
    ("so 3+4=7. The answer is 7", "chars"),
    ("x=2, so the answer is 2", None),
    ("x=2, so the answer is 2", "chars"),
    ("We get 5. Answer: 5", None),
    ("We get 5. Answer: 5", ["We get 5. Ans", "wer", ": 5"]),
    ("Therefore, the answer is 9", None),
    ("Therefore, the answer is 9", ["There", "fore, the answer is 9"]),
]


@pytest.mark.parametrize("text,pieces", _CUT_CASES)
def test_cut_at_stop_split_across_tokens(smol_tokenizer, text, pieces):
    tok = smol_tokenizer
    if pieces is None:
        ids = _enc(tok, text)
    elif pieces == "chars":
        ids = [i for c in text for i in _enc(tok, c)]
    else:
        ids = [i for p in pieces for i in _enc(tok, p)]
    full = tok.decode(ids)
    assert full == text
    c = find_stop(full)
    prefix, found = _cut_at_stop(tok, ids, STOP_STRINGS)
    assert found
    assert prefix == ids[:len(prefix)]
    ptxt = tok.decode(prefix)
    assert full.startswith(ptxt)
    assert find_stop(ptxt) is None and len(ptxt) <= c       # ends before the stop string
    assert ptxt.rstrip() == full[:c].rstrip()              # ... and right before it
    assert len(tok.decode(ids[:len(prefix) + 1])) > c       # the longest such prefix


def test_cut_at_stop_without_stop(smol_tokenizer):
    ids = _enc(smol_tokenizer, "so 3+4=7, the result")
    assert _cut_at_stop(smol_tokenizer, ids, STOP_STRINGS) == (ids, False)
    ids = _enc(smol_tokenizer, "Answer: 5")
    assert _cut_at_stop(smol_tokenizer, ids, STOP_STRINGS) == ([], True)


def test_sample_next_greedy_and_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g)
    assert torch.equal(_sample_next(logits, 0, None, None, None), logits.argmax(-1))
    assert torch.equal(_sample_next(logits, 1.0, 1, None, g), logits.argmax(-1))
    assert torch.equal(_sample_next(logits, 1.0, None, 1e-6, g), logits.argmax(-1))
    top3 = logits.topk(3, -1).indices
    for _ in range(20):
        t = _sample_next(logits, 1.5, 3, None, g)
        assert (top3 == t[:, None]).any(-1).all()


# ----------------------------------------------------------------------------- real tiny model


def test_rollout_shape_and_question_major_order(tiny):
    model, tok = tiny
    k, L = 3, 4
    roll = sample_rationales(model, tok, PROMPTS, k=k, max_new_tokens=L,
                             generator=torch.Generator().manual_seed(0))
    n = len(PROMPTS)
    assert roll.k == k
    assert len(roll.rationale_ids) == len(roll.prompt_ids) == len(roll.finish) == len(roll.texts) == n * k
    assert roll.truncated.shape == (n * k,) and roll.truncated.dtype == torch.bool
    for i in range(n * k):
        assert roll.prompt_ids[i] == _enc(tok, PROMPTS[i // k])
        assert len(roll.rationale_ids[i]) <= L
        assert tok.eos_token_id not in roll.rationale_ids[i]
    assert roll.lengths.tolist() == [len(z) for z in roll.rationale_ids]
    with pytest.raises(ConfigError):
        sample_rationales(model, tok, PROMPTS, k=0)
    with pytest.raises(ConfigError):
        sample_rationales(model, tok, PROMPTS, max_new_tokens=0)


def test_rollout_seeded_generator_reproducible(tiny):
    model, tok = tiny

    def run(seed):
        return sample_rationales(model, tok, PROMPTS, k=2, max_new_tokens=6, temperature=1.0,
                                 generator=torch.Generator().manual_seed(seed)).rationale_ids

    a, b, c = run(123), run(123), run(124)
    assert a == b
    assert a != c
    assert len({tuple(z) for z in a}) > 1  # samples of one question differ too


def _greedy_no_cache(model, ids, L, eos):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(L):
            t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if t in eos:
                return out, "eos"
            out.append(t)
            ids.append(t)
    return out, "length"


@pytest.fixture(scope="module")
def sharp(smol_tokenizer):
    """A tiny model with large random weights (std 0.3): its greedy choices depend strongly on the
    context and on relative positions, so an off-by-one position or a mixed-up cache row changes
    the decoded tokens (with the default std 0.02 init, such bugs leave the argmax unchanged)."""
    model, tok = tiny_model(smol_tokenizer, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3, generator=g)
    model.eval()
    return model, tok


def test_greedy_rollout_matches_cache_free_decoding(sharp):
    """KV cache + left padding + position ids + rows leaving the batch: prompts of 2, 8 and 16
    tokens, k=2, greedy, against full-forward decoding of each prompt alone without a cache."""
    model, tok = sharp
    L, k = 10, 2
    eos = {tok.eos_token_id}
    refs = [_greedy_no_cache(model, _enc(tok, p), L, eos)[0] for p in PROMPTS]
    # declare an extra EOS id (via generation_config, as a list) that the second prompt's greedy
    # output reaches at step 4, so that its rows leave the batch mid-way while the others go on
    extra = refs[1][3]
    assert extra not in refs[1][:3]
    eos = {tok.eos_token_id, extra}
    model.generation_config.eos_token_id = [tok.eos_token_id, extra]
    try:
        model.train()  # sample_rationales must switch to eval and restore the mode
        roll = sample_rationales(model, tok, PROMPTS, k=k, max_new_tokens=L, temperature=0,
                                 stop_strings=None)
        assert model.training
    finally:
        model.eval()
        model.generation_config.eos_token_id = tok.eos_token_id
    assert len({len(_enc(tok, p)) for p in PROMPTS}) == len(PROMPTS)
    finishes = set()
    for i, p in enumerate(PROMPTS):
        ref, fin = _greedy_no_cache(model, _enc(tok, p), L, eos)
        finishes.add(fin)
        for j in range(k):
            assert roll.rationale_ids[i * k + j] == ref, (p, roll.rationale_ids[i * k + j], ref)
            assert roll.finish[i * k + j] == fin
            assert roll.truncated[i * k + j].item() == (fin == "length")
    assert roll.rationale_ids[2] == refs[1][:3] and roll.finish[2] == "eos"
    assert finishes == {"eos", "length"}


def test_growing_cache_layer_holds_what_transformers_dynamic_layer_holds():
    """The same appends, K-fold repeat, rows leaving and a growth past the planned capacity, on
    transformers' DynamicLayer (which concatenates) and on the rollout's in-place buffers: equal
    keys and values, bit for bit, after every operation."""
    from transformers.cache_utils import DynamicLayer

    g = torch.Generator().manual_seed(0)

    def kv(rows, n):
        return torch.randn(rows, 2, n, 4, generator=g), torch.randn(rows, 2, n, 4, generator=g)

    dynamic, first = DynamicLayer(), kv(2, 5)
    dynamic.update(*first)
    growing = _growing_layer()(dynamic, capacity=5 + 3)
    steps = [("repeat", 3), ("append", 6), ("append", 6), ("select", torch.tensor([0, 2, 5])),
             ("append", 3), ("append", 3), ("append", 3)]       # the last two go past the capacity of 8
    for op, arg in steps:
        if op == "append":
            new = kv(arg, 1)
            dynamic.update(*new), growing.update(*new)
        else:
            for layer in (dynamic, growing):
                (layer.batch_repeat_interleave if op == "repeat" else layer.batch_select_indices)(arg)
        assert torch.equal(dynamic.keys, growing.keys) and torch.equal(dynamic.values, growing.values), op
        assert growing.get_seq_length() == dynamic.get_seq_length()
    assert growing.get_seq_length() == 10


def test_growing_cache_decoding_samples_as_concatenating_cache_decoding(sharp, monkeypatch):
    """Decode-step logits are bit-identical with the in-place KV buffers and with transformers'
    concatenating cache, and greedy and seeded sampling with rows of three prompt lengths give the
    same rationales."""
    model, tok = sharp

    def rolls():
        return [sample_rationales(model, tok, PROMPTS, k=2, max_new_tokens=10, stop_strings=None,
                                  temperature=t, generator=[torch.Generator().manual_seed(s) for s in range(3)])
                .rationale_ids for t in (0, 1.0)]

    def logits(grow: bool):
        """Twelve greedy decode steps after a 4-row prefill, every step's logits."""
        from transformers import DynamicCache

        ids = torch.tensor([_enc(tok, PROMPTS[2])] * 4)
        with torch.no_grad():
            cache = DynamicCache()
            out = [model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]]
            if grow:
                rollout._into_buffers(cache, ids.shape[1] + 12)
            for _ in range(12):
                out.append(model(input_ids=out[-1].argmax(-1)[:, None], past_key_values=cache,
                                 use_cache=True).logits[:, -1])
        return torch.stack(out)

    assert torch.equal(logits(True), logits(False))            # the same values, not only the same argmax
    growing = rolls()
    monkeypatch.setattr(rollout, "_into_buffers", lambda cache, capacity: None)
    assert rolls() == growing


def test_greedy_rollout_default_init_runs_to_length(tiny):
    model, tok = tiny
    L = 6
    roll = sample_rationales(model, tok, PROMPTS, k=1, max_new_tokens=L, temperature=0, stop_strings=None)
    for i, p in enumerate(PROMPTS):
        assert roll.rationale_ids[i] == _greedy_no_cache(model, _enc(tok, p), L, {tok.eos_token_id})[0]
    # a random tiny model never says EOS here: every sample runs to L and is truncated
    assert roll.truncated.all() and all(len(z) == L for z in roll.rationale_ids)
    assert roll.finish == ["length"] * len(PROMPTS)


def test_truncated_flag_exactly_at_length(tiny):
    model, tok = tiny
    L = 5
    roll = sample_rationales(model, tok, PROMPTS, k=2, max_new_tokens=L,
                             generator=torch.Generator().manual_seed(1))
    for z, f, t in zip(roll.rationale_ids, roll.finish, roll.truncated.tolist()):
        assert t == (f == "length")
        if f == "length":
            assert len(z) == L


# ----------------------------------------------------------------------------- scripted model


class ScriptedLM(nn.Module):
    """A deterministic stand-in LM: after prompt p it says ``scripts[p]`` token by token (then
    ``filler`` forever). It keeps each row's token history in the DynamicCache (as key states), so a
    cache that is not repeated/selected in step with the batch gives a wrong history, which fails
    an assertion; it also checks the attention mask and position ids against that history."""

    def __init__(self, scripts: dict, vocab: int, eos: int, filler: int):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.scripts = {tuple(p): list(s) for p, s in scripts.items()}
        self.vocab, self.filler = vocab, filler
        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None):
        self.calls += 1
        B, T = input_ids.shape
        kv = input_ids[:, None, :, None].double()
        hist, _ = past_key_values.update(kv, kv.clone(), 0)
        hist = hist[:, 0, :, 0].long()
        assert attention_mask.shape == hist.shape
        real_new = attention_mask[:, -T:] == 1
        assert torch.equal(position_ids[real_new], (attention_mask.cumsum(-1) - 1)[:, -T:][real_new])
        logits = torch.zeros(B, T, self.vocab)
        for i in range(B):
            seq = hist[i][attention_mask[i] == 1].tolist()
            (p, script), = [(p, s) for p, s in self.scripts.items() if tuple(seq[:len(p)]) == p]
            gen = seq[len(p):]
            assert gen == script[:len(gen)], "cache history out of step with the batch"
            nxt = script[len(gen)] if len(gen) < len(script) else self.filler
            logits[i, -1, nxt] = 20.0
        return SimpleNamespace(logits=logits)


L_SCRIPT = 16


@pytest.fixture(scope="module")
def scripted(smol_tokenizer):
    tok = smol_tokenizer
    eos = tok.eos_token_id
    e = lambda s: _enc(tok, s)  # noqa: E731
    cases = {
        # prompt text: (script tokens, expected z text, finish, full text at EOS, full text when
        # generation stops at the stop string)
        "Q stop?": (e("x The answer is 5") + [eos], "x", "stop", "x The answer is 5", "x The answer is"),
        "Q split?": (e("so 3+4=7. The ans") + e("wer is 7") + [eos], "so 3+4=7.", "stop",
                    "so 3+4=7. The answer is 7", "so 3+4=7. The answer is"),
        "Q colon?": (e("We get 5. Ans") + e("wer: 5") + [eos], "We get 5.", "stop", "We get 5. Answer: 5",
                    "We get 5. Answer:"),
        "Q first?": (e("Answer: 5") + [eos], "", "stop", "Answer: 5", "Answer:"),
        "Q eos?": (e("ok 12") + [eos], "ok 12", "eos", "ok 12", None),
        "Q empty?": ([eos], "", "eos", "", None),
        "Q eos at L?": (e(" 1 2 3 4 5 6 7 8")[:L_SCRIPT - 1] + [eos], None, "eos", None, None),
        "Q length?": (e(" 1 2 3 4 5 6 7 8 9 10")[:L_SCRIPT] + [eos], None, "length", None, None),
        "Q long?": (e(" 1 2 3 4 5 6 7 8 9 10 11 12 13 14"), None, "length", None, None),
    }
    assert len(cases["Q eos at L?"][0]) == L_SCRIPT and len(cases["Q length?"][0]) == L_SCRIPT + 1
    prompts = list(cases)
    keys = [tuple(e(p)) for p in prompts]
    assert all(not b[:len(a)] == a for a in keys for b in keys if a != b)  # no prompt prefixes another
    model = ScriptedLM({tuple(e(p)): cases[p][0] for p in prompts}, len(tok), eos, filler=e("a")[0])
    return model, tok, prompts, cases


@pytest.mark.parametrize("keep_going", [False, True])
def test_scripted_rollout_stops_eos_and_length(scripted, keep_going):
    model, tok, prompts, cases = scripted
    k = 2
    model.calls = 0
    roll = sample_rationales(model, tok, prompts, k=k, max_new_tokens=L_SCRIPT, temperature=0,
                             keep_going_after_stop=keep_going)
    for i, p in enumerate(prompts):
        script, ztext, finish, full, full_stopped = cases[p]
        for j in range(k):
            s = i * k + j
            z, f = roll.rationale_ids[s], roll.finish[s]
            assert f == finish, (p, f)
            assert roll.truncated[s].item() == (finish == "length")
            if finish == "stop":
                assert tok.decode(z) == ztext and roll.texts[s] == ztext, (p, tok.decode(z))
                assert find_stop(roll.texts[s]) is None
                assert z == script[:len(z)]
                # keep_going: generation went on to EOS, so the answer after the template is kept;
                # otherwise the row left the batch as soon as the stop string was complete
                assert roll.full_texts[s] == (full if keep_going else full_stopped), roll.full_texts[s]
            elif finish == "eos":
                assert z == script[:-1]                       # everything but the EOS
                assert len(z) <= L_SCRIPT - 1
                if ztext is not None:
                    assert roll.texts[s] == ztext and roll.full_texts[s] == full
            else:
                assert len(z) == L_SCRIPT and z == script[:L_SCRIPT]
    assert model.calls <= L_SCRIPT  # one prefill, then one call per step; finished rows leave


def test_scripted_rollout_stop_excludes_template_exactly(scripted):
    """Without keep_going, the row leaves the batch at the stop string: no tokens after it."""
    model, tok, prompts, cases = scripted
    roll = sample_rationales(model, tok, ["Q stop?", "Q split?"], k=1, max_new_tokens=L_SCRIPT, temperature=0)
    assert roll.finish == ["stop", "stop"]
    assert roll.full_texts == ["x The answer is", "so 3+4=7. The answer is"]
    assert roll.texts == ["x", "so 3+4=7."]
    assert roll.rationale_ids == [_enc(tok, "x"), _enc(tok, "so 3+4=7.")]
    roll = sample_rationales(model, tok, ["Q stop?", "Q split?"], k=1, max_new_tokens=L_SCRIPT, temperature=0,
                             keep_going_after_stop=True)
    assert roll.full_texts == ["x The answer is 5", "so 3+4=7. The answer is 7"]
    assert roll.rationale_ids == [_enc(tok, "x"), _enc(tok, "so 3+4=7.")]
    assert roll.finish == ["stop", "stop"] and not roll.truncated.any()
    # with stop strings off, the template is just text and the rationale runs to EOS
    roll = sample_rationales(model, tok, ["Q stop?"], k=1, max_new_tokens=L_SCRIPT, temperature=0,
                             stop_strings=None)
    assert roll.finish == ["eos"] and roll.texts == ["x The answer is 5"]


# ----------------------------------------------------------------------------- prepacked linears

def test_prepacked_linears_match_linear_and_do_not_depend_on_batch_mates():
    """Inside the context a linear layer (the real model's shapes, with a bias) gives F.linear's
    values to float rounding, each row's result bit-identical alone or among 8 rows; more rows than
    packed for run F.linear itself; a hooked layer is left alone; on leaving, every layer is back to
    nn.Linear.forward."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(576, 1536), nn.Linear(1536, 576, bias=False), nn.Linear(576, 49152, bias=False))
    hooked = nn.Linear(576, 576)
    hooked.register_forward_hook(lambda m, i, o: o)
    x = torch.randn(8, 1, 576, generator=g)
    with torch.no_grad():
        want = net(x)
        with prepacked_linears(nn.ModuleList([net, hooked]), rows=8) as packed:
            assert packed
            assert all("forward" in vars(m) for m in net) and "forward" not in vars(hooked)
            got = net(x)
            alone = [net(x[i:i + 1]) for i in range(8)]
            pairs = net(x[3:5])
            prefill = net(x.view(1, 8, 576).expand(2, 8, 576))        # 16 rows > 8: F.linear (MKL)
    assert not any("forward" in vars(m) for m in net)
    # three chained fp32 linears (K = 576, 1536, 576; outputs |y| <= 1), oneDNN's kernel vs MKL's: another
    # summation order, measured 9e-7, far inside (>= 200x); a wrong weight, bias or layout is off by ~0.1-1
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    assert torch.equal(prefill, net(x.view(1, 8, 576).expand(2, 8, 576)))
    if not all(torch.equal(a, got[i:i + 1]) for i, a in enumerate(alone)) or not torch.equal(pairs, got[3:5]):
        # bit-identical on the AVX-512 EPYCs of earlier sessions; on an EPYC with AVX512-BF16 (session 6)
        # oneDNN picks kernels by row count, and a row alone differs from it among 8 at float rounding
        # (measured 7.5e-7 on outputs |y| <= 1: ~18x inside 1e-5 + 1e-5|y|; a batch-mate leaking in is O(0.1))
        for i, a in enumerate(alone):
            torch.testing.assert_close(a, got[i:i + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pairs, got[3:5], atol=1e-5, rtol=1e-5)


def test_prepacked_linears_off_without_onednn_or_memory(monkeypatch):
    net = nn.Linear(4, 3)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with prepacked_linears(net, rows=2) as packed:
        assert not packed and "forward" not in vars(net)
    monkeypatch.undo()
    monkeypatch.setattr(cpu_kernels, "_free_memory_bytes", lambda: 10)      # the copy would not fit
    with prepacked_linears(net, rows=2) as packed:
        assert not packed and "forward" not in vars(net)


def test_prepacked_decoding_samples_as_plain_decoding(tiny):
    """Greedy and seeded sampling give the same rationales with and without prepacking (the values
    differ only by float rounding), and the layers are restored afterwards."""
    model, tok = tiny
    for temperature in (0, 1.0):
        rolls = [sample_rationales(model, tok, PROMPTS, k=2, max_new_tokens=8, stop_strings=None, prepack=p,
                                   temperature=temperature, generator=[torch.Generator().manual_seed(s) for s in range(3)])
                 for p in (True, False)]
        assert rolls[0].rationale_ids == rolls[1].rationale_ids
    assert not any("forward" in vars(m) for m in model.modules())


def test_prepacked_lora_layers_carry_their_adapter(smol_tokenizer):
    """Under LoRA each adapted layer is packed with W + scaling·B·A: inside the context it gives what
    peft computes (base output plus adapter) to float rounding, the base weights are untouched,
    sampling draws the same rationales, and on leaving every layer is peft's again."""
    from latro_core.models import LoraSpec, add_lora

    model = add_lora(tiny_model(smol_tokenizer, seed=3)[0], LoraSpec(r=4, alpha=8, dropout=0.1)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:                      # peft starts B at 0: make the adapters do something
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    layers = [m for m in model.modules() if cpu_kernels._mergeable_lora(m)]
    assert layers
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    x = torch.randn(3, 1, layers[0].in_features, generator=g)
    with torch.no_grad():
        want = layers[0](x)
        assert (want - layers[0].base_layer(x)).abs().max() > 1e-3          # the adapter matters
        with prepacked_linears(model, rows=6) as packed:
            assert packed and all("forward" in vars(m) for m in layers)
            assert not any("forward" in vars(c) for m in layers for c in m.modules() if c is not m)
            got = layers[0](x)
    # one fp32 linear with W + s·B·A merged vs peft's base + adapter (K = 64, outputs |y| <= 1): rounding of the
    # merge and another summation order, measured 1.3e-7 (~90x inside); a lost adapter is off by > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora" not in n)
    assert not any("forward" in vars(m) for m in model.modules())
    rolls = [sample_rationales(model, smol_tokenizer, PROMPTS[:2], k=3, max_new_tokens=8, stop_strings=None, prepack=p,
                               generator=[torch.Generator().manual_seed(s) for s in range(2)]) for p in (True, False)]
    assert rolls[0].rationale_ids == rolls[1].rationale_ids


# ----------------------------------------------------------------------------- the inverse-CDF sampler

def _preimage_lengths(logits: torch.Tensor) -> torch.Tensor:
    """For one row of logits (V,): the length of {u in [0, 1): inverse_cdf_sample(u) = i} for every
    token i, found from the sampler itself (it is monotone in u, so each preimage is an interval whose
    ends bisection finds to 1e-15)."""
    from latro_core.rollout import inverse_cdf_sample

    def token(u: float) -> int:
        return int(inverse_cdf_sample(logits[None], torch.tensor([u], dtype=torch.float64)))

    V, lengths = logits.shape[-1], torch.zeros(logits.shape[-1], dtype=torch.float64)
    start = 0.0
    while start < 1.0:
        i, lo, hi = token(start), start, 1.0
        if token(hi - 1e-16) == i:
            lengths[i] += 1.0 - start
            break
        for _ in range(60):                  # the first u whose token is past i
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if token(mid) == i else (lo, mid)
        lengths[i] += hi - start
        start = hi
    assert lengths.shape == (V,)
    return lengths


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, None, None), (1.0, 3, None),
                                                      (1.3, None, 0.8)])
def test_the_inverse_cdf_sampler_gives_each_token_exactly_its_softmax_probability(temperature, top_k, top_p):
    """Exact enumeration on a small vocabulary: the set of uniforms u that the sampler maps to token i
    has length softmax(logits / T)_i (after top-k / top-p, whose kept tokens renormalise), for every i,
    including a token of probability ~1e-12 and tokens top-k or top-p dropped (length 0)."""
    from latro_core import rollout

    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -25.0, 1.0, 0.0])
    seen = {}

    def fake_sample(filtered, uniforms):      # capture what _sample_next hands the sampler
        seen["logits"] = filtered
        return filtered.argmax(-1)

    real = rollout.inverse_cdf_sample
    rollout.inverse_cdf_sample = fake_sample
    try:
        rollout._sample_next(logits[None], temperature, top_k, top_p, torch.Generator().manual_seed(0))
    finally:
        rollout.inverse_cdf_sample = real
    filtered = seen["logits"][0]
    expected = filtered.double().softmax(-1)
    torch.testing.assert_close(_preimage_lengths(filtered), expected, atol=1e-13, rtol=0)
    if top_k or top_p:
        assert (expected == 0).any()         # some tokens dropped, and never drawn


def test_the_inverse_cdf_sampler_fits_softmax_on_the_real_vocabulary():
    """A goodness-of-fit test on SmolLM2's vocabulary size (49152) with logits spread like a model's:
    40000 draws, binned into the 30 likeliest tokens and the rest; Pearson's χ² against softmax(ℓ / T)
    at T = 0.7 (p-value from the regularised upper incomplete gamma function)."""
    from latro_core.rollout import inverse_cdf_sample

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(49152, generator=g) * 3.0
    T, n = 0.7, 40_000
    probs = (logits.double() / T).softmax(-1)
    uniforms, chunk = torch.rand(n, generator=g, dtype=torch.float64), 250      # 250 rows of (V,) float64 at a time
    draws = torch.cat([inverse_cdf_sample((logits / T).expand(len(u), -1), u) for u in uniforms.split(chunk)])
    top = probs.topk(30).indices
    observed = torch.cat([(draws[:, None] == top).sum(0).double(), torch.tensor([float(n)])])
    observed[-1] -= observed[:-1].sum()
    expected = torch.cat([probs[top], (1 - probs[top].sum())[None]]) * n
    chi2 = ((observed - expected) ** 2 / expected).sum()
    p_value = float(torch.special.gammaincc(torch.tensor(30 / 2, dtype=torch.float64), chi2 / 2))
    assert p_value > 1e-3, (float(chi2), p_value)


def test_each_question_draws_one_uniform_per_row_from_its_own_generator():
    """Rows of a question draw in row order from that question's generator, one uniform each, so a
    question's tokens do not depend on which questions share the batch."""
    from latro_core.rollout import _uniforms

    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]      # noqa: E731
    both = _uniforms(4, gens(), [0, 0, 1, 1], torch.device("cpu"))
    alone = _uniforms(2, [gens()[1]], [0, 0], torch.device("cpu"))
    torch.testing.assert_close(both[2:], alone, atol=0, rtol=0)
    assert both[:2].tolist() == torch.rand(2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).tolist()
