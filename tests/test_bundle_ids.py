"""Every emitted config's references, expressions and components resolve, and every ID the loop
overrides exists: a renamed package function or config ID fails here, not in a bundle run."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from samdsk_plan.bundle import ids

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"
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


def _parser(files: tuple[str, ...], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in files])
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def _ids(node, prefix: str = ""):
    """(id, raw value) of every node of a config, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        node_id = f"{prefix}::{key}" if prefix else str(key)
        yield node_id, value
        yield from _ids(value, node_id)


@pytest.mark.parametrize("files", RUNS, ids="+".join)
def test_every_reference_and_expression_parses(files):
    parser = _parser(files)
    config = parser.get()
    for node_id, value in _ids(config):
        if not isinstance(value, str):
            continue
        for ref in REFERENCE.findall(value):
            assert ref.replace("#", "::") in parser, f"{node_id}: @{ref} names no ID of {'+'.join(files)}"
        if value.startswith("$") and not value.startswith("$import "):
            # '@x' becomes a Python name so the expression can be parsed as written
            ast.parse(REFERENCE.sub(lambda m: "_" + re.sub(r"\W", "_", m[1]), value[1:]), mode="eval")


@pytest.mark.parametrize(("files", "overridden"), list(ids.LOOP_OVERRIDES.items()), ids=lambda v: "+".join(v))
def test_every_id_the_loop_overrides_exists(files, overridden):
    parser = _parser(files)
    missing = [i for i in overridden if i not in parser]
    assert not missing, f"the loop overrides {missing}, which {'+'.join(files)} does not define"


@pytest.fixture(scope="module")
def tiny_datalist(hippocampus, tmp_path_factory) -> Path:
    """Two training, one validation, one test and one unlabelled hippocampus case."""
    meta = json.loads((hippocampus / "dataset.json").read_text())
    tr = meta["training"][:5]
    split = {"training": tr[:2], "validation": tr[2:3], "testing": tr[3:4], "unlabelled": [{"image": tr[4]["image"]}]}
    path = tmp_path_factory.mktemp("ids") / "tiny.json"
    path.write_text(json.dumps(split))
    return path


@pytest.mark.parametrize("files", [r for r in RUNS if "multi_gpu_train.json" not in r], ids="+".join)
def test_every_component_and_expression_instantiates(files, hippocampus, tiny_datalist, tmp_path):
    """Instantiate each component and evaluate each expression of the config (what the bundle
    builds before it runs) on a tiny hippocampus datalist, on the CPU."""
    parser = _parser(
        files,
        **_tiny(hippocampus, tiny_datalist, tmp_path),
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


def _tiny(hippocampus: Path, datalist: Path, tmp_path: Path) -> dict:
    return {
        "dataset_dir": str(hippocampus),
        "datalist": str(datalist),
        "device": "$torch.device('cpu')",
        "num_workers": 0,
        "cache_rate": 0.0,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "out"),
    }


@pytest.mark.parametrize(("config", "workflow"), [("train.json", "train"), ("inference.json", "infer")])
def test_monai_workflow_properties(config, workflow, hippocampus, tiny_datalist, tmp_path):
    """MONAI's own check of the model-zoo properties (``monai.bundle.properties``)."""
    flow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / config),
        workflow_type=workflow,
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        **_tiny(hippocampus, tiny_datalist, tmp_path),
        bundle_root=str(BUNDLE),
    )
    flow.initialize()
    assert flow.check_properties() == []
