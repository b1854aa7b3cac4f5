"""`make bench`: run every bench/bench_*.py and print one JSON line with all their keys.

Each benchmark module exposes ``run(results: dict) -> None``; it prints its own table (with ratios
against a baseline timed in the same process, since these machines are noisy) and adds its keys.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> dict:
    results: dict = {}
    for path in sorted(HERE.glob("bench_*.py")):
        if names and path.stem.removeprefix("bench_") not in names:
            continue
        print(f"== {path.stem}", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.run(results)
    results["peak_rss_mb"] = max(results.get("peak_rss_mb", 0.0),
                                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results, sort_keys=True))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
