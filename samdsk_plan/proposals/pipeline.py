"""Proposals for whole cases and datasets: window, slice, generate (or reuse the cache)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.io.datalists import prediction_file
from samdsk_plan.io.layouts import entry_case_id, entry_image
from samdsk_plan.io.parallel import parallel_map
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.base import ProposalGenerator, Proposals
from samdsk_plan.proposals.cache import ProposalCache, SliceKey, cache_key
from samdsk_plan.proposals.volume import get_slice, slice_indices, window_to_unit

logger = logging.getLogger(__name__)
GENERATORS = ("classical", "sam")


def make_generators(
    plans: Plans,
    kind: str | None = None,
    checkpoint: str | Path | None = None,
    model_type: str | None = None,
    device: str = "cpu",
    fast: bool = False,
) -> dict[int, ProposalGenerator]:
    """One generator per slicing axis of the plan's ``samdsk.axes``.

    Args:
        plans: the plan.
        kind: ``"classical"`` or ``"sam"``; None: the plan's ``samdsk.proposals.generator``.
        checkpoint: SAM checkpoint; None: the plan's ``samdsk.proposals.sam.checkpoint``, else
            ``$SAMDSK_SAM_CHECKPOINT``.
        model_type: SAM architecture; None: the plan's.
        device: torch device of SAM.
        fast: the classical generator's fast mode.

    ``classical`` scales its spatial parameters per axis with the median region area the
    fingerprint reports for that axis (median over classes); ``sam`` loads the checkpoint once
    and uses the plan's SAM settings on every axis.
    """
    samdsk = plans.samdsk
    kind = kind if kind is not None else samdsk.generator
    if kind == "classical":
        from samdsk_plan.proposals.classical import ClassicalGenerator

        return {axis: ClassicalGenerator(object_area_px=samdsk.object_area_px(axis), fast=fast) for axis in samdsk.axes}
    if kind == "sam":
        from samdsk_plan.proposals.sam import SamGenerator

        gen = SamGenerator.from_checkpoint(
            checkpoint if checkpoint is not None else samdsk.sam.checkpoint,
            model_type or samdsk.sam.model_type,
            device=device,
            **samdsk.sam.generator_settings(),
        )
        return {axis: gen for axis in samdsk.axes}
    raise SamdskError(f"unknown proposal generator {kind!r}; choose one of {', '.join(GENERATORS)}")


def case_key(volume: np.ndarray, generators: dict[int, ProposalGenerator]) -> str:
    """Cache key of a windowed volume proposed on with ``generators`` (one per axis)."""
    parts = [f"{axis}:{cache_key(volume, gen)}" for axis, gen in sorted(generators.items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def propose_case(
    case_id: str,
    volume: np.ndarray,
    generators: dict[int, ProposalGenerator],
    slices: dict[int, list[int]],
    cache: ProposalCache | None = None,
) -> dict[SliceKey, Proposals]:
    """Proposals on the requested ``slices`` (axis -> indices) of a ``(I, J, K)`` volume in [0, 1].

    Slices already in ``cache`` under this volume's key are reused; the others are generated
    (a whole axis at once through ``generate_batch`` when the generator has it) and the cache
    file is rewritten after each axis, so an interrupted run resumes from the last axis done.
    """
    key = case_key(volume, generators)
    store = cache.load(case_id, key) if cache is not None else {}
    for axis, indices in sorted(slices.items()):
        missing = [i for i in indices if (axis, i) not in store]
        if not missing:
            continue
        gen = generators[axis]
        images = [get_slice(volume, axis, i) for i in missing]
        batch = getattr(gen, "generate_batch", None)
        results = batch(images) if batch is not None else [gen(im) for im in images]
        store.update({(axis, i): r for i, r in zip(missing, results, strict=True)})
        if cache is not None:
            cache.save(case_id, key, store)
    return {(axis, i): store[(axis, i)] for axis, indices in slices.items() for i in indices}


@dataclass(frozen=True)
class CaseSummary:
    case_id: str
    n_slices: int
    n_proposals: int


def windowed_volume(image_path: str | Path, plans: Plans) -> tuple[np.ndarray, np.ndarray]:
    """Channel 0 of an image as a ``(I, J, K)`` float32 volume in [0, 1] (the plan's intensity
    window, see :func:`window_to_unit`) and the image's ``(4, 4)`` voxel-to-RAS affine."""
    try:
        image = read_image(image_path)
        array = np.asarray(image.array)
    except Exception as exc:
        raise SamdskError(f"{image_path}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    return window_to_unit(array[..., 0] if array.ndim == 4 else array, plans.normalization[0]), image.affine


def _roi(entry: dict, roi_dir: Path | None) -> np.ndarray | None:
    """Foreground that decides which slices are proposed on: a prediction in ``roi_dir``
    (``IMAGE_seg.nii.gz``, as the bundle's inference writes) or else the case's label."""
    if roi_dir is not None and prediction_file(roi_dir, entry).is_file():
        return np.asarray(read_image(prediction_file(roi_dir, entry)).array) > 0
    if entry.get("label"):
        return np.asarray(read_image(entry["label"]).array) > 0
    return None


def _propose_entry(
    entry: dict, plans: Plans, generators: dict[int, ProposalGenerator], cache_dir: Path, roi_dir: Path | None
) -> CaseSummary:
    case_id = entry_case_id(entry)
    volume, _ = windowed_volume(entry_image(entry), plans)
    roi = _roi(entry, roi_dir)
    slices = {axis: slice_indices(volume.shape, axis, roi, plans.samdsk.slice_margin) for axis in generators}
    result = propose_case(case_id, volume, generators, slices, ProposalCache(cache_dir))
    return CaseSummary(case_id, len(result), sum(len(p) for p in result.values()))


def propose_entries(
    entries: list[dict],
    plans: Plans,
    cache_dir: str | Path,
    generators: dict[int, ProposalGenerator],
    roi_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> list[CaseSummary]:
    """Propose for every data-list entry (``{"image": ..., "label"?: ...}``) into ``cache_dir``.

    Only channel 0 of multi-channel images is used. ``workers`` processes share the cases
    (use 1 for SAM: each worker would hold its own model).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = partial(
        _propose_entry,
        plans=plans,
        generators=generators,
        cache_dir=cache_dir,
        roi_dir=Path(roi_dir) if roi_dir else None,
    )
    return parallel_map(work, entries, workers, desc="propose", progress=progress)
