"""What two training runs that should be the same computation may differ by, and how to compare them.

Two runs of the same steps that differ only in how sums are ordered (one process or two, gloo's
all-reduce, FSDP's reduce-scatter, another thread count, another CPU's kernels, activation
checkpointing, other micro-batches) compute the same numbers up to float rounding, **until an
optimizer that normalises per element acts on them**. So the tests compare in two places:

1. **Gradients before the first optimizer step**, when both runs still hold the same weights:
   equal to float rounding (:func:`assert_gradients_close`). A sharding bug (a skipped all-reduce,
   a gradient averaged over the wrong count) changes them by O(1) relative.
2. **Weights after AdamW**, with a bound that reflects Adam's per-element step
   (:func:`assert_adam_weights_close`). AdamW moves an element by lr·m̂/(√v̂ + ε): the *ratio* of two
   running averages of the same gradient, so an element whose gradient is at rounding level (~1e-8
   where others are ~1e-2) still moves by up to ~lr, and a rounding-level difference can flip its
   sign. Equality within rounding therefore holds for all but a few elements, and those few are
   bounded by Adam's largest possible step (:func:`adam_max_ratio`), never by luck of the CPU.

``save_first_gradients`` records (1) from inside a run, in this process or in a subprocess.
"""

from __future__ import annotations

import math

import torch

# float32 unit roundoff: 2^-24 ≈ 6e-8 (torch.finfo(torch.float32).eps / 2).
FP32_U = torch.finfo(torch.float32).eps / 2
# The gradient of one element is a sum of ~n terms (tokens × samples × the contraction of a matmul);
# reordering such a sum changes it by at most ~n·u·Σ|terms| (the standard worst-case bound), and by
# ~√n·u·Σ|terms| typically. With n ≲ 10^4 here (K·questions·(prompt + L) tokens × width 64) the
# worst case is 10^4 · 6e-8 ≈ 6e-4 of the tensor's scale; the tests use 1e-3 × max|g| of the tensor.
GRAD_REL_TOL = 1e-3
# An element "equal within rounding" after AdamW: its difference is under 1% of one Adam step (lr).
# Where both runs' gradients agree to GRAD_REL_TOL relative, m̂/√v̂ agrees to about that relative too,
# i.e. to ~1e-3·lr per step; elements whose gradient is near zero do not, and are counted.
ADAM_ROUNDING = 1e-2
# At most this fraction of the elements may be such near-zero-gradient outliers (322 of the tiny
# model's 3,219,776). Measured by tests/test_distributed.py's DDP and FSDP2 tests: on an AMD EPYC 0
# outliers, largest difference 6.1e-6 = 0.006·lr; the Intel Xeon (AMX) run of issue #30 had one
# element 1.6e-4 apart; the planted skipped all-reduce puts 803,970 (25%) beyond 0.01·lr.
ADAM_MAX_OUTLIERS = 1e-4


def adam_max_ratio(t: int, beta1: float = 0.9, beta2: float = 0.999) -> float:
    """The largest |m̂_t / √v̂_t| any gradient sequence g_1..g_t can give (ε = 0), by Cauchy–Schwarz:

        m̂_t = Σ_i a_i g_i,  a_i = (1−β1) β1^(t−i) / (1−β1^t);   v̂_t = Σ_i b_i g_i²,  b_i = (1−β2) β2^(t−i) / (1−β2^t)
        |m̂_t| / √v̂_t ≤ √(Σ_i a_i² / b_i).

    1 at t = 1 (the first step is lr·sign(g)); ~1.4 at t = 2, growing slowly with t.
    """
    total = 0.0
    for i in range(1, t + 1):
        a = (1 - beta1) * beta1 ** (t - i) / (1 - beta1 ** t)
        b = (1 - beta2) * beta2 ** (t - i) / (1 - beta2 ** t)
        total += a * a / b
    return math.sqrt(total)


def save_first_gradients(path, monkeypatch=None) -> None:
    """Make every Trainer in this process (or, given pytest's ``monkeypatch``, in this test) save, at its first optimizer step (step 0), the gradients the
    optimizer is about to use (after DDP's all-reduce / FSDP's reduce-scatter, before clipping) as full
    tensors to ``path`` (process 0 writes; under FSDP every rank joins the gather)."""
    from latro_core.sharding import full_tensor
    from latro_core.trainer import Trainer

    original = Trainer._optimizer_step

    def step(self, m):
        if self.step == 0:
            grads = {n: full_tensor(p.grad).detach().clone() for n, p in self.policy.lm.named_parameters()
                     if p.grad is not None}
            if self.acc.is_main_process:
                torch.save(grads, path)
        return original(self, m)

    if monkeypatch is None:
        Trainer._optimizer_step = step
    else:
        monkeypatch.setattr(Trainer, "_optimizer_step", step)


def assert_gradients_close(a: dict, b: dict, rel: float = GRAD_REL_TOL) -> None:
    """Each tensor of ``b`` equals ``a``'s within ``rel`` × the tensor's largest |gradient| (module doc)."""
    assert a.keys() == b.keys() and a, (sorted(a)[:3], sorted(b)[:3])
    for name in a:
        scale = float(a[name].abs().max())
        err = float((a[name] - b[name]).abs().max())
        assert err <= rel * scale + 1e-12, f"{name}: gradients differ by {err:.3g}, allowed {rel:g} × {scale:.3g}"


def assert_adam_weights_close(a: dict, b: dict, lr: float, steps: int,
                              rounding: float = ADAM_ROUNDING, max_outliers: float = ADAM_MAX_OUTLIERS) -> dict:
    """Weights of two runs after ``steps`` AdamW steps at learning rate ≤ ``lr`` from the same start,
    whose gradients agree to float rounding (module doc). Asserts

    * every element: |a − b| ≤ 2·lr·Σ_{t≤steps} adam_max_ratio(t)   (each run moves it at most that far);
    * all but ``max_outliers`` of the elements: |a − b| ≤ ``rounding``·lr  (equal within rounding).

    Returns {"elements", "outliers", "max_diff"} for the caller to print."""
    assert a.keys() == b.keys() and a
    bound = 2 * lr * sum(adam_max_ratio(t) for t in range(1, steps + 1))
    total = outliers = 0
    worst, beyond = 0.0, []
    for name in a:
        d = (a[name].double() - b[name].double()).abs()
        worst = max(worst, float(d.max()))
        # + a few ulps of the stored fp32 weights: two opposite first steps land exactly 2·lr apart
        if float(d.max()) > bound + 8 * FP32_U * float(a[name].abs().max()):
            beyond.append(f"{name} ({float(d.max()):.3g})")
        total += d.numel()
        outliers += int((d > rounding * lr).sum())
    assert outliers <= max_outliers * total, (
        f"{outliers} of {total} weights differ by more than {rounding:g}·lr (allowed {max_outliers:g} of them): "
        "more than summation order can explain")
    assert not beyond, f"weights moved further apart than Adam allows ({bound:.3g}): {', '.join(beyond)}"
    return {"elements": total, "outliers": outliers, "max_diff": worst}
