"""Where LiteMedSAM's pseudo-labels lose to its box oracle: one prompt box per class, side by side,
on the cases a finished SamDSK round accepted.

Reads a ``benchmarks/samdsk.py`` work folder (``--out`` of that script; 2D datasets): per seed,
the arm's accepted round-``--round`` cases, their matched labels (``matches/pool/CASE.*``), the
model's probabilities, the hidden labels and the work folder's embedding cache (an embedding that
is not there is computed). Per foreground class it prints the mean Dice against the truth of

- ``prediction``: the model's argmax; ``matched``: the label the round accepted (the matching's
  choice among the plan's box variants);
- LiteMedSAM's mask for one box: ``largest`` the box of the class's largest predicted region,
  ``hull`` of all its predicted pixels, ``p>0.3`` / ``p>0.1`` of every pixel whose class
  probability passes that, ``second pass`` of the matched label's own region (prompting again
  from the better label), and ``true box`` of the true region (the box oracle).

Nothing is trained, matched or written; a missing or unreadable file ends the run with its name.

    .venv/bin/python benchmarks/prompt_boxes.py /tmp/bench/psfhs-m
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from rematch import finished_round, round_arguments, round_probabilities  # benchmarks/ (the script's folder)

from samdsk_plan.errors import SamdskError
from samdsk_plan.evaluation.dice import dice_per_class
from samdsk_plan.io.images import read_image_or_fail
from samdsk_plan.io.layouts import read_json_object
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.foundation import embedding_cache_for
from samdsk_plan.proposals.litemedsam import LiteMedSam
from samdsk_plan.proposals.pipeline import windowed_volume
from samdsk_plan.proposals.prompts import Box, region_boxes

SOURCES = ("prediction", "matched", "largest", "hull", "p>0.3", "p>0.1", "second pass", "true box")


def hull_box(mask: np.ndarray) -> Box | None:
    """The bounding box of every pixel of a ``(H, W)`` bool mask (None if it is empty)."""
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())) if len(xs) else None


def case_masks(
    model: LiteMedSam, embedding: np.ndarray, probs: np.ndarray, label: np.ndarray, truth: np.ndarray, c: int
) -> dict:
    """Per source of :data:`SOURCES` the ``(H, W)`` bool mask it gives class ``c`` on one image
    (``probs`` ``(C, H, W)``; ``label``, ``truth`` ``(H, W)``); an empty box gives an empty mask."""
    argmax = np.argmax(probs, axis=0)
    boxes = {
        "largest": (region_boxes(argmax == c, limit=1) or [None])[0],
        "hull": hull_box(argmax == c),
        "p>0.3": hull_box(probs[c] > 0.3),
        "p>0.1": hull_box(probs[c] > 0.1),
        "second pass": (region_boxes(label == c, limit=1) or [None])[0],
        "true box": hull_box(truth == c),
    }
    masks = {"prediction": argmax == c, "matched": label == c}
    for name, box in boxes.items():
        if box is None:
            masks[name] = np.zeros_like(truth, dtype=bool)
        else:
            masks[name] = model.decode(embedding, truth.shape, np.array([box], dtype=np.float32))[0][0]
    return masks


def seed_table(model: LiteMedSam, out: Path, arm_dir: Path, round_index: int, plans: Plans) -> dict:
    """Per ``(class, source)`` the Dice of every accepted case of one seed's round."""
    rdir = arm_dir / f"round_{round_index}"
    hidden = read_json_object(arm_dir / "hidden_labels.json")
    accepted = read_json_object(arm_dir / "state.json")["rounds"][str(round_index)]["accepted"]
    cache = embedding_cache_for(model, out / "embeddings", 4.0)
    classes = plans.samdsk.class_values
    dice: dict = {}
    for case in accepted:
        record = read_json_object(rdir / "matches" / "pool" / f"{case}.json")
        volume, _ = windowed_volume(record["image"], plans)
        if volume.shape[2] != 1:
            raise SamdskError(f"{record['image']}: not a 2D image (shape {volume.shape})")
        probs = round_probabilities(rdir, case, volume.shape, plans.n_classes)[..., 0]
        label = np.asarray(read_image_or_fail(record["label"]).array).reshape(probs.shape[1:])
        truth = np.asarray(read_image_or_fail(hidden[case]).array).reshape(probs.shape[1:])
        image = volume[..., 0]
        embedding = cache.get(image)
        if embedding is None:
            embedding = model.encode(image)
        for c in classes:
            for name, mask in case_masks(model, embedding, probs, label, truth, c).items():
                dice.setdefault((c, name), []).append(dice_per_class(mask, truth == c, [1])[1])
    return dice


def main() -> None:
    args = round_arguments(__doc__.split("\n\n")[0], "read (a 2D dataset's)").parse_args()
    plans, seeds = finished_round(args.out, args.arm, args.round_index)
    torch.set_num_threads(1)
    names = {c.value: c.name for c in plans.samdsk.classes}
    try:
        model = LiteMedSam()
        print(f"{args.out} ({args.arm}, round {args.round_index}): mean Dice against the truth of the accepted cases")
        print(f"{'seed':<6} {'class':<16} " + " ".join(f"{s:>11}" for s in SOURCES))
        for seed_dir in seeds:
            table = seed_table(model, args.out, seed_dir / args.arm, args.round_index, plans)
            for c, name in names.items():
                values = table.get((c, SOURCES[0]), [])
                row = " ".join(f"{np.mean(table[(c, s)]):>11.3f}" for s in SOURCES) if values else "no case accepted"
                print(f"{seed_dir.name:<6} {name[:16]:<16} {row}  (n={len(values)})", flush=True)
    except SamdskError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
