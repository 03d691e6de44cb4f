"""Emitted bundles: reproducible, parseable by MONAI, consistent with MONAI's bundle tools."""

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from samdsk_plan.bundle import bundle_files, emit_bundle
from samdsk_plan.cli.main import main
from samdsk_plan.planning import Plans, plan_from_fingerprint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"
FINGERPRINT = REPO / "dataset_fingerprints" / "hippocampus.json"
# Mandatory keys of MONAI's bundle metadata schema (meta_schema_20240725).
METADATA_KEYS = {
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
}
TENSOR_KEYS = {
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
}


@pytest.fixture(scope="module")
def plans() -> Plans:
    return Plans(plan_from_fingerprint(json.loads(FINGERPRINT.read_text())))


def test_reemitting_reproduces_the_committed_bundle(tmp_path, plans):
    plans_path = tmp_path / "plans.json"
    assert main(["plan", str(FINGERPRINT), "-o", str(plans_path)]) == 0
    assert main(["emit", str(plans_path), "-o", str(tmp_path / "hippocampus")]) == 0
    emitted = sorted(
        p.relative_to(tmp_path / "hippocampus") for p in (tmp_path / "hippocampus").rglob("*") if p.is_file()
    )
    committed = sorted(p.relative_to(BUNDLE) for p in BUNDLE.rglob("*") if p.is_file() and p.suffix != ".pt")
    assert emitted == committed
    for rel in emitted:
        assert (tmp_path / "hippocampus" / rel).read_bytes() == (BUNDLE / rel).read_bytes(), rel


def test_emit_keeps_weights_and_replaces_configs(tmp_path, plans):
    out = emit_bundle(plans, tmp_path / "b")
    (out / "models" / "model.pt").write_bytes(b"weights")
    (out / "configs" / "train.json").write_text("stale")
    emit_bundle(plans, out)
    assert (out / "models" / "model.pt").read_bytes() == b"weights"
    assert json.loads((out / "configs" / "train.json").read_text())["epochs"] == 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_metadata_has_every_schema_field(plans):
    meta = json.loads(bundle_files(plans, "hippocampus")["configs/metadata.json"])
    assert set(meta) >= METADATA_KEYS
    assert meta["version"] in meta["changelog"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert set(image) >= TENSOR_KEYS and set(pred) >= TENSOR_KEYS
    assert image["num_channels"] == 1 and image["modality"] == "MRI"
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert image["spatial_shape"] == ["8*n", "8*n", "8*n"]


@pytest.mark.parametrize(
    "files",
    [["train.json"], ["inference.json"], ["train.json", "evaluate.json"], ["train.json", "multi_gpu_train.json"]],
)
def test_configs_parse_and_have_zoo_ids(files):
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in files])
    parser.parse()
    for key in ("bundle_root", "device", "dataset_dir", "datalist", "network_def", "inferer"):
        assert key in parser, key
    if "train.json" in files:
        for key in ("train::trainer", "train::trainer::max_epochs", "train::dataset", "validate::evaluator"):
            assert key in parser, key
    else:
        assert {"dataset", "evaluator"} <= set(parser.get())
    assert not any("#" in s for s in _strings(parser.get())), "a '#' in a config string would be rewritten"


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_network_matches_the_plan_and_metadata(plans):
    from monai.bundle import verify_net_in_out

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    assert net.deep_supervision and len(net.filters) == len(plans.configuration("3d_fullres").network.filters)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=str(BUNDLE / "configs" / "inference.json"),
        device="cpu",
        n=2,
    )


def test_ct_plan_emits_clip_and_zscore(plans):
    ct = plans.to_json()
    ct["normalization"] = [
        {"channel": 0, "modality": "CT", "scheme": "ct", "clip": [-100.0, 300.0], "mean": 50.0, "std": 100.0}
    ]
    train = json.loads(bundle_files(Plans(ct), "ct")["configs/train.json"])
    norm = [t for t in train["train"]["deterministic_transforms"] if t["_target_"] == "ScaleIntensityRanged"]
    # Clip to [-100, 300] then (x - 50) / 100 is the linear map onto [-1.5, 2.5], clipped.
    assert norm == [
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": -100.0,
            "a_max": 300.0,
            "b_min": -1.5,
            "b_max": 2.5,
            "clip": True,
        }
    ]


def test_emit_rejects_a_file_that_is_not_a_plan(tmp_path, capsys):
    bad = tmp_path / "plans.json"
    bad.write_text('{"schema_version": 1}')
    assert main(["emit", str(bad), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a samdsk-plan plans file" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_propose_config_parses():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "propose.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser.parse()
    # the proposal settings default to the plan's (read and validated in the bundle's process)
    assert parser.get_parsed_content("generator") == "classical" and parser.get_parsed_content("checkpoint") is None
    assert parser.get_parsed_content("model_type") == "vit_b"
    assert parser["data_part"] == "unlabelled"
    assert "propose_entries" in parser["run"][0]


def test_datalist_weights_steer_sampling_and_are_validated(tmp_path):
    from samdsk_plan.bundle.runtime.data import sample_weights, without_weights
    from samdsk_plan.errors import DatasetError
    from samdsk_plan.io.datalists import datalist_files

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps(
            {
                "training": [
                    {"image": "a.nii.gz", "label": "b.nii.gz"},
                    {"image": "c.nii.gz", "label": "b.nii.gz", "weight": 0.5, "samdsk": {"round": 1}},
                ],
                "validation": [{"image": "a.nii.gz", "label": "b.nii.gz"}],
            }
        )
    )
    files = datalist_files(path, "train", tmp_path)
    assert sample_weights(files) == [1.0, 0.5]
    assert without_weights(files) == [
        {"case_id": "a", "image": str(tmp_path / "a.nii.gz"), "label": str(tmp_path / "b.nii.gz")},
        {"case_id": "c", "image": str(tmp_path / "c.nii.gz"), "label": str(tmp_path / "b.nii.gz")},
    ]
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "weight": -1}]}))
    with pytest.raises(DatasetError, match="weight -1; it must be a number >= 0"):
        datalist_files(path, "train", tmp_path)
    with pytest.raises(DatasetError, match="every training entry has weight 0"):
        sample_weights([{"weight": 0.0}])


def test_initialised_loads_a_bundle_checkpoint_and_names_bad_files(tmp_path):
    import torch

    from samdsk_plan.bundle.runtime.components import initialised
    from samdsk_plan.errors import SamdskError

    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save({"model": source.state_dict()}, tmp_path / "wrapped.pt")
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    for name in ("wrapped.pt", "plain.pt"):
        net = initialised(torch.nn.Linear(3, 2), str(tmp_path / name))
        assert torch.equal(net.weight, source.weight)
    assert initialised(target, None) is target
    with pytest.raises(SamdskError, match="initial checkpoint not found"):
        initialised(target, str(tmp_path / "missing.pt"))
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(SamdskError, match="does not fit the bundle's network"):
        initialised(target, str(tmp_path / "other.pt"))
