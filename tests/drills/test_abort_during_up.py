"""Abort conditions are watched while a long `pulumi up` runs: the drill stops waiting for it at the first poll
that trips one, journals the abort and rolls back; the up's own outcome is journaled when it ends, and the
rollback changes that stack only after it has."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from drills.engine import start_drill
from drills.errors import Abort
from drills.journal import drill_dir, load, read_entries
from drills.scenarios import build_plan
from tests.drills.drills_support import FAST

if TYPE_CHECKING:
    from drills.engine import Run

PRE_WEIGHTS = {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
POLL = 0.2  # the monitor's poll, in the fake clock's seconds: the wait during an up is that long in real time


def plan_for(w, **extra):
    return build_plan(
        "evacuate-region", w.env, "us-east-1", stacks_dir=w.stacks, overrides={**FAST, "poll_seconds": POLL, **extra}
    )


def live_weights(w):
    return {r: s.weight for r, s in w.backend.route53.records().items()}


def journal_types(w) -> list[str]:
    paths = list((w.state / "drills").glob("*/journal.jsonl")) if (w.state / "drills").exists() else []
    return [e["type"] for p in paths for e in read_entries(p)]


def test_an_abort_condition_that_trips_during_a_slow_up_stops_the_drill_before_the_up_ends(world):
    w = world("prod")
    servers = w.backend.extras["servers"]
    real_up, real_set = w.backend.stacks.up, w.backend.stacks.set_config
    seen: dict[str, object] = {}
    timeline: list[str] = []

    def set_config(stack, values):
        timeline.append(f"set_config {stack}")
        return real_set(stack, values)

    def slow_up(stack, message):
        """The first shift's `up`: every region starts failing its inferences as it begins; it takes until the
        drill has aborted (at most 30 s), then applies."""
        if "n" in seen:
            return real_up(stack, message)
        seen["n"] = 1
        seen["thread"] = threading.current_thread().name
        for s in servers.values():
            s.fail_infer = True
        deadline = time.monotonic() + 30
        while "abort" not in journal_types(w) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["abort_before_up_ended"] = "abort" in journal_types(w)
        for s in servers.values():
            s.fail_infer = False
        res = real_up(stack, message)
        timeline.append(f"first up ended {stack}")
        return res

    w.backend.stacks.up, w.backend.stacks.set_config = slow_up, set_config
    out = start_drill(plan_for(w), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "aborted", out.reason
    assert "abort condition" in (out.reason or "") and "success" in (out.reason or "")
    assert seen["abort_before_up_ended"] is True
    assert seen["thread"] != threading.main_thread().name

    entries = load(w.state, out.drill_id)
    types = [e["type"] for e in entries]
    i = {t: types.index(t) for t in ("abort", "stack_up_running", "rollback_begin", "rollback_done")}
    abort = entries[i["abort"]]
    assert abort["step"] == "shift-1"
    assert entries[i["stack_up_running"]]["stack"] == "prod-global"
    # the abandoned up's own outcome, journaled when it ended, after the abort; the rollback set the stack's config
    # (and applied it) only after that up had ended
    late = next(e for e in entries if e["type"] == "stack_up" and e.get("after_abort"))
    assert late["stack"] == "prod-global" and late["seq"] > abort["seq"]
    assert timeline == ["set_config prod-global", "first up ended prod-global", "set_config prod-global"]
    rollback_up = next(e for e in entries if e["type"] == "stack_up" and e.get("by") == "rollback")
    assert rollback_up["stack"] == "prod-global" and late["seq"] < rollback_up["seq"]
    assert i["stack_up_running"] < i["abort"] < i["rollback_begin"] < i["rollback_done"]
    # no drill `stack_up` for shift-1 from the action: it never saw the up return
    assert [e for e in entries if e["type"] == "stack_up" and not e.get("by") and not e.get("after_abort")] == []
    assert entries[i["rollback_done"]]["verified"] is True
    assert live_weights(w) == PRE_WEIGHTS
    assert entries[-1]["type"] == "finished" and entries[-1]["status"] == "aborted"
    assert not (drill_dir(w.state, out.drill_id).parent.parent / "locks" / "prod.lock").exists()


def test_the_service_is_probed_while_a_slow_up_runs_and_the_drill_goes_on(world):
    w = world("prod")
    servers = w.backend.extras["servers"]
    real_up = w.backend.stacks.up
    during: list[int] = []

    def slow_up(stack, message):
        if not during:  # the first shift's up: three polls long, the service healthy
            before = sum(s.requests for s in servers.values())
            time.sleep(3 * 0.5)
            during.append(sum(s.requests for s in servers.values()) - before)
        return real_up(stack, message)

    w.backend.stacks.up = slow_up
    out = start_drill(plan_for(w, steps=1, hold_seconds=5, poll_seconds=0.5), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    assert during[0] >= 2 * 4, during  # two polls or more of 4 clients' probes reached the Tritons meanwhile
    entries = load(w.state, out.drill_id)
    drill_ups = [e for e in entries if e["type"] == "stack_up"]
    assert len(drill_ups) >= 2 and not any(e.get("after_abort") for e in drill_ups)
    assert "stack_up_running" not in [e["type"] for e in entries]
    assert live_weights(w) == PRE_WEIGHTS


# ---------------------------------------------------------------- WatchedStacks alone (no moto)
class FakeRun:
    """What WatchedStacks reads of a Run; `poll` is the test's abort condition."""

    def __init__(self, journal, clock, poll):
        self.journal, self.clock, self.poll = journal, clock, poll
        self.in_rollback = False
        self.params = SimpleNamespace(poll_seconds=0.05)
        self.lines: list[str] = []
        self.log = self.lines.append


class GatedStacks:
    """A stack adapter whose `up` waits for `gate`, then returns (or raises `error`)."""

    def __init__(self, error: Exception | None = None):
        self.gate, self.error = threading.Event(), error
        self.calls: list[tuple[str, str]] = []

    def up(self, stack, message):
        self.calls.append(("up", stack))
        assert self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return {"summary": {"update": 1}}

    def set_config(self, stack, values):
        self.calls.append(("set_config", stack))


def _watched(tmp_path, poll, error=None):
    from drills.clock import FakeClock
    from drills.engine import WatchedStacks
    from drills.journal import Journal

    clock = FakeClock()
    journal = Journal.create(tmp_path, "d1", clock)
    inner = GatedStacks(error)
    run = FakeRun(journal, clock, poll)
    return WatchedStacks(inner, cast("Run", run)), inner, run, journal


def test_an_up_that_ends_as_the_abort_trips_is_journaled_by_the_waiting_side(tmp_path):
    def poll():  # the up ends while this poll judges, and the poll aborts anyway
        inner.gate.set()
        time.sleep(0.2)
        raise Abort("abort condition: tripped")

    stacks, inner, _run, journal = _watched(tmp_path, poll)
    with pytest.raises(Abort):
        stacks.up("prod-global", "shift")
    types = [(e["type"], e.get("after_abort")) for e in journal.entries()]
    assert types == [("stack_up", True)]  # not "running": it had ended; journaled once, by the waiting side


def test_an_abandoned_up_that_fails_is_journaled_and_waited_for_before_the_stack_changes_again(tmp_path):
    def poll():
        raise Abort("abort condition: tripped")

    stacks, inner, run, journal = _watched(tmp_path, poll, error=RuntimeError("provider crashed"))
    with pytest.raises(Abort):
        stacks.up("prod-global", "shift")
    assert [e["type"] for e in journal.entries()] == ["stack_up_running"]
    run.in_rollback = True
    threading.Timer(0.3, inner.gate.set).start()
    stacks.set_config("prod-global", {"x": 1})  # the rollback's change: waits for the up to end
    assert inner.calls == [("up", "prod-global"), ("set_config", "prod-global")]
    failed = journal.entries()[-1]
    assert failed["type"] == "stack_up_failed" and "provider crashed" in failed["error"]
    assert any("waiting for the pulumi up" in line for line in run.lines)


def test_a_watched_up_may_run_the_pulumi_sdk_offline_program(tmp_path):
    """The rehearsal's `up` runs the stack's program offline (infra.mocks): the Pulumi SDK needs the thread's
    event loop, which a bare worker thread lacks."""
    from infra.mocks import run_program
    from tests.drills.drills_support import ROOT

    class ProgramStacks:
        def up(self, stack, message):
            return {"summary": {"resources": len(run_program(stack, stacks_dir=ROOT / "stacks").resources)}}

    stacks, _inner, _run, journal = _watched(tmp_path, lambda: None)
    stacks._inner = ProgramStacks()
    res = stacks.up("prod-global", "shift")
    assert res["summary"]["resources"] > 10
    assert journal.entries() == []  # returned to the action, which journals it
