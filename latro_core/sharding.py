"""Parameter sharding (FSDP2): every process keeps 1/N of the weights, gradients and AdamW state.

The paper's 7-8B models need it for full fine-tuning: fp32 weights + AdamW's two moments are
16 bytes a parameter, 128 GB for 8B, more than one GPU holds. ``torch.distributed.fsdp.fully_shard``
splits each decoder layer's parameters across the N processes; a layer's forward all-gathers its
full weights and frees them after, and its backward reduce-scatters the gradients (their mean over
processes, as DDP's all-reduce), so each process updates only its own shard.

latro applies it itself rather than through accelerate's FSDP plugin (which accelerate does not
enable for CPU processes), so that the path a GPU run takes is the one the 2-process CPU test runs
(tests/test_distributed.py). Three things LaTRO needs beyond a plain training step:

* **Sampling** runs the policy for as many decoding steps as its rationales need, which differs
  between processes, while every all-gather is a collective that all processes must enter.
  :func:`gathered` all-gathers every layer once and keeps it whole while sampling, so decoding
  takes no collectives (the full weights on each GPU for that while: 16 GB for 8B in bf16).
* **Scoring** must call the decoder the same number of times on every process: the scorer runs
  each micro-batch in one length group (``PolicyScorer(length_groups=False)``).
* **Saving** gathers the full state dict (a collective) and process 0 writes it.

LaTRO (tested) and SFT shard; RFT does not (each process keeps its own number of right rationales, so the
processes would run different numbers of sharded forwards), nor do LoRA runs (the adapter is small).

``accelerate launch --config_file configs/accelerate_fsdp.yaml`` asks for it (accelerate exports
``ACCELERATE_USE_FSDP=true``, ``FSDP_VERSION=2``), as does ``TrainConfig.shard``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn

from .errors import ConfigError


def sharding_requested(shard: bool) -> bool:
    """True when the run shards: ``shard`` (``--shard``), or accelerate launched it with an FSDP
    config (``ACCELERATE_USE_FSDP=true``), which must be FSDP2."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return shard
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"latro shards with FSDP2; the accelerate config asks for fsdp_version "
                          f"{os.environ.get('FSDP_VERSION', '1')}: set fsdp_version: 2 (configs/accelerate_fsdp.yaml).")
    return True


def layer_classes(model: nn.Module) -> set[type]:
    """The classes of the model's decoder layers, from its ``_no_split_modules`` (e.g. LlamaDecoderLayer)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    found = {type(m) for m in base.modules() if type(m).__name__ in names}
    if not found:
        raise ConfigError(f"cannot shard {type(base).__name__}: it names no decoder layer class "
                          f"(_no_split_modules = {sorted(names)}) found among its modules.")
    return found


def shard(root: nn.Module, lm: nn.Module, device: torch.device, mixed_bf16: bool = False) -> nn.Module:
    """``fully_shard`` each decoder layer of ``lm``, then ``root`` (the module whose forward the step
    calls, holding ``lm``: embeddings, final norm and LM head are sharded as its group, tied weights
    together). With ``mixed_bf16`` the layers compute in bf16 on fp32 master shards, gradients
    reduced in fp32. Needs torch.distributed initialised (accelerate does it)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else MixedPrecisionPolicy()
    classes = tuple(layer_classes(lm))
    for m in list(lm.modules()):
        if isinstance(m, classes):
            fully_shard(m, mesh=mesh, mp_policy=mp)
    fully_shard(root, mesh=mesh, mp_policy=mp)
    return root


def _groups(root: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule
    return [m for m in root.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(root: nn.Module):
    """Inside, every sharded group of ``root`` holds its full parameters and keeps them through any
    number of forwards (no collectives: processes may decode different numbers of steps); after,
    each is sharded again. A plain (unsharded) module passes through."""
    groups = _groups(root)
    if not groups:
        yield root
        return
    root._get_fsdp_state()._lazy_init()     # the root must be known before a layer runs on its own
    for g in groups:
        g.unshard()                          # all-gather, once per group, on every process
        if g is not root:
            g.set_reshard_after_forward(False, recurse=False)
    try:
        yield root
    finally:
        for g in groups:
            if g is not root:
                g.set_reshard_after_forward(True, recurse=False)
            g.reshard()


def full_state_dict(root: nn.Module, prefix: str = "") -> dict | None:
    """The whole model's state dict on CPU, on process 0 (None elsewhere); a collective: every
    process calls it. Keys under ``prefix`` (e.g. "lm.") come back without it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if torch.distributed.get_rank() != 0:
        return None
    # a tied weight (SmolLM2's lm_head = embeddings) once, under its first name, as save_pretrained writes it
    names = {n for n, _ in root.named_parameters()} | {n for n, _ in root.named_buffers()}
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k in names}


def full_optimizer_state(root: nn.Module, optimizer) -> dict:
    """The optimizer's state for the whole model (parameter names as keys), on CPU; a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(root, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(root: nn.Module, optimizer, state: dict) -> None:
    """Each process takes its shards of a :func:`full_optimizer_state` (resume); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))


def full_tensor(x):
    """A DTensor's value as a plain tensor (the total gradient norm of sharded gradients); other values pass."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x
