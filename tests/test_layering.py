"""The package's rooms import only rooms below them (docs/architecture.md), and the bundle's
emitter and its runtime never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "samdsk_plan"
# lowest first; a room may import the rooms before it
ROOMS = [
    "errors",
    "io",
    "fingerprint",
    "planning",
    "matching",
    "proposals",
    "evaluation",
    "bundle.runtime",
    "bundle",
    "loop",
    "cli",
    "__main__",
]
APART = {("bundle", "bundle.runtime"), ("bundle.runtime", "bundle")}


def _room(parts: list[str]) -> str:
    """Room of a module path inside the package (``["bundle", "runtime", "data"]`` -> ``bundle.runtime``)."""
    if parts[0] == "bundle" and len(parts) > 1 and parts[1] == "runtime":
        return "bundle.runtime"
    return parts[0].removesuffix(".py")


def _imports() -> list[tuple[str, str, str]]:
    """(module file, its room, the room it imports) for every import of another room."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _room(list(path.relative_to(PACKAGE).parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            for name in names:
                parts = name.split(".")
                if parts[0] == "samdsk_plan" and len(parts) > 1 and (target := _room(parts[1:])) != source:
                    out.append((str(path.relative_to(PACKAGE)), source, target))
    return out


def test_every_room_is_listed():
    rooms = {_room([p.name]) for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert rooms - {"__init__"} <= set(ROOMS), rooms - set(ROOMS)


def test_rooms_import_only_lower_rooms():
    found = _imports()
    assert found, "no cross-room import found: the scan is broken"
    wrong = [
        f"{path} ({source}) imports {target}"
        for path, source, target in found
        if ROOMS.index(target) >= ROOMS.index(source) or (source, target) in APART
    ]
    assert not wrong, "\n".join(wrong)
