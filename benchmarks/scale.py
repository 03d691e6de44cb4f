"""Propose + match at clinical volume sizes: seconds per case, exactness, label quality.

Hippocampus volumes (MSD Task04, about 35 x 50 x 36 voxels) are resampled by ``--scales``
per axis (linear for the image, nearest for the label; x2 is about 70 x 100 x 72, x4 about
140 x 200 x 144, the range of clinical CT and MRI). The model's prediction is simulated as
in issue 14's left-atrium trial: each class of the true label eroded by one voxel and the
one-hot maps blurred (Gaussian, sigma 1 voxel) into probabilities. The plan is the committed
hippocampus bundle's, with its region-area priors scaled by the square of the factor (what
the fingerprint of the resampled dataset would report), so the classical generator's region
sizes follow the object size.

Per scale and proposal path, one table row: seconds per case for proposals and for matching
(one process, one thread), slices matched and the fraction solved exactly, mean Dice over the
two classes of the matched label and of the prediction against the truth. The paths:

- ``roi``: the defaults: proposals inside each slice's region of interest
  (``samdsk.proposals.roi_margin``), objects larger than the generator's ``work_area_px``
  segmented on a shrunk slice, whose masks stay on its blocks through matching;
- ``roi-full``: the region of interest at full resolution (``work_area_px=None``);
- ``whole``: whole slices at full resolution, the proposals of the path before either existed
  (the merge-hierarchy and atom speed-ups, which change no output, apply to every path; the
  figures of the commit before them are in docs/benchmarks.md).

- ``litemedsam``: LiteMedSAM prompted by the prediction's regions (box prompts per slice
  along the plan's axes), every slice encoded (an empty embedding cache): 3-4 s per slice on
  this CPU, so use it at x1 with a case or two.

``--prediction diffuse`` replaces the simulated prediction by an undertrained model's
(:func:`diffuse_probs`): wide, low-contrast probabilities, where the subset search is deepest
and may stop at its node budget (the slice is then flagged, not exact).

Run it (``whole`` at x4 takes minutes per case):

    .venv/bin/python benchmarks/scale.py [--cases 2] [--scales 1,2,4] [--paths roi,roi-full,whole] [-j 1]

``-j N`` solves each case's slices in N processes (``loop -j`` does so when the pool has fewer
cases than workers); the proposals stay in one process.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from samdsk_plan.evaluation.dice import dice_per_class
from samdsk_plan.io import load_dataset, read_image
from samdsk_plan.loop.pseudolabel import case_proposals, match_proposals
from samdsk_plan.planning import Plans
from samdsk_plan.proposals.classical import WORK_AREA_PX, ClassicalGenerator
from samdsk_plan.proposals.pipeline import make_generators
from samdsk_plan.proposals.volume import window_to_unit

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "hippocampus"
PLAN = REPO / "bundles" / "hippocampus" / "configs" / "plans.json"
PATHS = ("roi", "roi-full", "whole", "litemedsam")


def resample(image: np.ndarray, label: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (linear) and ``label`` (nearest) zoomed by ``factor`` per axis."""
    if factor == 1:
        return image, label
    return ndimage.zoom(image, factor, order=1), ndimage.zoom(label, factor, order=0)


def simulated_probs(label: np.ndarray, n_classes: int, sigma: float = 1.0) -> np.ndarray:
    """``(C, I, J, K)`` probabilities: each foreground class eroded by one voxel, the one-hot
    maps blurred with a Gaussian of ``sigma`` voxels (they still sum to 1 per voxel)."""
    eroded = np.zeros_like(label)
    for c in range(1, n_classes):
        eroded[ndimage.binary_erosion(label == c)] = c
    onehot = np.stack([(eroded == c).astype(np.float32) for c in range(n_classes)])
    return np.stack([ndimage.gaussian_filter(ch, sigma, mode="nearest") for ch in onehot])


def diffuse_probs(label: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, I, J, K)`` probabilities of an undertrained model: each foreground class spread
    over the class dilated by three voxels (Gaussian, sigma 2) at about 0.55, plus the class
    itself blurred (sigma 1) at 0.35; foreground capped at 0.95 per voxel, the rest background.
    Low contrast over wide regions: many proposals stay plausible, the search is deepest."""
    fg = []
    for c in range(1, n_classes):
        wide = ndimage.binary_dilation(label == c, iterations=3).astype(np.float32)
        core = (label == c).astype(np.float32)
        fg.append(0.55 * ndimage.gaussian_filter(wide, 2.0) + 0.35 * ndimage.gaussian_filter(core, 1.0))
    fg = np.stack(fg)
    total = fg.sum(axis=0)
    fg = fg * np.minimum(1.0, 0.95 / np.maximum(total, 1e-12))
    return np.concatenate([1.0 - fg.sum(axis=0, keepdims=True), fg])


PREDICTIONS = {"sharp": simulated_probs, "diffuse": diffuse_probs}


def scaled_plan(plan: Plans, factor: float, roi: bool, max_exact: int | None = None) -> Plans:
    """``plan`` with its region-area priors multiplied by ``factor ** 2``, for ``roi=False``
    proposals on whole slices, and the matching's node budget ``max_exact`` if given."""
    doc = copy.deepcopy(plan.to_json())
    if max_exact is not None:
        doc["samdsk"]["matching"]["max_exact"] = max_exact
    for cls in doc["samdsk"]["classes"].values():
        for stats in cls["region_area_px"].values():
            for key in ("min", "max", "mean", "median", "p05", "p95"):
                if stats.get(key) is not None:
                    stats[key] = stats[key] * factor**2
    if not roi:
        doc["samdsk"]["proposals"]["roi_margin"] = None
    return Plans(doc, f"{plan.source} (x{factor:g})")


def measure(
    case_id: str,
    image: np.ndarray,
    truth: np.ndarray,
    plan: Plans,
    path: str,
    workers: int = 1,
    prediction: str = "sharp",
    embedding_cache: Path | None = None,
) -> dict:
    """Propose and match one case along ``path`` (:data:`PATHS`; ``litemedsam``: its
    embeddings in the empty folder ``embedding_cache``, so every slice is encoded), its slices
    matched in ``workers`` processes, for a ``prediction`` of :data:`PREDICTIONS`; timings and
    quality."""
    probs = PREDICTIONS[prediction](truth, plan.n_classes)
    volume = window_to_unit(image, plan.normalization[0])
    if path == "litemedsam":
        generators = make_generators(plan, "litemedsam", embedding_cache=embedding_cache)
    else:
        generators = {
            axis: ClassicalGenerator(
                plan.samdsk.object_area_px(axis),
                smallest_area_px=plan.samdsk.smallest_area_px(axis),
                work_area_px=WORK_AREA_PX if path == "roi" else None,
            )
            for axis in plan.samdsk.axes
        }
    start = time.perf_counter()
    proposals = case_proposals(case_id, volume, probs, plan, generators, cache_dir=None)
    proposed = time.perf_counter()
    match = match_proposals(probs, proposals, plan, workers)
    matched = time.perf_counter()
    classes = range(1, plan.n_classes)
    label_dice = dice_per_class(match.label, truth, classes)
    pred_dice = dice_per_class(np.argmax(probs, axis=0), truth, classes)
    return {
        "proposals": proposed - start,
        "matching": matched - proposed,
        "n_slices": match.n_slices,
        "n_exact": match.n_exact,
        "n_proposals": sum(len(m) for m in proposals.values()),
        "label_dice": float(np.mean(list(label_dice.values()))),
        "pred_dice": float(np.mean(list(pred_dice.values()))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", default="1,2,4", help="comma-separated zoom factors per axis")
    parser.add_argument("--prediction", default="sharp", choices=tuple(PREDICTIONS), help="simulated model output")
    parser.add_argument("--max-exact", type=int, default=None, help="the plan's samdsk.matching.max_exact")
    parser.add_argument("-j", "--workers", type=int, default=1, help="processes per case for matching")
    parser.add_argument("--paths", default="roi,whole", help=f"comma-separated, of {', '.join(PATHS)}")
    args = parser.parse_args()
    paths = args.paths.split(",")
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown path(s) {sorted(unknown)}; choose from {', '.join(PATHS)}")
    plan = Plans.load(args.plan)
    cases = load_dataset(args.data).labelled
    rng = np.random.default_rng(args.seed)
    picks = sorted(rng.choice(len(cases), size=min(args.cases, len(cases)), replace=False).tolist())
    print(
        f"{len(picks)} hippocampus case(s) (seed {args.seed}: {', '.join(cases[i].case_id for i in picks)}), "
        f"proposals: {', '.join(paths)}; simulated {args.prediction} prediction; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, {args.workers} matching process(es) per case"
    )
    header = (
        "scale",
        "voxels",
        "path",
        "proposals s/case",
        "matching s/case",
        "slices",
        "exact",
        "proposals/slice",
        "Dice label",
        "Dice prediction",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    embeddings = Path(tempfile.mkdtemp(prefix="scale-embeddings-"))  # LiteMedSAM's, empty per case and scale
    atexit.register(shutil.rmtree, embeddings, True)
    for factor in (float(s) for s in args.scales.split(",")):
        volumes = []
        for i in picks:
            image = np.asarray(read_image(cases[i].images[0]).array, dtype=np.float32)
            label = np.asarray(read_image(cases[i].label).array).astype(np.int16)
            volumes.append((cases[i].case_id, *resample(image, label, factor)))
        shape = "x".join(str(n) for n in volumes[0][1].shape)
        for path in paths:
            rows = [
                measure(
                    cid,
                    im,
                    lab,
                    scaled_plan(plan, factor, path != "whole", args.max_exact),
                    path,
                    args.workers,
                    args.prediction,
                    embeddings / f"{cid}-x{factor:g}",
                )
                for cid, im, lab in volumes
            ]
            slices = sum(r["n_slices"] for r in rows)
            cells = (
                f"x{factor:g}",
                shape,
                path,
                f"{np.mean([r['proposals'] for r in rows]):.1f}",
                f"{np.mean([r['matching'] for r in rows]):.1f}",
                str(slices),
                f"{sum(r['n_exact'] for r in rows) / max(slices, 1):.3f}",
                f"{sum(r['n_proposals'] for r in rows) / max(slices, 1):.0f}",
                f"{np.mean([r['label_dice'] for r in rows]):.3f}",
                f"{np.mean([r['pred_dice'] for r in rows]):.3f}",
            )
            print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
