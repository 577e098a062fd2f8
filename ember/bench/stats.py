"""Summaries of latency samples. Medians and percentiles, never means, carry the comparison."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """Median, p90, min and mean in milliseconds, and the number of runs, of per-run times."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean()), "runs": int(ms.size)}


def geomean(values: Sequence[float]) -> float | None:
    """The geometric mean of positive ratios (None for none): the fair average of speed-ups."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def split_runs(runs: int, rounds: int) -> list[int]:
    """`runs` spread over at most `rounds` batches as evenly as possible (no empty batch)."""
    rounds = max(1, min(rounds, runs))
    base, extra = divmod(runs, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def max_abs_diff(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """Largest |actual - expected| over all outputs; equal infinities and NaN in both agree.

    Outputs that differ in count or shape, or a NaN on one side only, differ infinitely.
    """
    if len(actual) != len(expected):
        return math.inf
    worst = 0.0
    for a, e in zip(actual, expected):
        if a.shape != e.shape:
            return math.inf
        a, e = a.astype(np.float64), e.astype(np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.where((a == e) | (np.isnan(a) & np.isnan(e)), 0.0, np.abs(a - e))
        if diff.size:
            worst = max(worst, float(np.nan_to_num(diff, nan=math.inf).max()))
    return worst
