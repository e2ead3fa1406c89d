"""Small vectorised sampling helpers shared by the generator modules."""

from __future__ import annotations

import numpy as np

#: "never happens" sentinel day (days since 1970-01-01): far beyond any extract date
NEVER = np.int32(2**30)
YEAR = 365.25


def logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def weights_cum(weights: dict | list | np.ndarray) -> tuple[list, np.ndarray]:
    """Keys and cumulative probabilities of a weight mapping (order kept)."""
    if isinstance(weights, dict):
        keys = list(weights)
        w = np.asarray([float(weights[k]) for k in keys])
    else:
        w = np.asarray(weights, dtype=float)
        keys = list(range(len(w)))
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0
    return keys, cum


def sample_weighted(
    rng: np.random.Generator, weights: dict | list | np.ndarray, n: int
) -> np.ndarray:
    """Indices (into the weights' key order) of ``n`` draws."""
    _, cum = weights_cum(weights)
    return np.searchsorted(cum, rng.random(n), side="right").astype(np.int32)


def sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per element of ``rows`` from ``probs[row]`` (rows of a matrix).

    Uses one searchsorted over the row-offset cumulative matrix: no Python loop.
    """
    probs = np.asarray(probs, dtype=float)
    n_rows, k = probs.shape
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(n_rows)[:, None]).ravel()
    u = rng.random(len(rows))
    # guard against u landing exactly on the next row's offset
    u = np.minimum(u, 1.0 - 1e-12)
    pos = np.searchsorted(flat, rows + u, side="right")
    return (pos - rows * k).astype(np.int32)


def uniform_days(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A uniform integer day in [start, end] (inclusive) per element."""
    span = np.maximum(end - start, 0).astype(np.int64) + 1
    return (start + np.floor(rng.random(len(start)) * span)).astype(np.int32)


def poisson_events(
    rng: np.random.Generator, rate_per_year: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson process per person over [start, end] (days, inclusive): (person index, day)."""
    length = np.maximum(end - start + 1, 0).astype(np.float64)
    counts = rng.poisson(np.maximum(rate_per_year, 0) * length / YEAR)
    pid = np.repeat(np.arange(len(start), dtype=np.int32), counts)
    day = uniform_days(rng, start[pid], end[pid])
    return pid, day


def bisect_offset(score: np.ndarray, target_mean: float, lo: float = -20, hi: float = 20) -> float:
    """c such that mean(logistic(score + c)) == target_mean (monotone bisection on at most
    the first 100,000 scores: callers pass people in random order)."""
    score = score[:100_000]
    for _ in range(40):
        mid = (lo + hi) / 2
        if logistic(score + mid).mean() < target_mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interp_knots(knots: list[list[float]], x: np.ndarray) -> np.ndarray:
    k = np.asarray(knots, dtype=float)
    return np.interp(x, k[:, 0], k[:, 1])


def repeat_offsets(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each element, concatenated (the j of np.repeat)."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts
