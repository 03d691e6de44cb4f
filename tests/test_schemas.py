"""Fingerprint and plans schemas: the committed files validate, every hand-edit that would break a
later stage is refused with one SamdskError naming the file and each key path, and the CLI turns
it into exit code 2 without a traceback or an output file."""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from samdsk_plan.cli.main import main
from samdsk_plan.errors import SamdskError
from samdsk_plan.fingerprint.components import CONNECTIVITIES
from samdsk_plan.io.schemas import load_schema, read_fingerprint, schema_problems, validate_plans
from samdsk_plan.loop import Loop
from samdsk_plan.loop.rounds import RETRAIN_MODES
from samdsk_plan.matching.assign import FLOOR_RULES, SOLVERS, TARGETS
from samdsk_plan.matching.union import METRICS
from samdsk_plan.matching.volume import FUSIONS
from samdsk_plan.planning import plan_from_fingerprint
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.pipeline import GENERATOR_CHOICES
from samdsk_plan.proposals.sam_checkpoint import MODEL_TYPES

REPO = Path(__file__).resolve().parents[1]
FINGERPRINT = REPO / "dataset_fingerprints" / "hippocampus.json"
PLANS = REPO / "bundles" / "hippocampus" / "configs" / "plans.json"
CASE = "hippocampus_001"


@pytest.fixture(scope="module")
def committed_fp() -> dict:
    return json.loads(FINGERPRINT.read_text())


@pytest.fixture(scope="module")
def committed_plans() -> dict:
    return json.loads(PLANS.read_text())


def write_json(path: Path, obj: dict) -> Path:
    """Write ``obj`` as JSON (``NaN`` and ``Infinity`` as Python's writer spells them)."""
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def edited(obj: dict, edit: Callable[[dict], object]) -> dict:
    out = copy.deepcopy(obj)
    edit(out)
    return out


def _parent(obj: dict, path: str) -> tuple[dict | list, str | int]:
    """The container of the dotted ``path`` (numbers index lists) and the last key."""
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


def put(path: str, value: object) -> Callable[[dict], None]:
    """An edit setting the dotted ``path`` to ``value``."""

    def edit(obj: dict) -> None:
        node, key = _parent(obj, path)
        node[key] = value

    return edit


def delete(path: str) -> Callable[[dict], None]:
    """An edit removing the dotted ``path``."""

    def edit(obj: dict) -> None:
        node, key = _parent(obj, path)
        del node[key]

    return edit


def test_schemas_are_draft_2020_12_and_ship_with_the_package():
    for kind in ("fingerprint", "plans"):
        schema = load_schema(kind)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)
        assert (REPO / "samdsk_plan" / "schemas" / f"{kind}.schema.json").is_file()
    assert load_schema("plans") is load_schema("plans"), "schemas are loaded once"
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.json" in package_data["samdsk_plan"]


def test_committed_files_validate(committed_fp, committed_plans):
    assert read_fingerprint(FINGERPRINT) == committed_fp
    assert Plans.load(PLANS).to_json() == committed_plans
    assert schema_problems(plan_from_fingerprint(committed_fp), "plans") == []


def test_schema_enums_match_the_code():
    plans = load_schema("plans")["properties"]
    samdsk = plans["samdsk"]["properties"]
    assert set(samdsk["fusion"]["enum"]) == set(FUSIONS)
    assert set(samdsk["retrain"]["enum"]) == set(RETRAIN_MODES)
    assert set(samdsk["connectivity"]["enum"]) == set(CONNECTIVITIES)
    matching = samdsk["matching"]["properties"]
    assert set(matching["metric"]["enum"]) == set(METRICS)
    assert set(matching["target"]["enum"]) == set(TARGETS)
    assert set(matching["solver"]["enum"]) == set(SOLVERS)
    assert set(matching["floor_rule"]["enum"]) == set(FLOOR_RULES)
    proposals = samdsk["proposals"]["properties"]
    assert set(proposals["generator"]["enum"]) == set(GENERATOR_CHOICES)
    assert set(proposals["sam"]["properties"]["model_type"]["enum"]) == {*MODEL_TYPES, "auto"}
    fp = load_schema("fingerprint")["properties"]
    assert set(fp["conventions"]["properties"]["connectivity"]["properties"]["name"]["enum"]) == set(CONNECTIVITIES)


# --------------------------------------------------------------------------- fingerprint faults

FINGERPRINT_FAULTS = {
    "classes is a list": (put("classes", []), "classes: [] is not of type 'object'"),
    "null class": (put("classes.1", None), "classes.1: None is not of type 'object'"),
    "zero spacing": (put(f"cases.{CASE}.spacing.1", 0), f"cases.{CASE}.spacing[1]: 0 is not greater than 0"),
    "no cases": (put("cases", {}), "cases: {} should be non-empty"),
    "histogram key": (
        put("classes.1.components_3d.histogram.x", 3),
        "classes.1.components_3d.histogram: key 'x' is not a non-negative integer",
    ),
    "negative crop": (
        put(f"cases.{CASE}.shape_after_crop.0", -35),
        f"cases.{CASE}.shape_after_crop[0]: -35 is less than the minimum of 1",
    ),
    "no channels": (put("channel_names", {}), "channel_names: {} should be non-empty"),
    "NaN spacing": (put("spacing.median.0", float("nan")), "spacing.median[0]: nan is not a finite number"),
    "infinite spacing": (
        put(f"cases.{CASE}.spacing.2", float("inf")),
        f"cases.{CASE}.spacing[2]: inf is not a finite number",
    ),
    "float shape": (put(f"cases.{CASE}.shape.0", 35.0), f"cases.{CASE}.shape[0]: 35.0 is not of type 'integer'"),
    "two-axis spacing": (put(f"cases.{CASE}.spacing", [1.0, 1.0]), f"cases.{CASE}.spacing: [1.0, 1.0] is too short"),
    "schema version": (put("schema_version", 2), "schema_version: 1 was expected"),
    "no labels": (delete("labels"), "(top level): 'labels' is a required property"),
    "labelled case without classes": (
        delete(f"cases.{CASE}.classes"),
        f"cases.{CASE}: 'classes' is a required property",
    ),
    "unknown connectivity": (
        put("conventions.connectivity.name", "edge"),
        "conventions.connectivity.name: 'edge' is not one of ['full', 'face']",
    ),
    "no foreground voxels": (
        put("foreground_intensity_properties_per_channel.0.n_voxels", 0),
        "foreground_intensity_properties_per_channel.0.n_voxels: 0 is less than the minimum of 1",
    ),
    # cross-field checks, run once the schema passes
    "channel without intensities": (
        put("channel_names.1", "T2"),
        "foreground_intensity_properties_per_channel: no entry for channel '1'",
    ),
    "channel gap": (
        lambda fp: fp.update(
            channel_names={"1": "MRI"},
            foreground_intensity_properties_per_channel={"1": fp["foreground_intensity_properties_per_channel"]["0"]},
        ),
        "channel_names: channel indices must be 0..0",
    ),
    "class without label": (
        lambda fp: fp["classes"].update({"3": fp["classes"]["1"]}),
        "classes.3: label value 3 is not in labels",
    ),
    "case count": (put("n_cases.labelled", 200), "n_cases.labelled: 200 but cases holds 260 labelled case(s)"),
}


@pytest.mark.parametrize("fault", FINGERPRINT_FAULTS)
def test_fingerprint_fault_names_file_and_key(fault, committed_fp, tmp_path):
    edit, line = FINGERPRINT_FAULTS[fault]
    path = write_json(tmp_path / "fp.json", edited(committed_fp, edit))
    with pytest.raises(SamdskError) as info:
        read_fingerprint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a samdsk-plan fingerprint (1 problem(s)")
    assert f"\n{path}: {line}" in message


def test_every_fingerprint_problem_is_listed(committed_fp, tmp_path):
    fp = edited(committed_fp, put("classes.1", None))
    for case in list(fp["cases"])[:3]:
        fp["cases"][case]["spacing"][0] = -1.0
    path = write_json(tmp_path / "fp.json", fp)
    with pytest.raises(SamdskError) as info:
        read_fingerprint(path)
    lines = str(info.value).splitlines()
    assert "(4 problem(s)" in lines[0] and len(lines) == 5
    assert all(line.startswith(f"{path}: ") for line in lines)


# --------------------------------------------------------------------------- plans faults

PLANS_FAULTS = {
    "threshold above 1": (
        put("samdsk.acceptance_threshold", 7),
        "samdsk.acceptance_threshold: 7 is greater than the maximum of 1",
    ),
    "threshold word": (
        put("samdsk.acceptance_threshold", "high"),
        "samdsk.acceptance_threshold: 'high' is not of type 'number'",
    ),
    "negative patch": (
        put("configurations.3d_fullres.patch_size", [-1, 2, 3]),
        "configurations.3d_fullres.patch_size[0]: -1 is less than the minimum of 1",
    ),
    "batch size word": (
        put("configurations.3d_fullres.batch_size", "two"),
        "configurations.3d_fullres.batch_size: 'two' is not of type 'integer'",
    ),
    "float batch size": (
        put("configurations.3d_fullres.batch_size", 2.0),
        "configurations.3d_fullres.batch_size: 2.0 is not of type 'integer'",
    ),
    "no channels": (put("dataset.channel_names", {}), "dataset.channel_names: {} should be non-empty"),
    "fusion": (put("samdsk.fusion", "average"), "samdsk.fusion: 'average' is not one of"),
    "matching target": (put("samdsk.matching.target", "fuzzy"), "samdsk.matching.target: 'fuzzy' is not one of"),
    "matching typo": (put("samdsk.matching.metrc", "iou"), "samdsk.matching: Additional properties are not allowed"),
    "retrain": (put("samdsk.retrain", "warm"), "samdsk.retrain: 'warm' is not one of ['scratch', 'finetune']"),
    "optimizer": (put("training.optimizer", "RMSprop"), "training.optimizer: 'RMSprop' is not one of ['Adam', 'SGD']"),
    "no foreground patches": (
        put("training.foreground_oversampling", 0),
        "training.foreground_oversampling: 0 is not greater than 0",
    ),
    "NaN learning rate": (
        put("training.learning_rate", float("nan")),
        "training.learning_rate: nan is not a finite number",
    ),
    "no normalisation": (put("normalization", []), "normalization: [] should be non-empty"),
    "ct without clip": (put("normalization.0.scheme", "ct"), "normalization[0]: 'clip' is a required property"),
    "zero upper bound": (
        put("samdsk.classes.1.regions_per_slice.0.upper", 0),
        "samdsk.classes.1.regions_per_slice.0.upper: 0 is less than the minimum of 1",
    ),
    "axis 3": (put("samdsk.axes", [0, 3]), "samdsk.axes[1]: 3 is greater than the maximum of 2"),
    "max accepted 0": (
        put("samdsk.max_accepted_per_round", 0),
        "samdsk.max_accepted_per_round: 0 is less than the minimum of 1",
    ),
    "no samdsk": (delete("samdsk"), "(top level): 'samdsk' is a required property"),
    # cross-field checks, run once the schema passes
    "label gap": (
        put("dataset.labels", {"0": "background", "1": "Anterior", "3": "Posterior"}),
        "dataset.labels: label values must be 0..2, found [0, 1, 3]",
    ),
    "class missing": (delete("samdsk.classes.2"), "samdsk.classes: needs one entry per foreground label"),
    "bounds crossed": (
        put("samdsk.classes.1.regions_per_slice.0.lower", 5),
        "samdsk.classes.1.regions_per_slice.0: lower 5 is above upper 2",
    ),
    "axis without bounds": (
        delete("samdsk.classes.1.regions_per_slice.1"),
        "samdsk.classes.1.regions_per_slice: no entry for axis 1 of samdsk.axes [0, 1, 2]",
    ),
    "second channel": (put("dataset.channel_names.1", "T2"), "normalization: needs one entry per channel"),
    "indivisible patch": (
        put("configurations.3d_fullres.patch_size", [41, 56, 40]),
        "configurations.3d_fullres.patch_size[0]: 41 is not a multiple of 8",
    ),
    "deep supervision": (
        put("configurations.3d_fullres.network.deep_supr_num", 3),
        "configurations.3d_fullres.network.deep_supr_num: 3 must be below the 3 up-sampling layers",
    ),
    "filters": (
        put("configurations.3d_fullres.network.filters", [32, 64]),
        "configurations.3d_fullres.network.filters: has 2 entries, expected 4",
    ),
}


@pytest.mark.parametrize("fault", PLANS_FAULTS)
def test_plans_fault_names_file_and_key(fault, committed_plans, tmp_path):
    edit, line = PLANS_FAULTS[fault]
    path = write_json(tmp_path / "plans.json", edited(committed_plans, edit))
    with pytest.raises(SamdskError) as info:
        Plans.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a samdsk-plan plans file (")
    assert f"\n{path}: {line}" in message


def test_plans_problems_are_all_listed_in_key_order(committed_plans):
    plans = edited(committed_plans, put("samdsk.acceptance_threshold", 7))
    put("configurations.3d_fullres.batch_size", "two")(plans)
    put("configurations.3d_fullres.patch_size", [-1, 2, 3])(plans)
    with pytest.raises(SamdskError) as info:
        validate_plans(plans, "plans.json")
    assert str(info.value).splitlines()[1:] == [
        "plans.json: configurations.3d_fullres.batch_size: 'two' is not of type 'integer'",
        "plans.json: configurations.3d_fullres.patch_size[0]: -1 is less than the minimum of 1",
        "plans.json: samdsk.acceptance_threshold: 7 is greater than the maximum of 1",
    ]


# --------------------------------------------------------------------------- planner and emit


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        (
            "samdsk.acceptance_threshold",
            "high",
            "samdsk.acceptance_threshold: 'high' is not of type 'number' "
            '(from --set samdsk.acceptance_threshold="high")',
        ),
        (
            "samdsk.acceptance_threshold",
            7,
            "samdsk.acceptance_threshold: 7 is greater than the maximum of 1 "
            "(from --set samdsk.acceptance_threshold=7)",
        ),
        (
            "configurations.3d_fullres.patch_size",
            [-1, 2, 3],
            "configurations.3d_fullres.patch_size[0]: -1 is less than "
            "the minimum of 1 (from --set "
            "configurations.3d_fullres.patch_size=[-1, 2, 3])",
        ),
        (
            "samdsk.matching",
            {"metric": "iou", "target": "soft"},
            "samdsk.matching: 'prob_floor' is a required property (from --set "
            'samdsk.matching={"metric": "iou", "target": "soft"})',
        ),
    ],
)
def test_bad_override_names_the_override(committed_fp, key, value, line):
    with pytest.raises(SamdskError) as info:
        plan_from_fingerprint(committed_fp, overrides={key: value, "samdsk.slice_margin": 3})
    message = str(info.value)
    assert message.startswith("the plan for 'hippocampus' is not valid (1 problem(s)):")
    assert message.splitlines()[1] == line


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), 0.0, -8.0])
def test_gpu_memory_must_be_finite_and_positive(committed_fp, budget):
    with pytest.raises(SamdskError, match="--gpu-memory must be a finite number of GB above 0"):
        plan_from_fingerprint(committed_fp, gpu_memory_gb=budget)


def test_emit_refuses_plans_without_channels(committed_plans, tmp_path, capsys):
    path = write_json(tmp_path / "plans.json", edited(committed_plans, put("dataset.channel_names", {})))
    code, err = run_cli(["emit", path, "-o", tmp_path / "b"], capsys)
    assert code == 2 and f"{path}: dataset.channel_names: {{}} should be non-empty" in err
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- through the CLI


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    "fault",
    [
        "classes is a list",
        "null class",
        "zero spacing",
        "no cases",
        "histogram key",
        "negative crop",
        "no channels",
        "NaN spacing",
        "channel without intensities",
    ],
)
def test_cli_plan_refuses_a_bad_fingerprint(fault, committed_fp, tmp_path, capsys):
    edit, line = FINGERPRINT_FAULTS[fault]
    fp = write_json(tmp_path / "fp.json", edited(committed_fp, edit))
    out = tmp_path / "plans.json"
    code, err = run_cli(["plan", fp, "-o", out], capsys)
    assert code == 2 and f"{fp}: {line}" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("samdsk.acceptance_threshold=high", "samdsk.acceptance_threshold: 'high' is not of type 'number'"),
        ("samdsk.acceptance_threshold=7", "samdsk.acceptance_threshold: 7 is greater than the maximum of 1"),
        ("configurations.3d_fullres.patch_size=[-1,2,3]", "configurations.3d_fullres.patch_size[0]: -1 is less than"),
        ("configurations.3d_fullres.batch_size=two", "configurations.3d_fullres.batch_size: 'two' is not of type"),
        ("samdsk.retrain=warm", "samdsk.retrain: 'warm' is not one of"),
    ],
)
def test_cli_plan_refuses_a_bad_override(override, line, tmp_path, capsys):
    out = tmp_path / "plans.json"
    code, err = run_cli(["plan", FINGERPRINT, "-o", out, "--set", override], capsys)
    assert code == 2 and line in err and f"(from --set {override.partition('=')[0]}=" in err
    assert not out.exists()


@pytest.mark.parametrize("budget", ["nan", "inf", "0", "-1"])
def test_cli_plan_refuses_a_bad_gpu_memory(budget, tmp_path, capsys):
    out = tmp_path / "plans.json"
    code, err = run_cli(["plan", FINGERPRINT, "-o", out, "--gpu-memory", budget], capsys)
    assert code == 2 and "--gpu-memory must be a finite number" in err
    assert not out.exists()


@pytest.mark.parametrize("fault", ["no channels", "threshold above 1", "batch size word", "fusion", "label gap"])
def test_cli_emit_refuses_bad_plans(fault, committed_plans, tmp_path, capsys):
    edit, line = PLANS_FAULTS[fault]
    plans = write_json(tmp_path / "plans.json", edited(committed_plans, edit))
    code, err = run_cli(["emit", plans, "-o", tmp_path / "bundle"], capsys)
    assert code == 2 and f"{plans}: {line}" in err
    assert not (tmp_path / "bundle").exists()


def bad_bundle(root: Path, plans: dict) -> Path:
    """A folder holding only ``configs/plans.json``: every command reads the plans first."""
    (root / "configs").mkdir(parents=True)
    write_json(root / "configs" / "plans.json", plans)
    return root


def test_cli_propose_refuses_bad_plans(committed_plans, tmp_path, capsys):
    bundle = bad_bundle(tmp_path / "bundle", edited(committed_plans, put("samdsk.axes", [])))
    code, err = run_cli(["propose", bundle, tmp_path, "-o", tmp_path / "cache"], capsys)
    assert code == 2 and f"{bundle / 'configs' / 'plans.json'}: samdsk.axes: [] should be non-empty" in err
    assert not (tmp_path / "cache").exists()


def test_loop_refuses_bad_plans(committed_plans, tmp_path, capsys):
    bundle = bad_bundle(tmp_path / "bundle", edited(committed_plans, put("samdsk.pseudo_label_weight", -1)))
    (tmp_path / "data").mkdir()
    plans = bundle / "configs" / "plans.json"
    with pytest.raises(SamdskError, match=f"{plans}: samdsk.pseudo_label_weight: -1 is not greater than 0"):
        Loop(bundle, tmp_path / "data", tmp_path / "run")
    code, err = run_cli(["loop", bundle, "--data", tmp_path / "data", "-o", tmp_path / "run"], capsys)
    assert code == 2 and f"{plans}: samdsk.pseudo_label_weight" in err
    assert not (tmp_path / "run").exists()
