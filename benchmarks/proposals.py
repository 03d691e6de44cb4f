"""Speed and oracle quality of the classical proposal generator on hippocampus slices.

For a random sample of labelled cases (``--cases``, seeded), each image volume is windowed to
[0, 1] by its 0.5 / 99.5 percentiles and ``--slices`` slices with foreground are drawn per axis.
Each slice goes through :class:`ClassicalGenerator` in full and fast mode, with ``object_area_px``
per axis taken from the plan (the mean over classes of ``samdsk.classes.*.region_area_px.<axis>
.median``) unless ``--object-area`` is given. One table row per mode and axis (and all axes):

- slices per second (wall clock, one process) and CPU milliseconds per slice;
- proposals per slice: mean and range;
- oracle Dice per class for K = 1, 2, ... ``--k-max``: the best Dice between the union of at
  most K proposals and the labelled class region (exact subset search,
  :func:`samdsk_plan.matching.best_union`), averaged over the slices where the class has at least
  ``--min-px`` pixels (count in brackets). A note follows the table if any search ran out of
  its node budget (then the score is a lower bound).

Run it (~2-3 min on 2 CPU cores; the K=3 searches take most of it):

    .venv/bin/python benchmarks/proposals.py [--cases 40] [--slices 100] [--object-area 90]

``--foundation psfhs|hippocampus`` measures LiteMedSAM instead (:mod:`foundation`: box oracle,
matching prompted by a prediction against the classical union, speed with and without the
embedding cache) on ``--foundation-slices`` slices (default 30; PSFHS read from
``../shared/data/psfhs``); ``--probs-run RUN`` uses the round-0 model of a loop run folder:

    .venv/bin/python benchmarks/proposals.py --foundation psfhs [--foundation-slices 30]
    .venv/bin/python benchmarks/proposals.py --foundation hippocampus [--probs-run RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from samdsk_plan.io import load_dataset, read_image
from samdsk_plan.matching import best_union
from samdsk_plan.proposals.classical import ClassicalGenerator
from samdsk_plan.proposals.volume import window_to_unit

# the per-image window the pipeline uses for non-CT data (0.5 / 99.5 percentiles)
PER_IMAGE = {"scheme": "zscore"}

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "hippocampus"
PLAN = REPO / "bundles" / "hippocampus" / "configs" / "plans.json"
MODES = {"full": False, "fast": True}


def sample_slices(root: Path, n_cases: int, per_axis: int, seed: int) -> dict[int, list]:
    """Per axis, ``per_axis`` random ``(image (H, W) float32, label (H, W) int)`` slices with
    foreground from ``n_cases`` random labelled cases."""
    rng = np.random.default_rng(seed)
    cases = load_dataset(root).labelled
    volumes = []
    for i in sorted(rng.choice(len(cases), size=min(n_cases, len(cases)), replace=False)):
        image = np.asarray(read_image(cases[i].images[0]).array, dtype=np.float32)
        volumes.append((window_to_unit(image, PER_IMAGE), np.asarray(read_image(cases[i].label).array)))
    out = {}
    for axis in range(3):
        pool = [
            (image, label, k)
            for image, label in volumes
            for k in np.flatnonzero(np.moveaxis(label, axis, 0).any(axis=(1, 2)))
        ]
        picks = sorted(rng.choice(len(pool), size=min(per_axis, len(pool)), replace=False))
        out[axis] = [
            (np.take(pool[p][0], pool[p][2], axis=axis), np.take(pool[p][1], pool[p][2], axis=axis)) for p in picks
        ]
    return out


def plan_object_areas(plan: Path) -> dict[int, float]:
    """Axis -> mean over classes of the plan's median region area per slice (pixels)."""
    classes = json.loads(plan.read_text())["samdsk"]["classes"].values()
    return {axis: float(np.mean([c["region_area_px"][str(axis)]["median"] for c in classes])) for axis in range(3)}


def measure(generator: ClassicalGenerator, slices: list, classes: dict[int, str], min_px: int, k_max: int) -> dict:
    """Timing, proposal counts and oracle Dice for K = 1..``k_max`` of ``generator`` on
    ``(image, label)`` slices; ``dice[class]`` is a list of ``(k_max,)`` arrays.

    The slices are timed in a first pass on their own, so that BLAS threads left busy by the
    subset searches of the second pass cannot slow the generator down.
    """
    generator(slices[0][0])  # warm-up: imports and first-call allocations
    wall, cpu = time.perf_counter(), time.process_time()
    for image, _ in slices:
        generator(image)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    counts, dice, inexact = [], {c: [] for c in classes}, 0
    for image, label in slices:
        proposals = generator(image)
        counts.append(len(proposals))
        for value in classes:
            target = label == value
            if target.sum() < min_px:
                continue
            if len(proposals) == 0:  # a flat slice: nothing to choose from
                dice[value].append(np.zeros(k_max))
                continue
            unions = [best_union(proposals.pixel_masks(), target, k_max=k) for k in range(1, k_max + 1)]
            dice[value].append(np.array([u.score for u in unions]))
            inexact += sum(not u.exact for u in unions)
    return {"wall": wall, "cpu": cpu, "counts": counts, "dice": dice, "inexact": inexact}


def row(mode: str, axis: str, shape: str, area: str, results: list[dict], classes: dict[int, str]) -> str:
    n = sum(len(r["counts"]) for r in results)
    counts = np.concatenate([r["counts"] for r in results])
    cells = [
        mode,
        axis,
        shape,
        area,
        f"{n / sum(r['wall'] for r in results):.1f}",
        f"{1000 * sum(r['cpu'] for r in results) / n:.1f}",
        f"{counts.mean():.0f} [{counts.min()}-{counts.max()}]",
    ]
    for value in classes:
        d = np.array([x for r in results for x in r["dice"][value]])
        cells.append((" / ".join(f"{m:.3f}" for m in d.mean(axis=0)) if len(d) else "n/a") + f" ({len(d)})")
    return " | ".join(cells)


def time_sam(images: list[np.ndarray], points_per_side: int) -> None:
    """Seconds per slice of SAM vit_b with random weights (speed only: random weights give no
    meaningful masks, so the thresholds are 0), and of its image encoder alone."""
    import torch
    from segment_anything import sam_model_registry

    from samdsk_plan.proposals.sam import SamGenerator

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"](checkpoint=None).eval()
    generator = SamGenerator(model, points_per_side=points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in images:
            model.image_encoder(torch.zeros(1, 3, 1024, 1024))
    encoder = (time.perf_counter() - start) / len(images)
    start = time.perf_counter()
    counts = [len(generator(image)) for image in images]
    total = (time.perf_counter() - start) / len(images)
    print(
        f"SAM vit_b (random weights, {torch.get_num_threads()} threads, {points_per_side}x{points_per_side} grid): "
        f"{total:.1f} s/slice ({1 / total:.3f} slices/s), of which the 1024^2 image encoder {encoder:.1f} s; "
        f"{np.mean(counts):.0f} masks/slice"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--slices", type=int, default=100, help="slices per axis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--object-area", type=float, help="object_area_px for every axis (default: from --plan)")
    parser.add_argument("--min-px", type=int, default=10, help="smallest class region scored (pixels)")
    parser.add_argument("--k-max", type=int, default=3, help="oracle Dice for unions of K = 1..k-max proposals")
    parser.add_argument(
        "--sam-slices",
        type=int,
        default=0,
        help="also time SAM vit_b (random weights, CPU) on this many axis-0 slices (default: skip)",
    )
    parser.add_argument("--sam-points", type=int, default=32, help="points_per_side of the SAM grid")
    parser.add_argument("--foundation", choices=("psfhs", "hippocampus"), help="measure LiteMedSAM on this dataset")
    parser.add_argument("--foundation-slices", type=int, default=30)
    parser.add_argument("--probs-run", type=Path, help="loop run folder whose round-0 model prompts LiteMedSAM")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="embedding cache (default: a temporary one)")
    args = parser.parse_args()
    if args.foundation:
        import tempfile

        from foundation import run

        data = REPO.parent / "shared" / "data" / "psfhs" if args.foundation == "psfhs" else args.data
        with tempfile.TemporaryDirectory() as tmp:
            cache = args.embedding_cache or Path(tmp)
            run(args.foundation, data, args.plan, args.foundation_slices, args.seed, args.probs_run, cache)
        return

    classes = load_dataset(args.data).foreground_labels
    slices = sample_slices(args.data, args.cases, args.slices, args.seed)
    areas = {a: args.object_area for a in range(3)} if args.object_area else plan_object_areas(args.plan)
    print(
        f"{args.cases} cases, {args.slices} slices per axis (seed {args.seed}); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = ["mode", "axis", "slice HxW", "object px", "slices/s", "CPU ms/slice", "proposals/slice"]
    ks = "/".join(str(k) for k in range(1, args.k_max + 1))
    header += [f"Dice K={ks} {name} (n)" for name in classes.values()]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    all_results = []
    for mode, fast in MODES.items():
        results = []
        for axis, pairs in slices.items():
            generator = ClassicalGenerator(areas[axis], fast=fast)
            results.append(measure(generator, pairs, classes, args.min_px, args.k_max))
            shape = "x".join(str(int(s)) for s in np.median([p[0].shape for p in pairs], axis=0))
            print(row(mode, str(axis), shape, f"{areas[axis]:.0f}", results[-1:], classes))
        all_results += results
        print(row(mode, "all", "", "", results, classes))
    if args.sam_slices:
        time_sam([image for image, _ in slices[0][: args.sam_slices]], args.sam_points)
    inexact = sum(r["inexact"] for r in all_results)
    if inexact:
        print(f"note: {inexact} subset searches hit their node budget; their scores are lower bounds")


if __name__ == "__main__":
    main()
