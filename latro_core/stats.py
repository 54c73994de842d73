"""Statistics: intervals for accuracies (Wilson for one model; a two-level bootstrap over seeds and
questions for several trained models), paired differences with rliable's probability of
improvement, AUROC, mean and standard error. Pure numpy; no model here."""

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


def clustered_mean_interval(values, groups, n_boot: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,) whose rows come in ``groups`` (n,)
    (e.g. the K samples of one question): groups are resampled with replacement, each keeping all
    its rows, and the mean of a draw is Σ_{g drawn} sum_g / Σ_{g drawn} n_g. Fewer than two groups
    (nothing to resample): (nan, nan)."""
    v = np.asarray(values, dtype=float)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    if len(v) == 0 or g.max() < 1:
        return float("nan"), float("nan")
    sums, counts = np.bincount(g, weights=v), np.bincount(g).astype(float)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    # mean of a draw = Σ sum_g / Σ n_g over the drawn groups
    lo, hi = np.quantile(sums[idx].sum(1) / counts[idx].sum(1), [alpha / 2, 1 - alpha / 2])
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


SEEDS_AND_QUESTIONS = "bootstrap over seeds and questions"


def _correctness(per_seed: list[dict], ids: list) -> np.ndarray:
    """C (n_q, S): C[q, s] = 1.0 where seed s answered question ids[q] right."""
    return np.array([[bool(d[i]) for d in per_seed] for i in ids], dtype=float)


def _seed_question_means(C: np.ndarray, seed_draws: np.ndarray, question_draws: np.ndarray) -> np.ndarray:
    """Mean accuracy of each two-level resample: (B,) from C (n_q, S), seed_draws (B, S) and
    question_draws (B, n_q) of indices. With w_b(s) = (times seed s was drawn)/S and
    m_b(q) = Σ_s w_b(s)·C[q, s] (question q's accuracy over the drawn seeds),

        mean_b = (1/n_q) Σ_{q drawn} m_b(q).
    """
    B, S = seed_draws.shape
    w = np.zeros((B, C.shape[1]))
    np.add.at(w, (np.arange(B)[:, None], seed_draws), 1.0 / S)
    m = w @ C.T                                             # (B, n_q)
    return np.take_along_axis(m, question_draws, axis=1).mean(axis=1)


def seed_question_interval(per_seed: list[dict], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, int]:
    """95% percentile interval of the mean accuracy over seeds, from a **two-level bootstrap**:
    each resample draws S seeds with replacement, then n_q questions with replacement (a question
    keeps its answers under every drawn seed), and takes the mean accuracy (:func:`_seed_question_means`).

    per_seed: one {question id: correct} per seed (trained model). Both sources of variation are
    counted: which seeds were trained (the larger one at S = 3–5 here) and which questions were
    asked. Resampling questions alone treats the S trained models as fixed and under-covers when
    seeds differ (tests/test_stats.py simulates both). With S = 1 only questions vary.
    Returns (lo, hi, n_q) over the questions every seed answered.
    """
    ids = sorted(set.intersection(*(set(d) for d in per_seed)))
    if not ids:
        return float("nan"), float("nan"), 0
    C = _correctness(per_seed, ids)
    rng = np.random.default_rng(seed)
    means = _seed_question_means(C, rng.integers(0, C.shape[1], (n_boot, C.shape[1])),
                                 rng.integers(0, len(ids), (n_boot, len(ids))))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi), len(ids)


def paired_difference(a: list[dict], b: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of A minus B on the same questions, several seeds (trained models) each.

    a, b: one {question id: correct} per seed. mean = mean accuracy of A's seeds − B's. ci95: the
    two-level bootstrap of that difference: A's seeds and B's seeds are drawn with replacement
    (independently: they are different runs), then the questions once for both (a question keeps
    its answers under every seed of A and of B, so the pairing by question is kept).
    Returns {"mean", "ci95", "n": questions, "seeds": [S_A, S_B], "ci": what was resampled,
    "p_improvement": :func:`probability_of_improvement` of A over B}.
    """
    ids = sorted(set.intersection(*(set(d) for d in a + b)))
    CA, CB = _correctness(a, ids), _correctness(b, ids)
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, len(ids), (n_boot, len(ids)))
    diff = (_seed_question_means(CA, rng.integers(0, len(a), (n_boot, len(a))), questions)
            - _seed_question_means(CB, rng.integers(0, len(b), (n_boot, len(b))), questions))
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {"mean": float(CA.mean() - CB.mean()), "ci95": [float(lo), float(hi)], "n": len(ids),
            "seeds": [len(a), len(b)], "ci": SEEDS_AND_QUESTIONS,
            "p_improvement": probability_of_improvement(CA.mean(0), CB.mean(0))}


def probability_of_improvement(scores_a, scores_b) -> float:
    """P(A > B) over seed pairs, rliable's definition for one task (Agarwal et al. 2021):

        P(A > B) = 1/(S_A·S_B) Σ_i Σ_j [a_i > b_j] + ½·[a_i = b_j],

    a_i, b_j: the per-seed scores (here accuracies). 0.5 means neither tends to beat the other.
    """
    a, b = np.asarray(scores_a, dtype=float)[:, None], np.asarray(scores_b, dtype=float)[None, :]
    return float(((a > b) + 0.5 * (a == b)).mean())
