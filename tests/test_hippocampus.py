"""The real MSD hippocampus data: committed fingerprint reproduces, priors match the README."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from samdsk_plan.fingerprint import comparable, compute_fingerprint
from samdsk_plan.io import load_dataset, verify_dataset

pytestmark = pytest.mark.slow  # real data or bundle runs: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "dataset_fingerprints" / "hippocampus.json"


def test_verify_is_clean(hippocampus):
    report = verify_dataset(load_dataset(hippocampus), workers=2, progress=False)
    assert report.problems == []


def test_regenerating_reproduces_the_committed_fingerprint(hippocampus, tmp_path):
    out = tmp_path / "hippocampus.json"
    cmd = [sys.executable, "-m", "samdsk_plan", "fingerprint", str(hippocampus), "-o", str(out), "-j", "2", "-q"]
    subprocess.run(cmd, check=True, cwd=REPO)
    assert comparable(json.loads(out.read_text())) == comparable(json.loads(COMMITTED.read_text()))


def test_face_connectivity_counts_match_the_dataset_readme(hippocampus):
    # shared/data/hippocampus/README.md: with 6-connectivity class 1 has one 3D component in 254
    # volumes and two in 6; class 2 one in 247, two in 12, three in 1.
    fp = compute_fingerprint(load_dataset(hippocampus), workers=2, connectivity="face", progress=False)
    assert fp["classes"]["1"]["components_3d"]["histogram"] == {"1": 254, "2": 6}
    assert fp["classes"]["2"]["components_3d"]["histogram"] == {"1": 247, "2": 12, "3": 1}
    assert fp["n_cases"] == {"labelled": 260, "unlabelled": 1}
    assert fp["shape"]["min"] == [31, 40, 24] and fp["shape"]["max"] == [43, 59, 47]
    assert fp["shape"]["median"] == [35, 50, 36]
