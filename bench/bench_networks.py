"""Samples per second: SSN (all samples from one forward pass) vs MC dropout (one pass per sample), on a
256×256 slice (2-D models) and a 96³ patch (3-D models), in the same run.

The networks have the shipped architecture (``train_networks.MODEL_SPECS``: width 16, depth 3, two input
channels, SSN rank 10, dropout 0.2); timing does not depend on the weights, so fresh networks of that
architecture are timed (the 3-D ones are not shipped). Every sample is turned into a boolean mask (argmax),
as a sampler yields it. Run alone: ``python bench/bench_networks.py`` (prints the table and a JSON line).
"""

from __future__ import annotations

import json
import time

import torch

from SegmentationUncertaintyCLI.train_networks import MODEL_SPECS
from SegmentationUncertaintyLib.networks import MCDropoutUNet, StochasticSegmentationNetwork

SSN_SAMPLES = 100        # one forward pass, then 100 draws
MC_DROPOUT_PASSES = 10   # papers/002: N = 10


def _samples_per_second(model, x: torch.Tensor, n: int, chunk: int, repeats: int = 2) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            draw = model.prepare_sampling(x)
            for begin in range(0, n, chunk):
                masks = draw(min(chunk, n - begin)).argmax(dim=2) == 1
            masks.any()  # keep the last batch alive until here
            best = min(best, time.perf_counter() - start)
    return n / best


def run(results: dict) -> dict:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for dims, shape, ssn_chunk, mc_chunk in ((2, (256, 256), 50, 10), (3, (96, 96, 96), 10, 1)):
        ssn = StochasticSegmentationNetwork(spatial_dims=dims, in_channels=2, **MODEL_SPECS["ssn"]).to(device).eval()
        mc = MCDropoutUNet(spatial_dims=dims, in_channels=2, **MODEL_SPECS["mc_dropout"]).to(device).eval()
        x = torch.randn(1, 2, *shape, device=device)
        ssn_rate = _samples_per_second(ssn, x, SSN_SAMPLES, ssn_chunk)
        mc_rate = _samples_per_second(mc, x, MC_DROPOUT_PASSES, mc_chunk)
        results[f"ssn_samples_per_s_{dims}d"] = ssn_rate
        results[f"mcdropout_samples_per_s_{dims}d"] = mc_rate
        results[f"ssn_over_mcdropout_{dims}d"] = ssn_rate / mc_rate
        rows.append((f"{dims}-D {'×'.join(map(str, shape))}", ssn_rate, mc_rate))
    print(f"network sampling on {device} ({torch.get_num_threads()} threads)")
    print(f"{'input':>20} | {'SSN samples/s':>14} | {'MC dropout samples/s':>21} | ratio")
    for name, a, b in rows:
        print(f"{name:>20} | {a:14.1f} | {b:21.2f} | {a / b:5.1f}×")
    return results


if __name__ == "__main__":
    out = run({})
    print(json.dumps(out))
