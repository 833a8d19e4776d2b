"""`python -m drills experiment start|stop|status`: starting or stopping an experiment rewrites one value of its
window in the hand-written global stack file (comments, quoting and every other byte kept), only once the whole
fleet validates with the change; a refusal (unknown id, ended, overlapping, not started) writes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drills.cli import main
from drills.experiment.window import WindowEditError, set_window_value, stamp
from infra.config import load_fleet
from tests.experiment.support import pinned_stacks
from tests.experiment.test_command import _log
from tests.experiment.test_stack_config import CANDIDATE

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)

BLOCK = (
    """\
  # A/B experiments (issue 19): one at a time; each arm's version is pinned in every region.
  reco-dr:experiments:
    - id: old-test   # ran last month
      arms:
        - {{name: control, version: "2026.11.0", weight: 50, control: true}}
        - {{name: more-signal, version: "{candidate}", weight: 50}}
      start: {old_start}
      end: {old_end}
    - id: first
      arms:
        - name: control
          version: "2026.11.0"
          weight: 50
          control: true
        - name: more-signal
          version: "{candidate}"   # the candidate
          weight: 50
      holdout: 5
      start: "{first_start}"   # planned; `python -m drills experiment start` moves it
      end: '{first_end}'
      guardrails:
        - {{metric: ctr, max_relative_drop: 0.05}}
"""
    # One line, in flow style:
    + '    - {{id: second, arms: [{{name: control, version: "2026.11.0", weight: 50, control: true}}, '
    + '{{name: b, version: "{candidate}", weight: 50}}], start: "{second_start}", end: "{second_end}"}}\n'
)


def _stacks(tmp_path: Path, first: tuple[datetime, datetime]) -> Path:
    """stacks/ with three experiments in prod-global, appended as a person writes them (comments, flow and block
    style, plain, double- and single-quoted times): old-test ended, `first` in the window given, `second` in 5 to 10
    days; the candidate pinned in every prod region."""
    d = pinned_stacks(tmp_path, [CANDIDATE])
    g = d / "Pulumi.prod-global.yaml"
    block = BLOCK.format(
        candidate=CANDIDATE,
        old_start=stamp(NOW - 30 * DAY),
        old_end=stamp(NOW - 20 * DAY),
        first_start=stamp(first[0]),
        first_end=stamp(first[1]),
        second_start=stamp(NOW + 5 * DAY),
        second_end=stamp(NOW + 10 * DAY),
    )
    g.write_text(g.read_text() + block)
    assert [e.id for e in load_fleet("prod", d).glob.experiments] == ["old-test", "first", "second"]
    return d


def _run(capsys, stacks: Path, *argv: str) -> tuple[int, str, str]:
    rc = main(["experiment", *argv[:1], "--env", "prod", "--stacks-dir", str(stacks), *argv[1:]])
    out, err = capsys.readouterr()
    return rc, out, err


def _window(stacks: Path, eid: str) -> tuple[datetime, datetime]:
    (e,) = (e for e in load_fleet("prod", stacks).glob.experiments if e.id == eid)
    return e.start, e.end


def _one_line_changed(before: str, after: str) -> tuple[str, str]:
    """The one line that differs (before, after); every other line byte for byte the same."""
    b, a = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    changed = [(x, y) for x, y in zip(b, a, strict=True) if x != y]
    assert len(changed) == 1, changed
    return changed[0]


def _regional(stacks: Path) -> list[str]:
    return sorted(load_fleet("prod", stacks).stack_names.values())


def test_start_sets_start_to_now_and_keeps_every_other_byte(tmp_path, capsys):
    stacks = _stacks(tmp_path, (NOW + DAY, NOW + 3 * DAY))
    g = stacks / "Pulumi.prod-global.yaml"
    before = g.read_text()
    t0 = datetime.now(UTC).replace(microsecond=0)
    rc, out, _ = _run(capsys, stacks, "start", "--id", "first", "--yes")
    t1 = datetime.now(UTC)
    assert rc == 0, out
    old, new = _one_line_changed(before, g.read_text())
    assert old.startswith('      start: "') and old.endswith(
        '"   # planned; `python -m drills experiment start` moves it\n'
    )
    start, end = _window(stacks, "first")
    assert t0 <= start <= t1 and end == NOW + 3 * DAY
    assert new == old.replace(stamp(NOW + DAY), stamp(start)) and stamp(start).endswith("Z")
    # The next steps: an up of each regional stack of prod, and the header clients send from start.
    assert all(f"pulumi up --stack {s}" in out for s in _regional(stacks)) and _regional(stacks)
    assert "X-Reco-Arm" in out and "first.holdout, first.control, first.more-signal" in out
    assert f"line {before.splitlines().index(old.rstrip(chr(10))) + 1}" in out

    rc, out, _ = _run(capsys, stacks, "start", "--id", "first", "--yes")
    assert rc == 0 and "already running" in out and "nothing written" in out
    assert _window(stacks, "first") == (start, end)


def test_stop_sets_end_to_now_and_names_the_reason(tmp_path, capsys):
    stacks = _stacks(tmp_path, (NOW - DAY, NOW + 3 * DAY))
    g = stacks / "Pulumi.prod-global.yaml"
    before = g.read_text()
    t0 = datetime.now(UTC).replace(microsecond=0)
    rc, out, _ = _run(capsys, stacks, "stop", "--id", "first", "--reason", "ctr guardrail breached")
    t1 = datetime.now(UTC)
    assert rc == 0, out
    old, new = _one_line_changed(before, g.read_text())
    start, end = _window(stacks, "first")
    assert start == NOW - DAY and t0 <= end <= t1
    assert old == f"      end: '{stamp(NOW + 3 * DAY)}'\n" and new == f"      end: '{stamp(end)}'\n"
    assert "ctr guardrail breached" in out and "retire the arms" in out
    assert all(f"pulumi up --stack {s}" in out for s in _regional(stacks))

    rc, out, _ = _run(capsys, stacks, "stop", "--id", "first")
    assert rc == 0 and "already ended" in out and "nothing written" in out
    # Stopped, the next experiment may start now: no overlap left.
    rc, out, err = _run(capsys, stacks, "start", "--id", "second", "--yes")
    assert rc == 0, err
    assert _window(stacks, "second")[0] >= end


def test_a_flow_style_plain_value_is_rewritten_in_place(tmp_path, capsys):
    stacks = _stacks(tmp_path, (NOW - 40 * DAY, NOW - 35 * DAY))  # first ended too: second may start
    g = stacks / "Pulumi.prod-global.yaml"
    before = g.read_text()
    rc, _, err = _run(capsys, stacks, "start", "--id", "second", "--yes")
    assert rc == 0, err
    old, new = _one_line_changed(before, g.read_text())
    start, _ = _window(stacks, "second")
    assert old.startswith("    - {id: second,") and new == old.replace(stamp(NOW + 5 * DAY), stamp(start))


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("start", "--id", "nope", "--yes"), ["no experiment 'nope'", "old-test, first, second"]),
        (("stop", "--id", "nope"), ["no experiment 'nope'"]),
        (("start", "--id", "old-test", "--yes"), ["cannot start experiment old-test", "end =", "is past", "rule:"]),
        # first runs until now + 3 days: second starting now would overlap it.
        (
            ("start", "--id", "second", "--yes"),
            [
                "refused: experiment second: start =",
                "reco-dr:experiments[2].start",
                "one experiment at a time",
                "first",
            ],
        ),
        (("stop", "--id", "second"), ["cannot stop experiment second", "has not started", "rule: end after start"]),
        (("start", "--id", "second"), ["add --yes", "Nothing written"]),  # no terminal to confirm at
    ],
)
def test_refusals_exit_2_and_write_nothing(tmp_path, capsys, argv, says):
    stacks = _stacks(tmp_path, (NOW - DAY, NOW + 3 * DAY))
    files = {f.name: f.read_bytes() for f in stacks.iterdir()}
    rc, _, err = _run(capsys, stacks, *argv)
    assert rc == 2
    assert all(s in err for s in says), err
    assert {f.name: f.read_bytes() for f in stacks.iterdir()} == files  # nothing written, no temp file left


def test_status_shows_the_window_the_cells_and_their_header_values(tmp_path, capsys):
    stacks = _stacks(tmp_path, (NOW - DAY, NOW + 3 * DAY))
    rc, out, _ = _run(capsys, stacks, "status", "--id", "first", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert (doc["experiment"], doc["state"], doc["running"], doc["header"]) == ("first", "running", True, "X-Reco-Arm")
    assert (doc["start"], doc["end"]) == (stamp(NOW - DAY), stamp(NOW + 3 * DAY))
    # NOW is the module's import time: the suite may have run a while since.
    left = (NOW + 3 * DAY - datetime.now(UTC)).total_seconds()
    assert left - 120 < doc["seconds_left"] <= left + 1 and doc["starts_in_seconds"] is None
    assert doc["cells"] == [
        {"cell": "holdout", "version": "2026.11.0", "control": False, "share": 0.05, "header": "first.holdout"},
        {"cell": "control", "version": "2026.11.0", "control": True, "share": 0.475, "header": "first.control"},
        {"cell": "more-signal", "version": CANDIDATE, "control": False, "share": 0.475, "header": "first.more-signal"},
    ]
    assert doc["regional_stacks"] == _regional(stacks) and doc["report"] is None

    rc, out, _ = _run(capsys, stacks, "status", "--id", "second", "--json")
    doc = json.loads(out)
    assert (doc["state"], doc["running"], doc["seconds_left"]) == ("not started", False, None)
    until = (NOW + 5 * DAY - datetime.now(UTC)).total_seconds()
    assert until - 120 < doc["starts_in_seconds"] <= until + 1
    rc, out, _ = _run(capsys, stacks, "status", "--id", "old-test")
    assert rc == 0 and "ended at" in out and "old-test.control" in out

    rc, out, _ = _run(capsys, stacks, "status", "--id", "first")
    assert rc == 0 and "running since" in out and "first.more-signal" in out and "left" in out


def test_status_with_events_adds_the_reports_figures(tmp_path, capsys):
    stacks = _stacks(tmp_path, (NOW - DAY, NOW + 3 * DAY))
    (e,) = (e for e in load_fleet("prod", stacks).glob.experiments if e.id == "first")
    log = tmp_path / "events.jsonl"
    _log(log, e, 3000, {"control": 0.05, "more-signal": 0.05})
    rc, out, _ = _run(capsys, stacks, "status", "--id", "first", "--events", str(log), "--json")
    assert rc == 0
    report = json.loads(out)["report"]
    assert set(report["arms"]) == {"holdout", "control", "more-signal"} and report["srm_ok"] is True
    rc, out, _ = _run(capsys, stacks, "status", "--id", "first", "--events", str(log))
    assert rc == 0 and "sample ratio: ok" in out and "decision:" in out


# ---------------------------------------------------------------- the one-value edit
DOC = (
    "# top comment\r\n"
    "config:\r\n"
    "  reco-dr:env: prod   # trailing\r\n"
    "  reco-dr:experiments:\r\n"
    "    - id: a\r\n"
    "      start: '2026-12-01T00:00:00Z'  # quoted once\r\n"
    "      end: 2026-12-08T00:00:00Z\r\n"
    '    - {id: b, start: "2026-12-10T00:00:00Z", end: 2026-12-20T00:00:00Z}\r\n'
)
T = datetime(2026, 11, 30, 9, 8, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("eid", "key", "old", "new"),
    [
        ("a", "start", "'2026-12-01T00:00:00Z'", "'2026-11-30T09:08:07Z'"),
        ("a", "end", "2026-12-08T00:00:00Z", "2026-11-30T09:08:07Z"),
        ("b", "start", '"2026-12-10T00:00:00Z"', '"2026-11-30T09:08:07Z"'),
        ("b", "end", "2026-12-20T00:00:00Z", "2026-11-30T09:08:07Z"),
    ],
)
def test_the_edit_replaces_only_the_value_in_its_own_style(eid, key, old, new):
    edit = set_window_value(DOC, eid, key, T)
    assert (edit.old, edit.new) == (old, new)
    before, after = DOC.split("\r\n"), edit.text.split("\r\n")  # CRLF kept
    changed = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]
    assert changed == [edit.line - 1] and after[edit.line - 1] == before[edit.line - 1].replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "eid", "says"),
    [
        (DOC, "c", "0 experiments with id 'c'"),
        (DOC.replace("- id: a", "- id: b"), "b", "2 experiments with id 'b'"),
        ("config:\n  reco-dr:experiments:\n    - id: a\n      start: >-\n        2026-12-01T00:00:00Z\n", "a", "block"),
        ("config:\n  reco-dr:env: prod\n", "a", "no key 'reco-dr:experiments'"),
        ("config:\n  reco-dr:experiments:\n    - id: a\n", "a", "no key 'start'"),
    ],
)
def test_the_edit_refuses_what_it_cannot_rewrite_safely(text, eid, says):
    with pytest.raises(WindowEditError, match=says):
        set_window_value(text, eid, "start", T)
