"""Canonical JSON and atomic writes."""

import json

from samdsk_plan.io.atomic import atomic_write_json, dumps_json


def test_number_lists_go_on_one_line_and_strings_stay_as_they_are(tmp_path):
    obj = {"spacing": [1.0, 2.5, -3], "nested": [[1, 2], [3]], "override": "[8,16,32,64]", "empty": []}
    text = dumps_json(obj)
    assert '"spacing": [1.0, 2.5, -3]' in text and '"override": "[8,16,32,64]"' in text
    assert json.loads(text) == obj
    path = atomic_write_json(tmp_path / "a" / "b.json", obj)
    assert json.loads(path.read_text()) == obj
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
