"""Planning from a fingerprint: overrides, their values and the fingerprint schema version."""

from __future__ import annotations

import argparse

import pytest

from samdsk_plan.cli.main import key_value
from samdsk_plan.errors import SamdskError
from samdsk_plan.planning import override_value, plan_from_fingerprint
from tests.planning_cases import iso_fp

# --------------------------------------------------------------------------- overrides


def test_override_sets_value_and_is_recorded():
    plan = plan_from_fingerprint(iso_fp(10), overrides={"samdsk.acceptance_threshold": 0.8})
    assert plan["samdsk"]["acceptance_threshold"] == 0.8
    assert plan["overrides"] == {"samdsk.acceptance_threshold": 0.8}
    assert plan_from_fingerprint(iso_fp(10))["overrides"] == {}


def test_nested_override():
    plan = plan_from_fingerprint(iso_fp(10), overrides={"configurations.3d_fullres.batch_size": 3})
    assert plan["configurations"]["3d_fullres"]["batch_size"] == 3
    assert plan["overrides"] == {"configurations.3d_fullres.batch_size": 3}


@pytest.mark.parametrize("key", ["samdsk.no_such_setting", "no_such_section.x", "samdsk.acceptance_threshold.x"])
def test_unknown_override_key_raises(key):
    with pytest.raises(SamdskError, match=key.replace(".", r"\.")):
        plan_from_fingerprint(iso_fp(10), overrides={key: 1})


def test_parse_override():
    parse = [
        (k, override_value(v)) for k, v in map(key_value, ["a.b=2", "a=foo", "x.y=0.8", "x=[1, 2]", "x=true", "s=a=b"])
    ]
    assert parse == [("a.b", 2), ("a", "foo"), ("x.y", 0.8), ("x", [1, 2]), ("x", True), ("s", "a=b")]
    for bad in ("no_equals_sign", "=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            key_value(bad)


def test_unsupported_schema_version_raises():
    fp = iso_fp(3)
    fp["schema_version"] = 2
    with pytest.raises(SamdskError, match="schema"):
        plan_from_fingerprint(fp)
