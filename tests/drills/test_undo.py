"""Every event type a drill journals has an undo in drills.undo.UNDO or is declared in NO_UNDO with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

from drills.undo import NO_UNDO, UNDO

ROOT = Path(__file__).resolve().parents[2]


def journaled_event_types() -> dict[str, list[str]]:
    """Event types written anywhere in drills/: `run.event("type", ...)`, `journal.write("type", ...)`."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "drills").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("event", "write")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.setdefault(node.args[0].value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_journaled_event_type_is_classified():
    found = journaled_event_types()
    assert {"config_set", "lkg_writing", "pins_writing", "fault_prepared"} <= set(found)  # the scan works
    unclassified = {t: where for t, where in found.items() if t not in UNDO and t not in NO_UNDO}
    assert not unclassified, f"journaled with neither an undo nor a reason it needs none: {unclassified}"
    assert not set(UNDO) & set(NO_UNDO)
    assert not (set(UNDO) | set(NO_UNDO)) - set(found), "classified but never journaled (stale entries)"
    assert all(reason.strip() for reason in NO_UNDO.values())
