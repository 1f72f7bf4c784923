"""Downsampling of long series for drawing, keeping the extremes (spikes must survive)."""

from __future__ import annotations

import numpy as np


def downsample_extremes(
    steps: np.ndarray, values: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of (steps, values), in step order: the first and last
    points, and between them each of ``(max_points - 2) // 2`` equal index buckets keeps its
    smallest and its largest value (min/max decimation). The global extremes always survive.

    Non-finite values (stored as null, read as NaN) are ignored when looking for extremes;
    a bucket holding only non-finite values keeps its first point, so a gap stays a gap.
    """
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    n = len(steps)
    if n <= max_points:
        return steps, values
    buckets = (max_points - 2) // 2
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.int64)
    finite = np.isfinite(values)
    low = np.where(finite, values, np.inf)
    high = np.where(finite, values, -np.inf)
    keep = np.empty(2 * buckets + 2, dtype=np.int64)
    keep[0], keep[-1] = 0, n - 1
    for bucket in range(buckets):
        start, stop = edges[bucket], edges[bucket + 1]
        keep[2 * bucket + 1] = start + int(np.argmin(low[start:stop]))
        keep[2 * bucket + 2] = start + int(np.argmax(high[start:stop]))
    keep = np.unique(keep)
    return steps[keep], values[keep]
