"""The timer the benchmarks share: best of a few runs (these machines are noisy; the minimum is the
least disturbed run)."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping


def best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Seconds of the fastest of ``repeats`` calls of ``function()``, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - start)
    return best, out


def best_times(functions: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, Any]]:
    """:func:`best_time` of several functions timed in turn, one call of each per round: a change in the
    machine's load during the run then reaches every function alike, and their ratios stay fair."""
    best: dict[str, tuple[float, Any]] = {name: (float("inf"), None) for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            seconds, out = best_time(function, 1)
            best[name] = (min(best[name][0], seconds), out)
    return best
