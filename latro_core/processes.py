"""The processes a run spans, as a step and the loop see them: one adapter over accelerate's DDP,
DeepSpeed and latro's own FSDP2 sharding (:mod:`latro_core.sharding`), so neither the step nor the
Trainer asks which one is running.

    processes.gather(t)         every process's t, concatenated (metrics over the global batch)
    processes.backward(loss)    one micro-batch's backward
    processes.sync(last)        no gradient all-reduce before the step's last micro-batch
    processes.clip(max_norm)    the total gradient norm, clipped (None where DeepSpeed clips)
    processes.model_state()     the policy's weights to save (gathered when sharded)

A step scales each micro-batch's loss so that the accumulated, process-averaged gradient is the
mean over every sample of the step: loss · (n_micro / n_global) · num_processes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .errors import check_finite
from .sharding import full_optimizer_state, full_state_dict, full_tensor, load_full_optimizer_state


@dataclass
class Processes:
    """``accelerator`` (accelerate's), ``scorer`` the trainable module whose gradients are
    synchronised, ``sharded``: latro shards it with FSDP2 (accelerate then wraps nothing)."""

    accelerator: object
    scorer: nn.Module
    sharded: bool = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """(n,) on each process → (n · num_processes,), process-major."""
        return self.accelerator.gather(t)

    def backward(self, loss: torch.Tensor, step: int | None = None, **also_finite: torch.Tensor) -> None:
        """Back-propagate one micro-batch's ``loss``; with ``step``, first a NumericalError if ``loss``
        or any of ``also_finite`` (named tensors) holds a NaN or inf (the weights are then untouched)."""
        if step is not None:
            check_finite(step, loss=loss, **also_finite)
        self.accelerator.backward(loss)

    def sync(self, last: bool) -> AbstractContextManager:
        """Context for one micro-batch's backward: no gradient all-reduce until the step's last one
        (DDP/FSDP ``no_sync``; under DeepSpeed, whose backward also steps, no step before the last)."""
        from accelerate.utils import DistributedType

        if self.sharded:      # FSDP2: micro-batches before the last accumulate unreduced gradients
            self.scorer.set_requires_gradient_sync(last)
            return nullcontext()
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            self.accelerator.sync_gradients = last
            return nullcontext()
        return nullcontext() if last else self.accelerator.no_sync(self.scorer)

    def precision(self) -> AbstractContextManager:
        """The prepared scorer's forward precision (accelerate's autocast under mixed precision) for
        every other pass too: sampling, π0, evaluation. Sharded runs cast in FSDP2's policy instead."""
        return nullcontext() if self.sharded else self.accelerator.autocast()

    def clip(self, max_norm: float):
        """Clip the gradients to ``max_norm``; the total norm before clipping (None where DeepSpeed clips)."""
        if self.sharded:
            params = [p for p in self.scorer.parameters() if p.grad is not None]
            return full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
        return self.accelerator.clip_grad_norm_(self.scorer.parameters(), max_norm)

    def model_state(self) -> dict | None:
        """The policy's weights to save: None (the model's own) unless sharded, then gathered to
        process 0 (a collective)."""
        return full_state_dict(self.scorer, prefix="lm.") if self.sharded else None

    def optimizer_state(self, optimizer) -> dict:
        return full_optimizer_state(self.scorer, optimizer) if self.sharded else optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        if self.sharded:
            load_full_optimizer_state(self.scorer, optimizer, state)
        else:
            optimizer.load_state_dict(state)
