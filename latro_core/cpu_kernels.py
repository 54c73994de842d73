"""Fast CPU decoding: the model's fp32 linear layers on oneDNN's prepacked kernel.

On a CPU in fp32, a decode step multiplies a handful of rows by every weight matrix, and MKL's
kernel for so few rows reads the weights at a third of the memory bandwidth
(results/generation_speed.md). :func:`prepacked_linears` repacks the weights once per sampling call
for oneDNN's linear kernel; ``rollout.sample_rationales`` opens it around decoding. It changes
values only at float rounding (tests/test_rollout.py).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn


def _packable(m: nn.Module) -> bool:
    """A plain fp32 CPU ``nn.Linear`` that nothing else hooks into (hooks, e.g. accelerate's, would be
    skipped by a replaced forward)."""
    return (type(m) is nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
            and not (m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") or "forward" in vars(m)))


def _mergeable_lora(m: nn.Module) -> bool:
    """A peft LoRA linear layer over a packable ``nn.Linear``, its plain LoRA adapters active and
    not merged."""
    if not (hasattr(m, "lora_A") and hasattr(m, "get_delta_weight") and _packable(getattr(m, "base_layer", None))):
        return False
    active = [a for a in m.active_adapters if a in m.lora_A]
    return not (m.merged or m.disable_adapters or m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m)
                or any(a in getattr(m, "lora_variant", {}) or getattr(m, "lora_bias", {}).get(a) for a in active))


def _lora_weight(m: nn.Module) -> torch.Tensor:
    """The weight such a layer applies in eval mode: W + Σ_adapters scaling·B·A (peft's
    ``get_delta_weight``)."""
    w = m.base_layer.weight.detach()
    for a in m.active_adapters:
        if a in m.lora_A:
            w = w + m.get_delta_weight(a).detach()
    return w


def _free_memory_bytes() -> int | None:
    """Memory the system can hand out without swapping (Linux: MemAvailable, which counts
    reclaimable file cache; else free pages; None where neither can be read)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@contextmanager
def prepacked_linears(model: nn.Module, rows: int):
    """Inside the context, the model's fp32 CPU linear layers multiply inputs of at most ``rows`` rows
    (decode steps) with oneDNN's linear kernel, on weights repacked once (the kernel torch.compile's
    CPU freezing uses, called directly); larger inputs (a prompt's prefill) keep ``F.linear``, where
    MKL is as fast. Values equal ``F.linear`` to float rounding; a row's result does not depend on
    the other rows in the batch on the AVX-512 CPUs tested first, and differs only at float rounding
    on one with AVX512-BF16, where oneDNN picks kernels by row count (tests/test_rollout.py). A peft LoRA layer is packed with its
    adapter merged in, W + scaling·B·A, so decoding does no adapter matmuls and the base weights are
    left untouched (peft's own merge would add and later subtract the adapter, rounding them). Costs
    one copy of those weights while open, so it does nothing when that copy would take more than half
    the free memory, when oneDNN is unavailable, under CPU autocast, or on other devices and dtypes. For inference in
    eval mode only (no dropout, no gradients): the copy does not follow the weights."""
    lora = [m for m in model.modules() if _mergeable_lora(m)]
    inside_lora = {id(c) for m in lora for c in m.modules()}
    mods = lora + [m for m in model.modules() if _packable(m) and id(m) not in inside_lora]
    free = _free_memory_bytes()
    size = sum(getattr(m, "base_layer", m).weight.numel() * 4 for m in mods)
    if (not mods or not torch.backends.mkldnn.is_available() or (free is not None and 2 * size > free)
            or torch.is_autocast_enabled("cpu")):       # autocast: bf16 inputs, which the fp32 packing does not take
        yield False
        return
    def restore():
        for m in mods:
            vars(m).pop("forward", None)

    packed = False
    try:
        try:
            for m in mods:
                linear = getattr(m, "base_layer", m)
                weight = _lora_weight(m) if linear is not m else linear.weight.detach()   # merged: a temporary
                w = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
                b = None if linear.bias is None else linear.bias.detach()
                m.forward = lambda x, m=m, w=w, b=b: (
                    torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "") if x.numel() <= rows * x.shape[-1]
                    else type(m).forward(m, x))
            packed = True
        except (RuntimeError, AttributeError, NotImplementedError):   # this build or CPU lacks the kernel
            restore()
        yield packed
    finally:
        restore()


def effective_weight(m: nn.Module) -> torch.Tensor:
    """The weight a linear layer applies in eval mode, detached: its own (a view), or for a peft LoRA
    layer whose adapters are active and not merged W + Σ_adapters scaling·B·A (a new tensor)."""
    if not hasattr(m, "base_layer"):
        return m.weight.detach()
    if m.merged or m.disable_adapters or not any(a in m.lora_A for a in m.active_adapters):
        return m.base_layer.weight.detach()
    return _lora_weight(m)


def linear_kernel(weight: torch.Tensor, bias: torch.Tensor | None, rows: int):
    """x ↦ x·Wᵀ + b for inputs of at most ``rows`` rows: on oneDNN's prepacked kernel for an fp32 CPU
    weight (packed once, here; values equal ``F.linear`` to float rounding, as :func:`prepacked_linears`),
    else ``F.linear``; larger inputs always take ``F.linear``."""
    import torch.nn.functional as F

    if (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu")):
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
            return lambda x: (torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
                              if x.numel() <= rows * x.shape[-1] else F.linear(x, weight, bias))
        except (RuntimeError, AttributeError, NotImplementedError):   # this build or CPU lacks the kernel
            pass
    return lambda x: F.linear(x, weight, bias)

