"""Time ``samdsk-plan fingerprint`` against nnU-Net v2's ``nnUNetv2_extract_fingerprint``.

Both tools fingerprint the Medical Segmentation Decathlon hippocampus dataset (Task04) with the
same number of worker processes. nnU-Net needs its own raw layout, so a temporary
``nnUNet_raw/Dataset004_Hippocampus`` is built from symlinks to the MSD files (nothing is copied
and nothing is written next to the data). The benchmark

1. runs both command lines alternately ``--repeats`` times each as subprocesses and reports the
   median and minimum wall time (interpreter start-up and imports included, as a user sees it),
   against the target: ours at most 0.5x nnU-Net's time;
2. repeats the comparison in this process, so that the parent's start-up and imports are not
   timed (nnU-Net's "spawn" workers still import nnunetv2 and torch on every run);
3. prints both fingerprints' foreground intensity statistics, median spacing and median shape
   after cropping side by side.

Run it with ``make bench`` or ``.venv/bin/python benchmarks/fingerprint.py [-j 2] [--repeats 3]``
(needs the ``bench`` extra: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATASET = "Dataset004_Hippocampus"
TARGET = 0.5
INTENSITY_KEYS = ("mean", "std", "min", "max", "median", "percentile_00_5", "percentile_99_5")


def build_nnunet_raw(msd: Path, root: Path) -> int:
    """Write ``root/nnUNet_raw/DATASET`` as symlinks to the MSD training cases; returns their number."""
    msd_json = json.loads((msd / "dataset.json").read_text())
    folder = root / "nnUNet_raw" / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for entry in msd_json["training"]:
        case = Path(entry["image"]).name.removesuffix(".nii.gz")
        (folder / "imagesTr" / f"{case}_0000.nii.gz").symlink_to((msd / entry["image"]).resolve())
        (folder / "labelsTr" / f"{case}.nii.gz").symlink_to((msd / entry["label"]).resolve())
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": msd_json["modality"],
                "labels": {name: int(value) for value, name in msd_json["labels"].items()},
                "numTraining": len(msd_json["training"]),
                "file_ending": ".nii.gz",
            },
            indent=1,
        )
    )
    return len(msd_json["training"])


def run_command(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time of ``cmd``; exits with its output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"FAILED (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def fresh_command(cmd: list[str], out: Path, env: dict[str, str]) -> float:
    """:func:`run_command` after removing its output ``out``, so it is written each time (as
    nnU-Net's is: the fingerprint command keeps an unchanged file)."""
    out.unlink(missing_ok=True)
    return run_command(cmd, env)


def alternate(ours: Callable[[], float], theirs: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Run ``ours`` and ``theirs`` in turn, ``repeats`` times; returns both lists of seconds."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(ours())
        times[1].append(theirs())
    return times


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def in_process(data: Path, out: Path, workers: int, repeats: int) -> tuple[list[float], list[float]]:
    """Both fingerprints as library calls (nnU-Net reads its paths from ``os.environ``)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    from samdsk_plan.fingerprint import compute_fingerprint, write_fingerprint
    from samdsk_plan.io import load_dataset

    def nnunet() -> None:
        extractor = DatasetFingerprintExtractor(DATASET, num_processes=workers)
        extractor.show_progress_bar = False
        with contextlib.redirect_stdout(io.StringIO()):  # its "Using <reader class>" line
            extractor.run(overwrite_existing=True)

    def ours() -> None:
        out.unlink(missing_ok=True)  # written each time, as nnU-Net's (overwrite_existing) is
        write_fingerprint(compute_fingerprint(load_dataset(data), workers=workers, progress=False), out)

    return alternate(lambda: timed(ours), lambda: timed(nnunet), repeats)


def print_times(title: str, ours: list[float], theirs: list[float]) -> None:
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"\n{title}\n{'tool':<30}{'median [s]':>12}{'min [s]':>10}   runs [s]")
    for name, t in (("samdsk-plan fingerprint", ours), ("nnUNetv2_extract_fingerprint", theirs)):
        print(f"{name:<30}{statistics.median(t):>12.2f}{min(t):>10.2f}   {', '.join(f'{x:.2f}' for x in t)}")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"{'ratio ours / nnU-Net (median)':<30}{ratio:>12.2f}   target <= {TARGET}: {verdict}")


def print_comparison(ours: dict, theirs: dict) -> None:
    key = "foreground_intensity_properties_per_channel"
    a, b = ours[key]["0"], theirs[key]["0"]
    print(f"\n{'foreground intensity, channel 0':<34}{'samdsk-plan':>20}{'nnU-Net':>20}")
    for key in INTENSITY_KEYS:
        print(f"{key:<34}{a[key]:>20.7g}{b[key]:>20.7g}")
    # nnU-Net's SimpleITK reader gives axes in (z, y, x) order: reversed here to NIfTI (i, j, k).
    rows = (
        ("median spacing [mm]", ours["spacing"]["median"], np.median(theirs["spacings"], axis=0)[::-1]),
        (
            "median shape after crop",
            ours["shape_after_crop"]["median"],
            np.median(theirs["shapes_after_crop"], axis=0)[::-1],
        ),
    )
    for name, mine, other in rows:
        print(f"{name + ' (i, j, k)':<34}{[float(v) for v in mine]!s:>20}{[float(v) for v in other]!s:>20}")
    print(
        "Notes: nnU-Net draws 1e8 / n_cases foreground voxels per case with replacement (seed 1234), so every\n"
        "case weighs the same; samdsk-plan keeps up to 1e7 / n_cases per case, i.e. every foreground voxel here\n"
        f"({a['n_voxels']}), so small differences in mean, std and percentiles are expected.\n"
        "samdsk-plan's spacing and shape statistics also count the unlabelled (imagesTs) cases.\n"
        "Only samdsk-plan computes, per class: volume fractions, 3D component counts, per-slice region counts\n"
        "along all 3 axes, component sizes and per-slice region areas."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=(REPO / "../shared/data/hippocampus").resolve(),
        help="MSD hippocampus folder (default: ../shared/data/hippocampus next to the repository)",
    )
    parser.add_argument("-j", "--workers", type=int, default=2, help="worker processes for both tools (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool (default: 3)")
    args = parser.parse_args()
    data, w = args.data.resolve(), str(args.workers)

    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as tmp:
        root = Path(tmp)
        n_cases = build_nnunet_raw(data, root)
        paths = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        env = {**os.environ, **paths}
        ours_out = root / "ours.json"
        ours_cmd = [sys.executable, "-m", "samdsk_plan", "fingerprint", str(data), "-o", str(ours_out), "-j", w, "-q"]
        nnunet_cmd = [
            str(Path(sys.executable).with_name("nnUNetv2_extract_fingerprint")),
            "-d",
            "4",
            "-np",
            w,
            "--clean",
            "--no_pbar",
        ]
        print(
            f"{n_cases} labelled cases from {data}; {w} workers, {args.repeats} runs each, alternating; "
            f"samdsk-plan {version('samdsk-plan')}, nnunetv2 {version('nnunetv2')}"
        )
        print_times(
            "Subprocess wall time (interpreter start-up and imports included)",
            *alternate(
                lambda: fresh_command(ours_cmd, ours_out, env), lambda: run_command(nnunet_cmd, env), args.repeats
            ),
        )
        os.environ.update(paths)
        print_times(
            "In-process wall time (parent start-up and imports excluded)",
            *in_process(data, ours_out, args.workers, args.repeats),
        )
        nnunet_out = root / "nnUNet_preprocessed" / DATASET / "dataset_fingerprint.json"
        print_comparison(json.loads(ours_out.read_text()), json.loads(nnunet_out.read_text()))


if __name__ == "__main__":
    main()
