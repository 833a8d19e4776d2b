"""The environment lock across real processes: a stale lock is taken over by exactly one of several racers, the
kernel lock dies with its holder (however it dies), a left lock keeps refusing, a busy lock is waited for briefly.

Racers are forked processes started together at a barrier; the winner holds the lock until every racer has tried,
so two winners in a round would have held it at the same time."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drills.clock import FakeClock
from drills.errors import GuardrailError
from drills.journal import Journal
from drills.lock import Lock, flock_path, lock_path, lock_status
from tests.drills.drills_support import ROOT

CTX = multiprocessing.get_context("fork")  # the racers need only this module's functions: fork starts them fast
RACERS = 4
ENV = "prod"


def _journal(state: Path, drill_id: str, finished: bool) -> None:
    j = Journal.create(state, drill_id, FakeClock())
    j.write("start", drill_id=drill_id, plan={"env": ENV, "scenario": "evacuate-region", "region": "us-east-1"})
    j.write("config_set", stack="prod-global", values={"routing.regions.us-east-1.weight": 0}, before={})
    if finished:
        j.write("finished", status="completed")
    j.close()


def _crash_holding(state: Path, drill_id: str, finished: bool) -> None:
    """A drill process that takes the lock, journals, and dies without letting go (as under SIGKILL)."""
    Lock.acquire(state, ENV, drill_id)
    _journal(state, drill_id, finished)
    os._exit(0)


def _racer(state: Path, drill_id: str, takeover_of: str | None, start, tried, results) -> None:
    start.wait()
    try:
        lock = Lock.acquire(state, ENV, drill_id, takeover_of=takeover_of)
    except GuardrailError as e:
        results.put(("refused", drill_id, e.code))
        tried.wait()
        return
    results.put(("held", drill_id, json.loads(lock_path(state, ENV).read_text())["pid"] == os.getpid()))
    tried.wait()  # hold it until every racer has tried
    lock.release()


def _race(state: Path, racers: list[tuple[str, str | None]]) -> list[tuple]:
    start, tried = CTX.Barrier(len(racers), timeout=30), CTX.Barrier(len(racers), timeout=30)
    results = CTX.Queue()
    procs = [CTX.Process(target=_racer, args=(state, d, t, start, tried, results)) for d, t in racers]
    for p in procs:
        p.start()
    out = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return out


def _stale(state: Path, drill_id: str, finished: bool) -> None:
    p = CTX.Process(target=_crash_holding, args=(state, drill_id, finished))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    held = lock_status(state, ENV)
    assert held is not None and held["drill_id"] == drill_id and held["alive"] is False


def test_racers_taking_over_a_stale_lock_never_both_win(tmp_path):
    """50 rounds: a drill dies holding the lock mid-drill; 4 processes race to take it over for its rollback."""
    for n in range(50):
        state = tmp_path / f"r{n}"
        crashed = f"crashed-{n}"
        _stale(state, crashed, finished=False)
        results = _race(state, [(crashed, crashed)] * RACERS)
        held = [r for r in results if r[0] == "held"]
        assert len(held) == 1, (n, results)
        assert held[0][2] is True  # the record named the winner while it held the lock
        assert sorted(r[2] for r in results if r[0] == "refused") == ["lock"] * (RACERS - 1)
        assert lock_status(state, ENV) is None  # the winner released it


def test_new_drills_racing_for_a_finished_drills_stale_lock_never_both_win(tmp_path):
    for n in range(25):
        state = tmp_path / f"r{n}"
        _stale(state, f"done-{n}", finished=True)
        results = _race(state, [(f"new-{n}-{i}", None) for i in range(RACERS)])
        assert [r[0] for r in results].count("held") == 1, (n, results)


def test_new_drills_against_a_takeover_of_an_unfinished_drill(tmp_path):
    """New drills and the crashed drill's rollbacks race: only a rollback can win; a new drill never does."""
    for n in range(25):
        state = tmp_path / f"r{n}"
        crashed = f"crashed-{n}"
        _stale(state, crashed, finished=False)
        results = _race(state, [(f"new-{n}-0", None), (crashed, crashed), (f"new-{n}-1", None), (crashed, crashed)])
        held = [r for r in results if r[0] == "held"]
        assert len(held) == 1 and held[0][1] == crashed, (n, results)
        assert {r[2] for r in results if r[0] == "refused"} <= {"lock", "unfinished-drill"}


def test_racers_for_a_free_lock_never_both_win(tmp_path):
    for n in range(25):
        results = _race(tmp_path / f"r{n}", [(f"new-{n}-{i}", None) for i in range(RACERS)])
        assert [r[0] for r in results].count("held") == 1, (n, results)


_HOLDER = """
import sys, time
from drills.lock import Lock
Lock.acquire(sys.argv[1], "prod", "d-held")
print("held", flush=True)
time.sleep(60)
"""


def test_the_kernel_lock_dies_with_its_holder_and_the_left_lock_refuses(tmp_path):
    state = tmp_path / "state"
    _journal(state, "d-held", finished=False)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        status = lock_status(state, ENV)
        assert status is not None and status["alive"] is True and status["pid"] == proc.pid
        with pytest.raises(GuardrailError) as e:
            Lock.acquire(state, ENV, "d-new")
        assert e.value.code == "lock" and "d-held" in str(e.value)
        with pytest.raises(GuardrailError) as e:  # not even its own rollback while the holder lives
            Lock.acquire(state, ENV, "d-held", takeover_of="d-held")
        assert e.value.code == "lock"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    status = lock_status(state, ENV)
    assert status is not None and status["alive"] is False  # the kernel let go; the record stays
    with pytest.raises(GuardrailError) as e:
        Lock.acquire(state, ENV, "d-new")
    assert e.value.code == "unfinished-drill" and "drills rollback d-held" in str(e.value)
    Lock.acquire(state, ENV, "d-held", takeover_of="d-held").release()
    assert lock_status(state, ENV) is None
    assert flock_path(state, ENV).exists()  # the kernel lock's file is permanent: never unlinked under a waiter


def test_a_busy_lock_without_a_live_holder_is_waited_for_then_refused(tmp_path):
    """The flock held by a process the record does not name (a taker deciding at that instant): a brief wait."""
    Lock.acquire(tmp_path, ENV, "d-first").release()  # creates the flock file
    fd = os.open(flock_path(tmp_path, ENV), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        with pytest.raises(GuardrailError) as e:
            Lock.acquire(tmp_path, ENV, "d-new", busy_wait=0.3)
        assert e.value.code == "lock" and "stayed held" in str(e.value) and time.monotonic() - t0 >= 0.3
        threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        lock = Lock.acquire(tmp_path, ENV, "d-new", busy_wait=5)
        assert lock.held and lock_status(tmp_path, ENV)["drill_id"] == "d-new"  # type: ignore[index]  # just taken
        lock.release()
    finally:
        os.close(fd)


def test_a_lock_is_reentrant_for_its_own_drill_only(tmp_path):
    lock = Lock.acquire(tmp_path, ENV, "d-1")
    again = Lock.acquire(tmp_path, ENV, "d-1")
    assert not again.held
    again.release()  # releases nothing: the outer holder still holds it
    assert lock_status(tmp_path, ENV)["alive"] is True  # type: ignore[index]  # held by `lock`
    with pytest.raises(GuardrailError):
        Lock.acquire(tmp_path, ENV, "d-2")
    lock.release()
    Lock.acquire(tmp_path, ENV, "d-2").release()


def test_a_record_from_another_host_is_never_taken_over_from_here(tmp_path):
    """Its holder's flock, if any, lives in that host's kernel: this host cannot tell it is gone."""
    Lock.acquire(tmp_path, ENV, "d-first").release()
    lock_path(tmp_path, ENV).write_text(json.dumps({"drill_id": "d-far", "pid": 1, "host": "elsewhere"}))
    assert lock_status(tmp_path, ENV)["alive"] is True  # type: ignore[index]  # the record was just written
    for drill, takeover in (("d-new", None), ("d-far", "d-far")):
        with pytest.raises(GuardrailError) as e:
            Lock.acquire(tmp_path, ENV, drill, takeover_of=takeover)
        assert e.value.code == "lock" and "elsewhere" in str(e.value)
    assert json.loads(lock_path(tmp_path, ENV).read_text())["drill_id"] == "d-far"
