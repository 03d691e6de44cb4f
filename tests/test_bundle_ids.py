"""Every emitted config's references, expressions and components resolve, and every ID the loop
overrides exists: a renamed package function or config ID fails here, not in a bundle run. Checked
for the three kinds of bundle: 3D (the committed hippocampus bundle), 2D images (synthetic PNG
scenes) and slice-wise (hippocampus with ``--configuration 2d``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from samdsk_plan.bundle import ids
from samdsk_plan.cli.main import main
from tests.conftest import write_scenes

REPO = Path(__file__).resolve().parents[1]
KINDS = ("3d", "2d", "slicewise")
# each config a bundle runs on its own or as an overlay, as the README and the loop run them
RUNS = [
    ("train.json",),
    ("inference.json",),
    ("train.json", "evaluate.json"),
    ("propose.json",),
    ("inference.json", "pseudolabel.json"),
    ("train.json", "multi_gpu_train.json"),
]
# lists of expressions that do the work when the bundle runs (not instantiated here)
ACTIONS = ("run", "initialize", "finalize")
REFERENCE = re.compile(r"@([\w:#]+)")


@pytest.fixture(scope="module")
def bundles(hippocampus, tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    """Kind -> (bundle folder, dataset folder, a tiny datalist: two training, one validation, one
    test and one unlabelled case)."""
    root = tmp_path_factory.mktemp("ids")
    meta = json.loads((hippocampus / "dataset.json").read_text())
    tr = meta["training"][:5]
    split = {"training": tr[:2], "validation": tr[2:3], "testing": tr[3:4], "unlabelled": [{"image": tr[4]["image"]}]}
    (root / "tiny3d.json").write_text(json.dumps(split))
    plans = root / "hplans.json"
    assert main(["plan", str(REPO / "dataset_fingerprints" / "hippocampus.json"), "-o", str(plans)]) == 0
    assert main(["emit", str(plans), "-o", str(root / "slicewise"), "--configuration", "2d"]) == 0
    scenes = write_scenes(root / "scenes", 5)
    assert main(["fingerprint", str(scenes), "-o", str(root / "fp2d.json"), "-q"]) == 0
    assert main(["plan", str(root / "fp2d.json"), "-o", str(root / "plans2d.json")]) == 0
    assert main(["emit", str(root / "plans2d.json"), "-o", str(root / "2d")]) == 0
    entry = lambda i: {"image": f"imagesTr/s_00{i}.png", "label": f"labelsTr/s_00{i}.png"}  # noqa: E731
    split = {
        "training": [entry(0), entry(1)],
        "validation": [entry(2)],
        "testing": [entry(3)],
        "unlabelled": [{"image": "imagesTr/s_004.png"}],
    }
    (root / "tiny2d.json").write_text(json.dumps(split))
    return {
        "3d": (REPO / "bundles" / "hippocampus", hippocampus, root / "tiny3d.json"),
        "2d": (root / "2d", scenes, root / "tiny2d.json"),
        "slicewise": (root / "slicewise", hippocampus, root / "tiny3d.json"),
    }


def _parser(bundle: Path, files: tuple[str, ...], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in files])
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser


def _ids(node, prefix: str = ""):
    """(id, raw value) of every node of a config, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        node_id = f"{prefix}::{key}" if prefix else str(key)
        yield node_id, value
        yield from _ids(value, node_id)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("files", RUNS, ids="+".join)
def test_every_reference_and_expression_parses(files, kind, bundles):
    parser = _parser(bundles[kind][0], files)
    config = parser.get()
    for node_id, value in _ids(config):
        if not isinstance(value, str):
            continue
        for ref in REFERENCE.findall(value):
            assert ref.replace("#", "::") in parser, f"{node_id}: @{ref} names no ID of {'+'.join(files)}"
        if value.startswith("$") and not value.startswith("$import "):
            # '@x' becomes a Python name so the expression can be parsed as written
            ast.parse(REFERENCE.sub(lambda m: "_" + re.sub(r"\W", "_", m[1]), value[1:]), mode="eval")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("files", "overridden"), list(ids.LOOP_OVERRIDES.items()), ids=lambda v: "+".join(v))
def test_every_id_the_loop_overrides_exists(files, overridden, kind, bundles):
    parser = _parser(bundles[kind][0], files)
    missing = [i for i in overridden if i not in parser]
    assert not missing, f"the loop overrides {missing}, which {'+'.join(files)} does not define"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("files", [r for r in RUNS if "multi_gpu_train.json" not in r], ids="+".join)
def test_every_component_and_expression_instantiates(files, kind, bundles, tmp_path):
    """Instantiate each component and evaluate each expression of the config (what the bundle
    builds before it runs) on a tiny datalist, on the CPU."""
    bundle, data, datalist = bundles[kind]
    parser = _parser(
        bundle,
        files,
        **_tiny(data, datalist, tmp_path),
        cache_dir=str(tmp_path / "proposals"),
        match_dir=str(tmp_path / "match"),
        proposal_dir=str(tmp_path / "proposals"),
    )
    parser.parse()
    done = 0
    for node_id, value in _ids(parser.get()):
        if node_id.split("::")[0] in ACTIONS or node_id == "imports" or node_id.startswith("imports::"):
            continue
        if (isinstance(value, dict) and "_target_" in value) or (isinstance(value, str) and value.startswith("$")):
            parser.get_parsed_content(node_id)
            done += 1
    assert done > 5


def _tiny(data: Path, datalist: Path, tmp_path: Path) -> dict:
    return {
        "dataset_dir": str(data),
        "datalist": str(datalist),
        "device": "$torch.device('cpu')",
        "num_workers": 0,
        "cache_rate": 0.0,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "out"),
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("config", "workflow"), [("train.json", "train"), ("inference.json", "infer")])
def test_monai_workflow_properties(config, workflow, kind, bundles, tmp_path):
    """MONAI's own check of the model-zoo properties (``monai.bundle.properties``)."""
    bundle, data, datalist = bundles[kind]
    flow = ConfigWorkflow(
        config_file=str(bundle / "configs" / config),
        workflow_type=workflow,
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        **_tiny(data, datalist, tmp_path),
        bundle_root=str(bundle),
    )
    flow.initialize()
    assert flow.check_properties() == []
