"""The timer the benchmarks share: best of a few runs (these machines are noisy; the minimum is the
least disturbed run)."""

from __future__ import annotations

import time
from typing import Any, Callable


def best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Seconds of the fastest of ``repeats`` calls of ``function()``, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - start)
    return best, out
