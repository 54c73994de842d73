"""latro's own decode step (latro_core/decoder.py) computes transformers' logits: prefill by
transformers, then decode steps side by side, on a left-padded batch of prompts of different
lengths, with rows leaving the batch, under LoRA (applied and merged), on the tiny model and on
SmolLM2; ``sample_rationales`` samples the same tokens with either decoder, and falls back to
transformers' for a model outside the Llama family, saying which one ran."""

import pytest
import torch

from latro_core.decoder import LlamaDecoder, supported
from latro_core.models import LoraSpec, add_lora, prepare_tokenizer, tiny_model
from latro_core.rollout import _prefill, sample_rationales

PROMPTS = ["Q B", "Question A: 2+2?", "Longer question C: what is 3 times 4 plus 1? Think."]


@pytest.fixture(scope="module")
def tok(smol_tokenizer):
    return prepare_tokenizer(smol_tokenizer)


def _side_by_side(model, tok, steps: int = 6, k: int = 2, drop_at: int = 3) -> float:
    """The largest |logit difference| over ``steps`` greedy decode steps of transformers' forward and
    latro's step from the same prefill; at step ``drop_at`` the first row leaves the batch."""
    model.eval()
    with torch.no_grad():
        enc, cache, logits, att, pos = _prefill(model, tok, PROMPTS, k, tok.pad_token_id, steps, in_place=False)
        ours = LlamaDecoder(model, len(enc) * k, att.shape[1] + steps)
        ours.from_cache(cache)
        worst = 0.0
        for step in range(steps):
            nxt = logits.argmax(-1)
            if step == drop_at:
                keep = torch.arange(1, len(nxt))
                cache.batch_select_indices(keep)
                ours.keep_rows(keep)
                nxt, att, pos = nxt[keep], att[keep], pos[keep]
            att = torch.cat([att, att.new_ones(len(nxt), 1)], 1)
            logits = model(input_ids=nxt[:, None], attention_mask=att, position_ids=pos, past_key_values=cache,
                           use_cache=True).logits[:, -1]
            mine = ours.step(nxt, att, pos)
            worst = max(worst, (mine - logits).abs().max().item())
            pos = pos + 1
    return worst


def test_the_decode_step_gives_transformers_logits_on_a_padded_batch_with_rows_leaving(tok):
    model = tiny_model(tok, seed=0)[0]
    assert supported(model) is None
    assert _side_by_side(model, tok) < 1e-4


@pytest.mark.parametrize("merged", [False, True])
def test_the_decode_step_gives_transformers_logits_under_lora(tok, merged):
    model = add_lora(tiny_model(tok, seed=1)[0], LoraSpec(r=4, alpha=8))
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():          # a trained-looking adapter (B is 0 when fresh)
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    if merged:
        model.merge_adapter()
    assert supported(model) is None
    assert _side_by_side(model, tok) < 1e-4


def test_the_decode_step_gives_transformers_logits_on_smollm2():
    from latro_core.models import load_model

    model, tok = load_model(None, device="cpu")
    assert _side_by_side(model, tok, steps=4, k=1) < 2e-3      # 135M fp32: sums of 576-term products


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_draws_the_same_tokens_with_either_decoder(tok, temperature):
    model = tiny_model(tok, seed=2)[0].eval()
    runs = {}
    for decoder in ("transformers", "latro"):
        gens = [torch.Generator().manual_seed(10 + i) for i in range(len(PROMPTS))]
        runs[decoder] = sample_rationales(model, tok, PROMPTS, k=3, max_new_tokens=16, temperature=temperature,
                                          generator=gens, decoder=decoder, stop_strings=None)
    assert runs["latro"].decoder == "latro" and runs["transformers"].decoder == "transformers"
    assert runs["latro"].rationale_ids == runs["transformers"].rationale_ids


def test_a_model_outside_the_llama_family_keeps_transformers_decode_and_says_so(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128)).eval()
    assert "gpt2" in supported(model)
    rollout = sample_rationales(model, tok, PROMPTS[:1], k=2, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert rollout.decoder == "transformers"
    from latro_core.errors import ConfigError
    with pytest.raises(ConfigError, match="decoder='latro' cannot run this model .*gpt2"):
        sample_rationales(model, tok, PROMPTS[:1], k=2, max_new_tokens=4, decoder="latro")
