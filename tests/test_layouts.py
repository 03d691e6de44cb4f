"""The three input layouts turn into the same case descriptions."""

import json

import pytest

from samdsk_plan.errors import DatasetError
from samdsk_plan.io import load_dataset
from tests.conftest import LABELS, write_datalist, write_msd, write_nnunet


def summary(dataset):
    return sorted((c.case_id, tuple(p.name for p in c.images), c.labelled) for c in dataset.cases)


def test_msd_layout(msd_dataset):
    d = load_dataset(msd_dataset)
    assert (d.layout, d.name, d.channel_names, d.labels) == ("msd", "synth", ("MRI",), LABELS)
    assert [c.case_id for c in d.labelled] == ["c_001", "c_002"]
    assert [c.case_id for c in d.unlabelled] == ["c_100"]
    assert d.labelled[0].label == msd_dataset / "labelsTr" / "c_001.nii.gz"
    assert d.problems == ()
    # Passing the dataset.json itself is the same as passing the folder.
    assert summary(load_dataset(msd_dataset / "dataset.json")) == summary(d)


def test_nnunet_layout(nnunet_dataset):
    d = load_dataset(nnunet_dataset)
    assert (d.layout, d.channel_names, d.labels) == ("nnunetv2", ("MRI",), LABELS)
    assert [(c.case_id, c.labelled) for c in d.cases] == [("c_001", True), ("c_002", True), ("c_100", False)]
    assert d.cases[0].images == (nnunet_dataset / "imagesTr" / "c_001_0000.nii.gz",)
    assert d.problems == ()


def test_datalist_layout_with_base_dir(tmp_path):
    path = write_datalist(tmp_path / "synth")
    d = load_dataset(path, base_dir=tmp_path / "synth" / "data")
    assert (d.layout, d.labels) == ("datalist", LABELS)
    assert [(c.case_id, c.labelled) for c in d.cases] == [("c_001", True), ("c_002", True), ("c_100", False)]
    assert d.cases[0].label == tmp_path / "synth" / "data" / "c_001_seg.nii.gz"


def test_three_layouts_describe_the_same_cases(tmp_path):
    msd = load_dataset(write_msd(tmp_path / "a" / "synth"))
    nnu = load_dataset(write_nnunet(tmp_path / "b" / "synth"))
    dl = load_dataset(write_datalist(tmp_path / "c" / "synth"), base_dir=tmp_path / "c" / "synth" / "data")
    ids = lambda d: [(c.case_id, c.labelled) for c in sorted(d.cases, key=lambda c: c.case_id)]  # noqa: E731
    assert ids(msd) == ids(nnu) == ids(dl)
    assert msd.labels == nnu.labels == dl.labels
    assert msd.channel_names == nnu.channel_names == dl.channel_names


def test_nnunet_multichannel_and_region_labels(tmp_path):
    root = tmp_path / "mc"
    (root / "imagesTr").mkdir(parents=True)
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "notes.txt"):
        (root / "imagesTr" / name).touch()
    (root / "labelsTr").mkdir()
    meta = {
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "whole": [1, 2], "core": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    d = load_dataset(root)
    assert d.channel_names == ("T1", "FLAIR")
    assert d.labels == {0: "background", 1: "whole", 2: "whole"}
    assert [len(c.images) for c in d.cases] == [2, 2]
    assert d.cases[1].images[1].name == "b_0001.nii.gz"


def test_msd_test_list_is_the_unlabelled_pool(hippocampus):
    d = load_dataset(hippocampus)
    assert len(d.labelled) == 260
    assert [c.case_id for c in d.unlabelled] == ["hippocampus_118"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"foo": 1}', "cannot tell the layout"),
        ('{"modality": {"0": "CT"}, "labels": {"0": "bg"}}', "no 'training' list"),
        ('{"modality": {"1": "CT"}, "labels": {"0": "bg"}, "training": []}', "indices must be 0..0"),
        (
            '{"channel_names": {"0": "CT"}, "labels": {"bg": "zero"}, "file_ending": ".nii.gz"}',
            "names to integer values",
        ),
        ('{"channel_names": {"0": "CT"}, "labels": {"bg": 1.5}, "file_ending": ".nii.gz"}', "must be an integer"),
        ('{"channel_names": {"0": "CT"}, "labels": {"background": 0}, "file_ending": "nii"}', "file_ending"),
    ],
)
def test_unusable_dataset_json_is_a_clear_error(tmp_path, content, message):
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(tmp_path)
    assert str(tmp_path / "dataset.json") in str(err.value)


def test_missing_folder_and_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        load_dataset(tmp_path)


def test_entry_image_and_case_id_of_datalist_entries():
    from samdsk_plan.io.layouts import entry_case_id, entry_image

    single = {"image": "imagesTr/hippocampus_001.nii.gz"}
    channels = {"image": ["imagesTr/case_007_0000.nii.gz", "imagesTr/case_007_0001.nii.gz"]}
    assert entry_image(single) == "imagesTr/hippocampus_001.nii.gz"
    assert entry_case_id(single) == "hippocampus_001"
    assert entry_image(channels) == "imagesTr/case_007_0000.nii.gz"
    assert entry_case_id(channels) == "case_007"
