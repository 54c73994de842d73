"""Statistics: intervals for accuracies (Wilson; a bootstrap over questions, clustered when several
seeds answered the same questions), AUROC, mean and standard error. Pure numpy; no model here."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p̂ = s/n:

        center = (p̂ + z²/2n) / (1 + z²/n),   half = z/(1 + z²/n) · sqrt(p̂(1−p̂)/n + z²/4n²).

    Returns (center − half, center + half), clipped to [0, 1]; (0, 1) when n = 0.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(values, n_boot: int = 2000, seed: int = 0, stat=None,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 − alpha) interval of ``stat`` (default: the mean) over ``values``.

    ``values`` is (n,) or (n, d); rows are resampled with replacement ``n_boot`` times (numpy
    generator seeded by ``seed``) and the alpha/2, 1 − alpha/2 quantiles of the statistic returned
    (nan resamples, e.g. an AUROC with one class missing, are ignored). Empty input: (nan, nan).
    """
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    stat = stat or (lambda a: float(np.mean(a)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    stats = np.array([stat(v[i]) for i in idx], dtype=float)
    if np.all(np.isnan(stats)):
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney U statistic):

        AUROC = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) = (R⁺ − n⁺(n⁺+1)/2) / (n⁺ n⁻),

    with R⁺ the sum of the positives' ranks among all scores (ties get their average rank, so
    a tied pair counts ½). nan when either class is empty.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((_average_ranks(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start index of each run of equal values, and the run's average rank
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + 1 + ends) / 2.0                       # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def mean_se(values) -> dict:
    """{"mean", "se", "n"} with se = sample std / sqrt(n) (nan when n < 2)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    return {"mean": float(v.mean()) if n else float("nan"),
            "se": float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"), "n": n}


def accuracy_stats(correct) -> dict:
    """{"accuracy", "correct", "n", "ci95"} with the 95% Wilson interval."""
    c, n = int(sum(bool(x) for x in correct)), len(correct)
    return {"accuracy": c / n if n else float("nan"), "correct": c, "n": n, "ci95": list(wilson_interval(c, n))}


def clustered_interval(per_seed: list[dict], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, int]:
    """95% percentile bootstrap of mean accuracy over seeds, resampling *questions*.

    per_seed: one {question id: correct} per seed. With C (n_q, S) the correctness of the questions
    all seeds answered, each resample draws n_q rows of C with replacement and takes C*.mean(); a
    question keeps its S answers together, so between-question variance is counted once, not S
    times. Returns (lo, hi, n_q).
    """
    ids = sorted(set.intersection(*(set(d) for d in per_seed)))
    if not ids:
        return float("nan"), float("nan"), 0
    C = np.array([[bool(d[i]) for d in per_seed] for i in ids], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    means = C[idx].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi), len(ids)


def paired_difference(a: list[dict], b: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of A minus B on the same questions, several seeds (runs) each.

    a, b: one {question id: correct} per run. Per question q, d_q = mean over A's runs of a_s[q] −
    mean over B's runs of b_s[q]; returns {"mean": mean_q d_q, "ci95": the percentile bootstrap of
    that mean over questions (:func:`bootstrap_interval`), "n": questions}. The question is the unit
    resampled, so a question's answers under every run of A and B stay together.
    """
    mean_a, mean_b = ({q: sum(run[q] for run in runs) / len(runs) for q in runs[0]} for runs in (a, b))
    d = [mean_a[q] - mean_b[q] for q in mean_b]
    return {"mean": sum(d) / len(d), "ci95": list(bootstrap_interval(d, n_boot=n_boot, seed=seed)), "n": len(d)}
