"""One predict -> propose -> match pass over cases, from the files the bundle's inference wrote.

For a case with image ``IMG.nii.gz`` and the bundle's softmax output ``PRED_DIR/IMG_prob.nii.gz``
(:func:`~samdsk_plan.io.datalists.prediction_file`; channel-last, in the image's geometry), the
image is windowed with the plan's normalisation
(:func:`~samdsk_plan.proposals.pipeline.windowed_volume`) and :func:`match_case` gets proposals
(cached) on the slices near the predicted foreground along the plan's axes, and runs
:func:`~samdsk_plan.matching.match_volume` with the plan's ROI-count bounds.
:func:`match_entries` does this for many cases and stores, per case, the candidate pseudo-label
(``CASE.nii.gz`` in the image's geometry, ``CASE.png`` for a natural 2D image) and a record
(``CASE.json``: beta, per-class scores, exactness, chosen proposals, model confidence);
finished cases are skipped when the pass is run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from samdsk_plan.io import write_image
from samdsk_plan.io.atomic import atomic_write_json
from samdsk_plan.io.datalists import prediction_file, read_probabilities
from samdsk_plan.io.images import label_suffix
from samdsk_plan.io.layouts import entry_case_id, entry_image, read_json_object
from samdsk_plan.io.parallel import parallel_map
from samdsk_plan.loop.selection import select
from samdsk_plan.matching import MatchSettings, VolumeMatch, match_volume
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.base import PromptedGenerator, ProposalGenerator, Proposals
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.pipeline import propose_case, windowed_volume
from samdsk_plan.proposals.volume import slice_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchRecord:
    """What matching made of one case (stored as ``CASE.json``).

    Attributes:
        case_id: the case.
        image: image path; ``label``: the candidate pseudo-label written for it.
        beta: matching score (mean 3D overlap of label and prediction over predicted classes).
        scores: per foreground class (as a string) its 3D overlap.
        exact: every slice's matching was exact.
        confidence: the model's mean top softmax probability over its predicted foreground
            (0 when it predicts none), the usual self-training selection score.
        generator: proposal generator name.
        chosen: per slice ``"axis:index"``, per class, the chosen proposal indices.
        seconds: wall time in seconds of this case's ``proposals`` (making them, or reading
            them back from the caches) and ``matching`` (empty in records written before it
            was kept).
        floor: the matching's probability floor for this case (None in records written before
            it was kept).
    """

    case_id: str
    image: str
    label: str
    beta: float
    scores: dict[str, float]
    exact: bool
    confidence: float
    generator: str
    chosen: dict[str, dict[str, list[int]]]
    seconds: dict[str, float] = field(default_factory=dict)
    floor: float | None = None


def confidence(probs: np.ndarray) -> float:
    """Mean top softmax probability over the voxels predicted foreground; 0 if there are none."""
    top = probs.max(axis=0)
    fg = np.argmax(probs, axis=0) > 0
    return float(top[fg].mean()) if fg.any() else 0.0


def case_proposals(
    case_id: str,
    volume: np.ndarray,
    probs: np.ndarray,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: str | Path | None,
    round_cache_dir: str | Path | None = None,
) -> dict[tuple[int, int], Proposals]:
    """Proposals per ``(axis, index)`` on the slices near the predicted foreground of ``probs``
    ``(C, I, J, K)`` (plan's ``samdsk.slice_margin``), for a ``volume`` ``(I, J, K)`` windowed
    to [0, 1]; the classical generator's inside each slice's region of interest (the predicted
    foreground's box grown by the plan's :meth:`~samdsk_plan.planning.plans.SamdskPlan.roi_margin_px`).
    Image-only proposals are cached in ``cache_dir``, prompted ones (they depend on ``probs``)
    in ``round_cache_dir``."""
    roi = np.argmax(probs, axis=0) > 0
    samdsk = plans.samdsk
    slices = {axis: slice_indices(volume.shape, axis, roi, samdsk.slice_margin) for axis in generators}
    cache = ProposalCache(cache_dir) if cache_dir is not None else None
    round_cache = ProposalCache(round_cache_dir) if round_cache_dir is not None else None
    margins = {axis: samdsk.roi_margin_px(axis) for axis in generators}
    return propose_case(case_id, volume, generators, slices, cache, probs, round_cache, roi, margins)


def match_proposals(
    probs: np.ndarray,
    proposals: dict[tuple[int, int], Proposals],
    plans: Plans,
    workers: int = 1,
    settings: MatchSettings | None = None,
) -> VolumeMatch:
    """:func:`~samdsk_plan.matching.match_volume` of ``probs`` ``(C, I, J, K)`` and the slices'
    ``proposals`` with the plan's ROI-count bounds, fusion and matching settings (or
    ``settings``), the slices solved in ``workers`` processes."""
    samdsk = plans.samdsk
    return match_volume(
        probs,
        proposals,
        samdsk.bounds,
        samdsk.max_components,
        fusion=samdsk.fusion,
        connectivity=samdsk.connectivity,
        settings=settings or MatchSettings(**samdsk.matching),
        workers=workers,
    )


def match_case(
    case_id: str,
    volume: np.ndarray,
    probs: np.ndarray,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: str | Path | None,
    round_cache_dir: str | Path | None = None,
) -> VolumeMatch:
    """Match one case: :func:`case_proposals` then :func:`match_proposals`."""
    proposals = case_proposals(case_id, volume, probs, plans, generators, cache_dir, round_cache_dir)
    return match_proposals(probs, proposals, plans)


def _match_entry(
    entry: dict,
    pred_dir: Path,
    out_dir: Path,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: Path | None,
    round_cache_dir: Path | None,
    slice_workers: int = 1,
) -> MatchRecord:
    image, case_id = entry_image(entry), entry_case_id(entry)
    record_path = out_dir / f"{case_id}.json"
    if record_path.is_file():
        return MatchRecord(**read_json_object(record_path))
    volume, affine = windowed_volume(image, plans)
    probs = read_probabilities(prediction_file(pred_dir, entry, "prob"), volume.shape, plans.n_classes)
    start = time.perf_counter()
    proposals = case_proposals(case_id, volume, probs, plans, generators, cache_dir, round_cache_dir)
    proposed = time.perf_counter()
    result = match_proposals(probs, proposals, plans, slice_workers)
    seconds = {"proposals": round(proposed - start, 3), "matching": round(time.perf_counter() - proposed, 3)}
    label_path = write_image(out_dir / f"{case_id}{label_suffix(image)}", result.label.astype(np.uint8), affine)
    record = MatchRecord(
        case_id=case_id,
        image=str(image),
        label=str(label_path),
        beta=result.beta,
        scores={str(c): s for c, s in result.scores.items()},
        exact=result.exact,
        confidence=confidence(probs),
        generator=next(iter(generators.values())).name,
        chosen={k: {str(c): ids for c, ids in v.items()} for k, v in result.chosen.items()},
        seconds=seconds,
        floor=result.floor,
    )
    atomic_write_json(record_path, asdict(record))
    return record


def match_entries(
    entries: list[dict],
    pred_dir: str | Path,
    out_dir: str | Path,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    round_cache_dir: str | Path | None = None,
) -> list[MatchRecord]:
    """Match every data-list entry whose probabilities are in ``pred_dir``; writes
    ``out_dir/CASE.nii.gz`` (``.png`` for natural images) and ``out_dir/CASE.json`` per case and
    reuses those already there.
    Records name their label by absolute path, so datalists built from them work anywhere.
    Proposals are cached as :func:`match_case` says. ``workers`` processes take one case each;
    with fewer cases than workers, the cases go one after another, each case's slices solved
    in ``workers`` processes."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = partial(
        _match_entry,
        pred_dir=Path(pred_dir),
        out_dir=out_dir,
        plans=plans,
        generators=generators,
        cache_dir=Path(cache_dir) if cache_dir else None,
        round_cache_dir=Path(round_cache_dir) if round_cache_dir else None,
    )
    if len(entries) < workers:
        return parallel_map(partial(work, slice_workers=workers), entries, 1, desc="match", progress=progress)
    return parallel_map(work, entries, workers, desc="match", progress=progress)


def accepted_entry(entry: dict, record: MatchRecord, round_index: int, weight: float) -> dict:
    """The training datalist entry of pool ``entry`` accepted with ``record``'s pseudo-label,
    with its provenance."""
    return {
        "case_id": entry_case_id(entry),
        "image": entry["image"],
        "label": record.label,
        "weight": weight,
        "samdsk": {
            "round": round_index,
            "beta": record.beta,
            "scores": record.scores,
            "generator": record.generator,
            "exact": record.exact,
        },
    }


def with_accepted(
    datalist: dict, records: Mapping[str, MatchRecord], accepted: list[str], round_index: int, weight: float
) -> dict:
    """``datalist`` with the ``accepted`` case ids moved from its ``unlabelled`` list to the end of
    its ``training`` list, each with its pseudo-label from ``records`` (:func:`accepted_entry`)."""
    pool = {entry_case_id(e): e for e in datalist["unlabelled"]}
    taken = set(accepted)
    return {
        **datalist,
        "training": list(datalist.get("training", []))
        + [accepted_entry(pool[c], records[c], round_index, weight) for c in accepted],
        "unlabelled": [e for e in datalist["unlabelled"] if entry_case_id(e) not in taken],
    }


def pseudolabel_pass(
    entries: list[dict],
    pred_dir: str | Path,
    out_dir: str | Path,
    plans: Plans,
    generators: dict[int, ProposalGenerator | PromptedGenerator],
    cache_dir: str | Path | None,
    threshold: float,
    max_accepted: int | None = None,
    weight: float = 1.0,
    workers: int = 1,
) -> Path:
    """Match every entry (its probabilities in ``pred_dir``), accept those with
    ``beta >= threshold`` (highest first, at most ``max_accepted``) and write
    ``out_dir/accepted.json``: a datalist whose ``training`` list holds the accepted cases with
    their pseudo-labels and provenance, and whose ``unlabelled`` list holds the rest. Prompted
    proposals are kept in ``out_dir/proposals``."""
    found = match_entries(
        entries, pred_dir, out_dir, plans, generators, cache_dir, workers, round_cache_dir=Path(out_dir) / "proposals"
    )
    records = {r.case_id: r for r in found}
    accepted = select({cid: r.beta for cid, r in records.items()}, threshold, max_accepted)
    datalist = with_accepted({"training": [], "unlabelled": entries}, records, accepted, 1, weight)
    path = atomic_write_json(Path(out_dir) / "accepted.json", {**datalist, "threshold": threshold})
    logger.info("accepted %d of %d case(s) with beta >= %.3f: %s", len(accepted), len(records), threshold, path)
    return path
