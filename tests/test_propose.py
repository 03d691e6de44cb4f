"""``samdsk-plan propose`` and the bundle's ``propose.json`` on real hippocampus cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samdsk_plan.cli.main import main
from samdsk_plan.io import read_image
from samdsk_plan.planning import Plans
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.pipeline import case_key, make_generators
from samdsk_plan.proposals.sam_checkpoint import build_sam
from samdsk_plan.proposals.volume import window_to_unit
from tests.test_bundle_run import run_bundle
from tests.test_sam import TINY

pytestmark = pytest.mark.slow  # real data or bundle runs: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"
PLANS = Plans.load(BUNDLE / "configs" / "plans.json")


def two_case_datalist(tmp_path: Path) -> Path:
    split = json.loads((REPO / "benchmarks" / "splits" / "hippocampus.json").read_text())
    path = tmp_path / "two.json"
    path.write_text(
        json.dumps(
            {"training": split["training"][:1], "unlabelled": [{"image": e["image"]} for e in split["unlabelled"][:2]]}
        )
    )
    return path


def test_cli_proposes_for_the_unlabelled_cases_and_reuses_the_cache(hippocampus, tmp_path, capsys):
    data, cache = two_case_datalist(tmp_path), tmp_path / "cache"
    args = ["propose", str(BUNDLE), str(data), "--base-dir", str(hippocampus), "-o", str(cache), "--fast", "-q"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "classical proposal generator" in captured.err
    files = sorted(p.name for p in cache.iterdir())
    split = json.loads(data.read_text())
    assert files == sorted(Path(e["image"]).name.replace(".nii.gz", ".npz") for e in split["unlabelled"])
    # every slice along all three axes (no ROI is known for unlabelled cases)
    case = Path(split["unlabelled"][0]["image"]).name.removesuffix(".nii.gz")
    volume = window_to_unit(read_image(hippocampus / split["unlabelled"][0]["image"]).array, PLANS.normalization[0])
    stored = ProposalCache(cache).load(case, case_key(volume, make_generators(PLANS, fast=True)))
    assert len(stored) == sum(volume.shape)
    assert all(p.window_size == np.take(volume, 0, axis=a).shape for (a, _), p in stored.items())
    mtimes = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes, "a cache hit rewrites nothing"


def test_cli_all_uses_labels_to_skip_far_slices(hippocampus, tmp_path):
    data, cache = two_case_datalist(tmp_path), tmp_path / "cache"
    assert (
        main(
            [
                "propose",
                str(BUNDLE),
                str(data),
                "--base-dir",
                str(hippocampus),
                "-o",
                str(cache),
                "--fast",
                "--all",
                "-q",
            ]
        )
        == 0
    )
    assert len(list(cache.iterdir())) == 3
    labelled = json.loads(data.read_text())["training"][0]
    label = read_image(hippocampus / labelled["label"]).array > 0
    volume = window_to_unit(read_image(hippocampus / labelled["image"]).array, PLANS.normalization[0])
    case = Path(labelled["image"]).name.removesuffix(".nii.gz")
    stored = ProposalCache(cache).load(case, case_key(volume, make_generators(PLANS, fast=True)))
    for axis in range(3):
        present = np.flatnonzero(np.any(label, axis=tuple(a for a in range(3) if a != axis)))
        expected = set(range(max(0, present[0] - 2), min(label.shape[axis], present[-1] + 3)))
        assert {i for a, i in stored if a == axis} == expected


def test_cli_sam_path_with_a_checkpoint_file(hippocampus, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"architecture": TINY, "model": build_sam(TINY).state_dict()}, ckpt)
    # A bundle whose plan keeps the tiny random SAM cheap: a 2x2 point grid, one slicing axis.
    plans = tmp_path / "plans.json"
    assert (
        main(
            [
                "plan",
                str(REPO / "dataset_fingerprints" / "hippocampus.json"),
                "-o",
                str(plans),
                "--set",
                "samdsk.proposals.sam.points_per_side=2",
                "--set",
                "samdsk.axes=[2]",
            ]
        )
        == 0
    )
    assert main(["emit", str(plans), "-o", str(tmp_path / "bundle")]) == 0
    data = two_case_datalist(tmp_path)
    args = [
        "propose",
        str(tmp_path / "bundle"),
        str(data),
        "--base-dir",
        str(hippocampus),
        "-o",
        str(tmp_path / "cache"),
        "--generator",
        "sam",
        "--checkpoint",
        str(ckpt),
        "--model-type",
        "auto",
        "-q",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "2 case(s)" in out and "(sam)" in out
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    missing = [str(tmp_path / "nope.pt") if a == str(ckpt) else a for a in args]
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope.pt") in err and "Traceback" not in err


def test_bundle_propose_config(hippocampus, tmp_path):
    data = two_case_datalist(tmp_path)
    args = {"dataset_dir": hippocampus, "datalist": data, "cache_dir": tmp_path / "cache", "fast": True}
    run_bundle(BUNDLE, ["propose.json"], overrides=args)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert not (BUNDLE / "proposals").exists()
