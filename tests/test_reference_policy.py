"""Tests for π0, the reference policy of the KL term: under LoRA it is the model with the adapter
disabled (only the adapter trains); `reference_model` sets it apart from the starting model.
Shared helpers: tests/trainer_helpers.py; fixtures: tests/conftest.py.
"""

import pytest
import torch

from latro_core.errors import ConfigError
from latro_core.models import tiny_model
from trainer_helpers import make_cfg, metrics, run


# ----------------------------------------------------------------------------- LoRA

def test_lora_trains_only_the_adapter_and_pi0_is_the_disabled_adapter(tok, task, tmp_path):
    model, _ = tiny_model(tok)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    tr, _ = run(make_cfg(tmp_path, lora=True, lora_r=4, lora_alpha=8, steps=2, lr=1e-2, truncation="none"),
                tok, task, model)
    assert tr.policy.reference is None                                               # no second copy of the model
    trainable = [n for n, p in tr.policy.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # the base weights did not move; the adapter did
    sd = tr.policy.lm.get_base_model().state_dict()
    for k, v in base_before.items():
        key = next(n for n in sd if n.replace(".base_layer", "") == k)
        assert torch.equal(sd[key], v), k
    assert any(v.abs().sum() > 0 for n, v in tr.policy.lm.state_dict().items() if "lora_B" in n)
    rows = metrics(tmp_path)
    assert rows[0]["kl_mean"] == 0.0            # LoRA B starts at zero: πθ = π0 exactly at step 1
    assert rows[1]["kl_mean"] != 0.0            # after one update the adapter-off π0 differs
    assert (tmp_path / "final" / "adapter_config.json").exists()


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
