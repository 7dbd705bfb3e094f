"""Multilevel Otsu thresholds, exactly optimal, by dynamic programming.

Otsu's criterion (maximal between-class variance) over a histogram is the same as 1-D k-means
over its bins, which dynamic programming solves exactly in O(classes * bins^2), where an
exhaustive search over threshold combinations is hopeless beyond four classes.
"""


import numpy as np


def _class_scores(counts: np.ndarray) -> np.ndarray:
    """score[i, j] = S^2 / W for the class of bins i..j (W its weight, S its first moment)."""
    bins = np.arange(counts.size, dtype=np.float64)
    weight = np.concatenate([[0.0], np.cumsum(counts)])
    moment = np.concatenate([[0.0], np.cumsum(counts * bins)])
    w = weight[None, 1:] - weight[:-1, None]
    s = moment[None, 1:] - moment[:-1, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(w > 0, s * s / w, 0.0)
    score[np.tril_indices(counts.size, -1)] = -np.inf  # a class ends at or after its start
    return score


def otsu_threshold_bins(counts: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Bin indices t_1 < ... < t_n of the optimal thresholds: class k holds bins t_{k-1}+1..t_k.

    Maximises the sum over classes of S^2 / W, which is Otsu's between-class variance up to
    constants. Every class holds at least one bin. Ties go to the smallest threshold.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_bins = counts.size
    if not 1 <= n_thresholds < n_bins:
        raise ValueError(f"need 1 <= thresholds < bins, got {n_thresholds} for {n_bins} bins")
    score = _class_scores(counts)
    best = score[0].copy()  # best[j]: one class covering bins 0..j
    score_by_end = np.ascontiguousarray(score.T)  # [j, i]: rows contiguous for the argmax
    choices = []
    for _ in range(n_thresholds):
        # candidate[j, i]: the previous classes end at bin i-1, a new class covers i..j.
        candidate = np.full((n_bins, n_bins), -np.inf)
        candidate[:, 1:] = score_by_end[:, 1:] + best[None, :-1]
        start = np.argmax(candidate, axis=1)
        best = candidate[np.arange(n_bins), start]
        choices.append(start)
    ends = []
    end = n_bins - 1
    for start in reversed(choices):
        end = start[end] - 1
        ends.append(end)
    return np.array(ends[::-1], dtype=np.int64)
