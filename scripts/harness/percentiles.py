"""Percentiles of measured values, the one definition every benchmark reports."""

from __future__ import annotations


def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (0 to 100) of `values`: the value of nearest rank in the sorted
    values, ranks counted from 0 to ``len(values) - 1``. Raises on no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
