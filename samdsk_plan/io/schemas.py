"""Validated reading of fingerprints and plans against their JSON Schemas.

The schemas (JSON Schema draft 2020-12) ship with the package as
``samdsk_plan/schemas/fingerprint.schema.json`` and ``samdsk_plan/schemas/plans.schema.json``.
Numbers must be finite (``NaN``/``Infinity``, which Python's JSON reader accepts, are refused)
and integers must be JSON integers (``2.0`` is not a batch size). A document that passes its
schema is then checked for what a schema cannot say: indices ``0..N-1``, one normalisation per
channel, a class for every foreground label, network lists of matching lengths. Every problem
is reported at once, each with its key path (``samdsk.acceptance_threshold``,
``configurations.3d_fullres.patch_size[0]``), in one :class:`~samdsk_plan.errors.SamdskError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.layouts import read_json_object

KINDS = {"fingerprint": "samdsk-plan fingerprint", "plans": "samdsk-plan plans file"}
_PATTERN_WORDS = {
    "^(0|[1-9][0-9]*)$": "a non-negative integer ('0', '1', ...)",
    "^[1-9][0-9]*$": "a foreground label value ('1', '2', ...)",
    "^[012]$": "an axis ('0', '1' or '2')",
}


def _is_number(_checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, (int, float)):
        return False
    return isinstance(instance, int) or math.isfinite(instance)


def _is_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many({"number": _is_number, "integer": _is_integer}),
)


@dataclass(frozen=True)
class SchemaProblem:
    """One problem of a document: where (``path`` of keys and list indices) and what."""

    path: tuple[str | int, ...]
    message: str

    @property
    def key(self) -> str:
        """Dotted key path, list indices in brackets; ``(top level)`` for the document itself."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "(top level)"

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The packaged schema of ``kind`` (``"fingerprint"`` or ``"plans"``)."""
    text = resources.files("samdsk_plan").joinpath("schemas", f"{kind}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = load_schema(kind)
    _Validator.check_schema(schema)
    return _Validator(schema)


def _message(error: ValidationError) -> str:
    if error.validator == "type" and isinstance(error.instance, float) and not math.isfinite(error.instance):
        return f"{error.instance} is not a finite number"
    if error.validator in ("exclusiveMinimum", "exclusiveMaximum"):
        side = "greater" if error.validator == "exclusiveMinimum" else "less"
        return f"{error.instance!r} is not {side} than {error.validator_value}"
    if error.validator == "pattern" and "propertyNames" in error.schema_path:
        words = _PATTERN_WORDS.get(error.validator_value, f"matching {error.validator_value!r}")
        return f"key {error.instance!r} is not {words}"
    return error.message


def _sort_key(problem: SchemaProblem) -> tuple:
    return tuple((p, "") if isinstance(p, int) else (-1, p) for p in problem.path)


def schema_problems(obj: Any, kind: str) -> list[SchemaProblem]:
    """Every problem of ``obj`` as a document of ``kind``, sorted by key path; none when valid.

    The cross-field checks run only on a document that passes the schema."""
    problems = [SchemaProblem(tuple(e.absolute_path), _message(e)) for e in _validator(kind).iter_errors(obj)]
    if not problems:
        problems = _fingerprint_consistency(obj) if kind == "fingerprint" else _plans_consistency(obj)
    return sorted(problems, key=_sort_key)


def format_problems(source: str | Path, kind: str, problems: list[SchemaProblem]) -> str:
    """A header naming ``source`` and one line per problem, each naming ``source`` and the key path."""
    lines = [f"{source}: not a {KINDS[kind]} ({len(problems)} problem(s), see samdsk_plan/schemas/{kind}.schema.json):"]
    return "\n".join(lines + [f"{source}: {p}" for p in problems])


def validate_fingerprint(obj: Any, source: str | Path) -> dict[str, Any]:
    """``obj`` if it is a valid fingerprint, else :class:`SamdskError` listing every problem."""
    return _validate(obj, source, "fingerprint")


def validate_plans(obj: Any, source: str | Path) -> dict[str, Any]:
    """``obj`` if it is a valid plans document, else :class:`SamdskError` listing every problem."""
    return _validate(obj, source, "plans")


def read_fingerprint(path: str | Path) -> dict[str, Any]:
    """Read and validate a fingerprint JSON file."""
    return validate_fingerprint(read_json_object(Path(path)), path)


def _validate(obj: Any, source: str | Path, kind: str) -> dict[str, Any]:
    problems = schema_problems(obj, kind)
    if problems:
        raise SamdskError(format_problems(source, kind, problems))
    return obj


def _indices(path: tuple[str, ...], mapping: dict[str, Any], what: str) -> list[SchemaProblem]:
    found = sorted(int(k) for k in mapping)
    if found == list(range(len(found))):
        return []
    return [SchemaProblem(path, f"{what} must be 0..{len(found) - 1}, found {found}")]


def _fingerprint_consistency(fp: dict[str, Any]) -> list[SchemaProblem]:
    problems = _indices(("channel_names",), fp["channel_names"], "channel indices")
    intensity = fp["foreground_intensity_properties_per_channel"]
    problems += [
        SchemaProblem(("foreground_intensity_properties_per_channel",), f"no entry for channel {c!r}")
        for c in fp["channel_names"]
        if c not in intensity
    ]
    problems += [
        SchemaProblem(("classes", v), f"label value {v} is not in labels")
        for v in fp["classes"]
        if v not in fp["labels"]
    ]
    labelled = sum(1 for c in fp["cases"].values() if c["labelled"])
    for key, listed in (("labelled", labelled), ("unlabelled", len(fp["cases"]) - labelled)):
        if fp["n_cases"][key] != listed:
            problems.append(
                SchemaProblem(("n_cases", key), f"{fp['n_cases'][key]} but cases holds {listed} {key} case(s)")
            )
    return problems


def _plans_consistency(plans: dict[str, Any]) -> list[SchemaProblem]:
    dataset, samdsk = plans["dataset"], plans["samdsk"]
    problems = _indices(("dataset", "channel_names"), dataset["channel_names"], "channel indices")
    problems += _indices(("dataset", "labels"), dataset["labels"], "label values")
    channels = sorted(n["channel"] for n in plans["normalization"])
    if channels != sorted(int(c) for c in dataset["channel_names"]):
        problems.append(
            SchemaProblem(
                ("normalization",),
                f"needs one entry per channel of dataset.channel_names "
                f"{sorted(int(c) for c in dataset['channel_names'])}, "
                f"found channels {channels}",
            )
        )
    for i, n in enumerate(plans["normalization"]):
        if n["scheme"] == "ct" and not n["clip"][0] < n["clip"][1]:
            problems.append(SchemaProblem(("normalization", i, "clip"), f"{n['clip']} is not an increasing range"))
    foreground = sorted(int(v) for v in dataset["labels"] if v != "0")
    if sorted(int(c) for c in samdsk["classes"]) != foreground:
        problems.append(
            SchemaProblem(
                ("samdsk", "classes"),
                f"needs one entry per foreground label of "
                f"dataset.labels {foreground}, found "
                f"{sorted(int(c) for c in samdsk['classes'])}",
            )
        )
    for value, cls in samdsk["classes"].items():
        for section in ("regions_per_slice", "region_area_px"):
            problems += [
                SchemaProblem(
                    ("samdsk", "classes", value, section), f"no entry for axis {axis} of samdsk.axes {samdsk['axes']}"
                )
                for axis in samdsk["axes"]
                if str(axis) not in cls[section]
            ]
        for axis, bounds in cls["regions_per_slice"].items():
            if bounds["lower"] > bounds["upper"]:
                problems.append(
                    SchemaProblem(
                        ("samdsk", "classes", value, "regions_per_slice", axis),
                        f"lower {bounds['lower']} is above upper {bounds['upper']}",
                    )
                )
    for name, cfg in plans["configurations"].items():
        problems += _configuration_problems(("configurations", name), cfg, bundled=name == "3d_fullres")
    return problems


def _configuration_problems(path: tuple[str, ...], cfg: dict[str, Any], bundled: bool) -> list[SchemaProblem]:
    """List lengths and divisibility of a configuration; for the bundled one also what DynUNet requires."""
    net, dim, problems = cfg["network"], len(cfg["patch_size"]), []
    if len(cfg["spacing"]) != dim:
        problems.append(SchemaProblem((*path, "spacing"), f"has {len(cfg['spacing'])} axes, patch_size {dim}"))
    stages = len(net["strides"])
    for key, want in (("kernel_size", stages), ("filters", stages), ("upsample_kernel_size", stages - 1)):
        if len(net[key]) != want:
            problems.append(
                SchemaProblem(
                    (*path, "network", key),
                    f"has {len(net[key])} entries, expected {want} for {stages} stages (strides)",
                )
            )
    for key in ("kernel_size", "strides", "upsample_kernel_size"):
        problems += [
            SchemaProblem((*path, "network", key, i), f"has {len(v)} axes, patch_size {dim}")
            for i, v in enumerate(net[key])
            if len(v) != dim
        ]
    if len(net["divisible_by"]) == dim:
        problems += [
            SchemaProblem((*path, "patch_size", i), f"{p} is not a multiple of {d} (network.divisible_by)")
            for i, (p, d) in enumerate(zip(cfg["patch_size"], net["divisible_by"], strict=True))
            if p % d
        ]
    else:
        problems.append(
            SchemaProblem((*path, "network", "divisible_by"), f"has {len(net['divisible_by'])} axes, patch_size {dim}")
        )
    if bundled and stages < 3:
        problems.append(
            SchemaProblem((*path, "network", "strides"), f"DynUNet needs at least 3 stages, found {stages}")
        )
    elif bundled and net["deep_supervision"] and net["deep_supr_num"] >= stages - 1:
        problems.append(
            SchemaProblem(
                (*path, "network", "deep_supr_num"),
                f"{net['deep_supr_num']} must be below the {stages - 1} up-sampling layers",
            )
        )
    return problems
