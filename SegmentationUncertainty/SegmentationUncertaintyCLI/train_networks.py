"""Train and evaluate the network samplers on the multi-annotator MRI set; write the shipped models,
their model cards, and the results table.

    python -m SegmentationUncertaintyCLI.train_networks train [--models unet mc_dropout ssn phiseg prob_unet]
        [--iterations 600] [--out SegmentationUncertainty/Resources/Models] [--table docs/networks.md]
    python -m SegmentationUncertaintyCLI.train_networks evaluate [--models ...]
        [--models-dir SegmentationUncertainty/Resources/Models]

``train`` builds (or reads from the cache) the 2-D set of
:func:`SegmentationUncertaintyLib.networks.dataset.build_annotated_slices` (``--dims 3``: the 3-D patches),
trains each model on its training slices, saves ``<name>_2d.pt`` with a model card ``<name>_2d.md`` and
evaluates it on the held-out slices (100 samples per slice); ``evaluate`` re-evaluates saved models. Both
print the table and, with ``--table``, write it into the results page.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from SegmentationUncertaintyLib.networks import ARCHITECTURES, load_model, save_model
from SegmentationUncertaintyLib.networks.dataset import AnnotatedImages, build_annotated_patches, build_annotated_slices
from SegmentationUncertaintyLib.networks.evaluation import METRICS, evaluate_model, format_table
from SegmentationUncertaintyLib.networks.io import shipped_models_dir
from SegmentationUncertaintyLib.networks.training import train_model

#: Architecture configuration of each trained model (the network input is image + reference: 2 channels).
MODEL_SPECS: dict[str, dict[str, Any]] = {
    "unet": dict(width=16, depth=3),
    "mc_dropout": dict(width=16, depth=3, dropout=0.2),
    "ssn": dict(width=16, depth=3, rank=10),
    "phiseg": dict(width=16, depth=4, latent_levels=3, latent_dim=2),
    "prob_unet": dict(width=16, depth=3, latent_dim=6),
}
TITLES = {"unet": "deterministic U-Net", "mc_dropout": "MC-dropout U-Net (p = 0.2)", "ssn": "SSN (rank 10)",
          "phiseg": "PHiSeg (L = 3)", "prob_unet": "probabilistic U-Net"}
INPUTS = ("image", "reference")


def _dataset(dims: int, seed: int) -> AnnotatedImages:
    return build_annotated_slices(seed=seed) if dims == 2 else build_annotated_patches(seed=seed)


def _file_name(name: str, dims: int) -> str:
    return f"{name}_{dims}d"


def _dataset_summary(data: AnnotatedImages) -> dict[str, Any]:
    train, test = data.select("train"), data.select("test")
    return {"kind": data.parameters.get("kind"), "parameters": data.parameters, "n_train": len(train),
            "n_test": len(test), "shape": list(data.images.shape[2:]), "annotations_per_image": data.annotations.shape[1]}


def _model_card(name: str, dims: int, metadata: dict[str, Any], path: Path) -> str:
    result = metadata.get("evaluation", {})
    rows = "\n".join(f"| {METRICS[k][0]} | {result[k]['mean']:.3f} ± {result[k]['sem']:.3f} |"
                     for k in METRICS if k in result)
    data = metadata["dataset"]
    params = data["parameters"]
    return f"""# {path.name}: {TITLES.get(name, name)}, {dims}-D

Architecture `{metadata['architecture']}`, configuration `{json.dumps(metadata['config'])}`
({metadata['n_parameters']:,} parameters). Inputs: {', '.join(INPUTS)} (2 channels: the intensity-normalised
image and the reference segmentation as 0/1); output: 2 classes (background, structure).
Load it with `load_model(shipped_model_path("{path.stem}"))` (`SegmentationUncertaintyLib.networks`) or sample
with `NetworkSampler(reference, image, spacing, model=shipped_model_path("{path.stem}"))`
(`SegmentationUncertaintyLib.networks.sampler`).

## Data
Real MRIs installed offline: MNI ICBM152 2009a T1 (lateral ventricles, left and right) and Colin27 T1 with
AAL structures ({', '.join(params.get('structures', []))}), 1 mm. {data['n_train']} training and
{data['n_test']} held-out {'slices' if dims == 2 else 'patches'} of {'×'.join(map(str, data['shape']))} voxels,
each with {data['annotations_per_image']} annotations drawn by GPSSI around the real structure with a mean
pairwise Dice of {params.get('target_dice')} (seed {params.get('seed')}); see
`SegmentationUncertaintyLib/networks/dataset.py`.

Intensity normalisation (recorded in the file): `{json.dumps(metadata['normalization'])}`: percentiles
{metadata['normalization'].get('low')} and {metadata['normalization'].get('high')} of the non-background voxels
of the whole volume map to 0 and 1.

## Training
`{metadata['command']}`
{metadata['iterations']} iterations of Adam (batch {metadata['batch_size']} of random {metadata['crop']}-pixel crops,
learning rate {metadata['learning_rate']}, ÷10 for the last fifth), one random annotation per image and batch,
random left-right flips; {metadata['training_seconds']:.0f} s on {metadata['machine']}.
{('Initialised: ' + metadata['initialised_from'] + ' (trained in the same run).') if metadata.get('initialised_from') else 'Initialised at random (seed ' + str(metadata['seed']) + ').'}

## Held-out results
{('Command: `' + metadata['evaluation_command'] + '`') if metadata.get('evaluation_command') else 'Evaluated right after training.'}
({result.get('n_images', '?')} {'slices' if dims == 2 else 'patches'}, {metadata['n_samples']} samples each, mean ± standard error)
| metric | value |
| --- | --- |
{rows}

## Limits
Trained on {params.get('kind')} of two template brains with synthetic (GPSSI) annotators: it learns the spread of
those annotators around a given reference, not the disagreement of real raters, and has seen only 1 mm T1
MRI of deep grey-matter structures and ventricles. Run on other images or structures, its samples are only
as good as that resemblance.
"""


def _write_table(table_path: Path, dims: int, results: dict[str, dict], command: str, data: AnnotatedImages,
                 n_samples: int) -> None:
    """Replace (or add) the section of ``dims``-D results in the results page."""
    table_path.parent.mkdir(parents=True, exist_ok=True)
    test = data.select("test")
    marker_start, marker_end = f"<!-- results-{dims}d -->", f"<!-- /results-{dims}d -->"
    rows = {TITLES.get(name, name): summary for name, summary in results.items()}
    section = (f"{marker_start}\n{len(test)} held-out {'slices' if dims == 2 else 'patches'}, "
               f"{data.annotations.shape[1]} GPSSI annotations each, {n_samples} samples per model; mean ± standard error "
               f"over images. Command: `{command}`\n\n{format_table(rows)}\n{marker_end}")
    text = table_path.read_text() if table_path.is_file() else "# Network samplers: results\n\n"
    if marker_start in text:
        before, rest = text.split(marker_start, 1)
        text = before + section + rest.split(marker_end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    table_path.write_text(text)


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def train(models: Sequence[str], dims: int, iterations: int, batch_size: int, learning_rate: float, seed: int,
          out: Path, table: Path | None, device: str, n_samples: int, command: str, crop: int | None) -> dict[str, dict]:
    data = _dataset(dims, seed)
    train_set, test_set = data.select("train"), data.select("test")
    x_train, x_test = train_set.network_inputs(), test_set.network_inputs()
    results = {}
    unet = None
    # The U-Net first: SSN starts from its backbone and mean head (the mean pre-trained, papers/003 §5.1).
    for name in sorted(models, key=lambda m: m != "unet"):
        torch.manual_seed(seed)
        model = ARCHITECTURES[name](spatial_dims=dims, in_channels=len(INPUTS), n_classes=2, **MODEL_SPECS[name])
        steps, initialised = iterations, None
        if name == "ssn":
            if unet is None and (out / f"{_file_name('unet', dims)}.pt").is_file():
                unet = load_model(out / f"{_file_name('unet', dims)}.pt", architecture="unet").model
            if unet is not None:
                model.initialize_mean_from(unet)
                steps, initialised = iterations // 2, "backbone and mean head from the deterministic U-Net"
        start = time.perf_counter()
        train_model(model, x_train, train_set.annotations, train_set.rois, iterations=steps,
                    batch_size=batch_size, learning_rate=learning_rate, seed=seed, device=device, crop=crop,
                    progress=lambda i, loss, name=name: print(f"  {name} {i}/{steps} loss {loss:.4f}",
                                                              file=sys.stderr, flush=True))
        seconds = time.perf_counter() - start
        if name == "unet":
            unet = model
        summary = evaluate_model(model, x_test, test_set.annotations, test_set.rois, n_samples=n_samples,
                                 seed=seed, device=device)
        results[name] = summary
        metadata = {
            "architecture": model.architecture, "config": model.config,
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "dataset": _dataset_summary(data), "normalization": data.normalization.to_dict(), "command": command,
            "iterations": steps, "initialised_from": initialised, "crop": crop, "batch_size": batch_size,
            "learning_rate": learning_rate, "seed": seed, "n_samples": n_samples,
            "training_seconds": seconds, "machine": _machine(device),
            "evaluation": _summary_metadata(summary),
        }
        path = save_model(out / f"{_file_name(name, dims)}.pt", model.cpu(), data.normalization, metadata, INPUTS)
        path.with_suffix(".md").write_text(_model_card(name, dims, metadata, path))
        print(f"{name}: trained in {seconds:.0f} s, saved {path}", file=sys.stderr, flush=True)
    if table is not None:
        _write_table(table, dims, results, command, data, n_samples)
    return results


def _summary_metadata(summary: dict) -> dict[str, Any]:
    return {k: {"mean": v["mean"], "sem": v["sem"]} for k, v in summary.items() if k in METRICS} \
        | {"n_images": summary["n_images"]}


def _update_card(path: Path, name: str, dims: int, summary: dict, n_samples: int, command: str) -> None:
    """Record a new evaluation in a model file's metadata and rewrite its model card."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    content["metadata"].update(evaluation=_summary_metadata(summary), n_samples=n_samples,
                               evaluation_command=command)
    torch.save(content, path)
    path.with_suffix(".md").write_text(_model_card(name, dims, content["metadata"], path))


def evaluate(models: Sequence[str], dims: int, models_dir: Path, seed: int, table: Path | None, device: str,
             n_samples: int, command: str, update_cards: bool = False) -> dict[str, dict]:
    data = _dataset(dims, seed)
    test_set = data.select("test")
    x_test = test_set.network_inputs()
    results = {}
    for name in models:
        loaded = load_model(models_dir / f"{_file_name(name, dims)}.pt", architecture=name, device=device)
        results[name] = evaluate_model(loaded.model, x_test, test_set.annotations, test_set.rois,
                                       n_samples=n_samples, seed=seed, device=device)
        if update_cards:
            _update_card(loaded.path, name, dims, results[name], n_samples, command)
    if table is not None:
        _write_table(table, dims, results, command, data, n_samples)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train-networks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--models", nargs="+", default=["unet", "mc_dropout", "ssn", "phiseg", "prob_unet"],
                       choices=sorted(MODEL_SPECS))
        p.add_argument("--dims", type=int, default=2, choices=(2, 3))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--samples", type=int, default=100, help="samples per held-out image (default 100)")
        p.add_argument("--table", type=Path, default=None, help="results page to update (e.g. docs/networks.md)")
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
        p.add_argument("--json", action="store_true", help="print the results as JSON")
    p_train, p_eval = sub.choices["train"], sub.choices["evaluate"]
    p_train.add_argument("--iterations", type=int, default=600,
                         help="per model (SSN: half, after starting from the U-Net trained in the same run)")
    p_train.add_argument("--batch-size", type=int, default=8)
    p_train.add_argument("--crop", type=int, default=48, help="random training crop (0: whole images)")
    p_train.add_argument("--learning-rate", type=float, default=1e-3)
    p_train.add_argument("--out", type=Path, default=shipped_models_dir())
    p_eval.add_argument("--models-dir", type=Path, default=shipped_models_dir())
    p_eval.add_argument("--update-cards", action="store_true",
                        help="record the results in each model file's metadata and rewrite its model card")
    args = parser.parse_args(argv)
    command = "python -m SegmentationUncertaintyCLI.train_networks " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        results = train(args.models, args.dims, args.iterations, args.batch_size, args.learning_rate, args.seed,
                        args.out, args.table, args.device, args.samples, command, args.crop or None)
    else:
        results = evaluate(args.models, args.dims, args.models_dir, args.seed, args.table, args.device,
                           args.samples, command, args.update_cards)
    print(format_table({TITLES.get(k, k): v for k, v in results.items()}))
    if args.json:
        print(json.dumps({k: {m: v[m]["mean"] for m in METRICS} for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
