"""Timing helpers shared by the benchmarks (they run with this folder on sys.path)."""

from __future__ import annotations

import time


def best_time(fn, repeats: int):
    """(the fastest of `repeats` runs of `fn()` in seconds, the last run's result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
