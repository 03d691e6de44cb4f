"""Reproducible splits of the labelled cases for label-efficient experiments.

A split divides the labelled cases into a labelled training set, a hidden-label pool (treated
as unlabelled: training never sees these labels, they only measure pseudo-label quality) and a
test set. It is written as a MONAI datalist whose paths are relative to the dataset folder:

* ``training``: labelled training cases (``image``, ``label``);
* ``unlabelled``: the hidden-label pool (``image``, ``hidden_label``) followed by the dataset's
  own unlabelled cases (``image``);
* ``testing``: test cases (``image``, ``label``);
* ``split``: seed, fractions, counts, the groups of identical images; plus ``channel_names`` and
  ``labels`` of the dataset.

Cases whose images are identical (the same pixels, e.g. one frame annotated twice) always land on
the same side, so a test image never has a copy in training or in the pool.

Our datalist reader, and the emitted bundles, read ``testing`` and ``unlabelled`` entries as
unlabelled, so a fingerprint or training run on the split file sees only the training labels.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.cases import Case, Dataset
from samdsk_plan.io.images import read_image_or_fail


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _image(case: Case, root: Path) -> str | list[str]:
    paths = [_rel(p, root) for p in case.images]
    return paths[0] if len(paths) == 1 else paths


def _check_fractions(labelled_fraction: float, test_fraction: float) -> None:
    """SamdskError naming the option unless both are finite fractions in range and sum to at most 1."""
    if not 0 < labelled_fraction <= 1:  # also refuses NaN
        raise SamdskError(f"--labelled-fraction must be a number in (0, 1], got {labelled_fraction}")
    if not 0 <= test_fraction < 1:
        raise SamdskError(f"--test-fraction must be a number in [0, 1), got {test_fraction}")
    if labelled_fraction + test_fraction > 1:
        raise SamdskError(
            f"--labelled-fraction + --test-fraction must be at most 1, got {labelled_fraction} + "
            f"{test_fraction} = {labelled_fraction + test_fraction:g}"
        )


def identical_groups(cases: list[Case]) -> list[list[int]]:
    """Indices (into ``cases``) of the groups of two or more cases whose images hold the same
    pixels (shape, type and values of every channel file), in case order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        digest = hashlib.sha256()
        for path in case.images:
            array = np.ascontiguousarray(read_image_or_fail(path).array)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
        groups[digest.hexdigest()].append(i)
    return sorted(g for g in groups.values() if len(g) > 1)


def make_split(
    dataset: Dataset, labelled_fraction: float, test_fraction: float, seed: int = 0, pool_size: int | None = None
) -> dict:
    """Split ``dataset``'s labelled cases; fractions are of the labelled cases.

    Cases are sorted by id, then permuted by ``numpy.random.default_rng(seed)``: the first
    ``round(test_fraction * n)`` go to test, the next ``max(1, round(labelled_fraction * n))``
    to labelled training, the rest to the hidden-label pool. A group of identical images goes
    where its first member in that order goes (so a part may differ from its share by the size of
    a group). ``pool_size`` keeps only the first that many pool cases (a smaller pool for a short
    run); the others are left out of the datalist and counted as ``left_out``.
    """
    _check_fractions(labelled_fraction, test_fraction)
    if pool_size is not None and pool_size < 0:
        raise SamdskError(f"--pool-size must be >= 0, got {pool_size}")
    labelled = sorted(dataset.labelled, key=lambda c: c.case_id)
    n = len(labelled)
    n_test = round(test_fraction * n)
    n_train = max(1, round(labelled_fraction * n))
    if n_test + n_train > n:
        raise SamdskError(f"{dataset.source}: {n} labelled case(s) are too few for this split")
    order = np.random.default_rng(seed).permutation(n)
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    side = np.where(rank < n_test, 0, np.where(rank < n_test + n_train, 1, 2))
    groups = identical_groups(labelled)
    for group in groups:
        side[group] = side[min(group, key=lambda i: rank[i])]
    pool = sorted(np.flatnonzero(side == 2), key=lambda i: rank[i])
    kept = pool if pool_size is None else pool[:pool_size]
    test = [labelled[i] for i in np.flatnonzero(side == 0)]
    train = [labelled[i] for i in np.flatnonzero(side == 1)]
    hidden = [labelled[i] for i in sorted(kept)]
    root = dataset.root or dataset.source.parent
    return {
        "split": {
            "dataset": dataset.name,
            "seed": seed,
            "labelled_fraction": labelled_fraction,
            "test_fraction": test_fraction,
            "counts": {
                "training": len(train),
                "hidden_label_pool": len(hidden),
                "testing": len(test),
                "unlabelled": len(dataset.unlabelled),
                **({"left_out": len(pool) - len(kept)} if pool_size is not None else {}),
            },
            "identical_images": [[labelled[i].case_id for i in g] for g in groups],
        },
        "channel_names": {str(i): n for i, n in enumerate(dataset.channel_names)},
        "labels": {str(v): name for v, name in sorted(dataset.labels.items())},
        "training": [{"case_id": c.case_id, "image": _image(c, root), "label": _rel(c.label, root)} for c in train],
        "unlabelled": [
            {"case_id": c.case_id, "image": _image(c, root), "hidden_label": _rel(c.label, root)} for c in hidden
        ]
        + [
            {"case_id": c.case_id, "image": _image(c, root)}
            for c in sorted(dataset.unlabelled, key=lambda c: c.case_id)
        ],
        "testing": [{"case_id": c.case_id, "image": _image(c, root), "label": _rel(c.label, root)} for c in test],
    }
