"""The process supervisor: everything started is stopped (helpers included), also after an exception, and a
port held by someone else is reported before anything starts."""

from __future__ import annotations

import signal
import socket
import sys
import time

import pytest

from drills.rehearsal.procs import (
    PortInUse,
    Supervisor,
    check_ports_free,
    free_port_block,
    group_pids,
    pid_alive,
    port_free,
)

# A child that ignores SIGINT and SIGTERM and leaves a grandchild behind: the worst case for cleanup.
STUBBORN = (
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', "
    "'import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)'])\n"
    "print('up', flush=True); time.sleep(60)\n"
)


def _wait_group(child, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(group_pids(child.pgid)) >= n:
            return group_pids(child.pgid)
        time.sleep(0.02)
    raise AssertionError(f"group of {child.name} never reached {n} processes")


def test_stop_ladder_kills_stubborn_children_and_grandchildren(tmp_path, no_leftovers):
    with Supervisor(tmp_path) as sup:
        no_leftovers.append(sup)
        polite = sup.start("polite", [sys.executable, "-c", "import time; time.sleep(60)"])
        stubborn = sup.start("stubborn", [sys.executable, "-c", STUBBORN])
        pids = [*_wait_group(stubborn, 2), polite.pid]
        t0 = time.monotonic()
        sup.stop(stubborn, grace=0.3, term_grace=0.3)
        assert time.monotonic() - t0 < 3
        assert stubborn.popen.returncode == -signal.SIGKILL
    assert all(not pid_alive(p) for p in pids)
    assert (tmp_path / "stubborn.log").read_text().startswith("up")


def test_exception_inside_context_stops_everything(tmp_path, no_leftovers):
    sup = Supervisor(tmp_path)
    no_leftovers.append(sup)
    with pytest.raises(RuntimeError, match="boom"), sup:
        c = sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
        raise RuntimeError("boom")
    assert not pid_alive(c.pid) and not sup.leftovers()


def test_port_in_use_is_reported_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        with pytest.raises(PortInUse) as e:
            check_ports_free([("127.0.0.1", port)])
        assert str(e.value) == f"port {port} on 127.0.0.1 is in use by another process: stop it or pass --base-port"
    base = free_port_block(5, ["127.0.0.1", "127.0.10.1"])
    assert all(port_free(h, base + i) for h in ("127.0.0.1", "127.0.10.1") for i in range(5))


SCRIPT = """
import sys, time
from drills.rehearsal.procs import Supervisor
mode = sys.argv[1]
sup = Supervisor()
if mode != "atexit":
    sup.__enter__()  # installs the SIGINT/SIGTERM handlers
kids = [sup.start(f"k{i}", [sys.executable, "-c", "import time; time.sleep(60)"]) for i in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
if mode == "atexit":
    sys.exit(0)  # no context manager, no stop: the atexit hook must do it
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "atexit"])
def test_signals_and_interpreter_exit_stop_children(how, tmp_path):
    import os
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, how],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    if how != "atexit":
        proc.send_signal(getattr(signal, how))
    rc = proc.wait(10)
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids), f"children of a process ended by {how} survived"
    assert rc == {"SIGTERM": 143, "SIGINT": -signal.SIGINT, "atexit": 0}[how] or (how == "SIGINT" and rc in (1, 130))


# An owner that starts a supervised server (with a helper of its own) and prints their pids, then waits to be killed.
OWNER = (
    "import sys, time\n"
    "from drills.rehearsal.procs import Supervisor, group_pids\n"
    "sup = Supervisor(sys.argv[1])\n"
    "c = sup.start('server', [sys.executable, '-c', \"import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)\"])\n"
    "while len(group_pids(c.pgid)) < 2: time.sleep(0.02)\n"
    "print(' '.join(map(str, group_pids(c.pgid))), flush=True); time.sleep(60)\n"
)


def test_orphans_of_a_sigkilled_owner_are_found_and_stopped(tmp_path):
    """SIGKILL reaches no cleanup: the children outlive their owner. They carry the owner's identity, so the next
    rehearsal finds them (owner gone) and stops them; children of a live owner are never touched."""
    import subprocess

    from drills.rehearsal.procs import orphans, reap_orphans
    from infra.config import ROOT

    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert owner.stdout is not None
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        assert not set(pids) & set(orphans())  # the owner lives: not orphans
        owner.kill()
        owner.wait(5)
        assert set(pids) <= set(orphans())
        assert set(pids) <= set(reap_orphans(grace=2.0))
        assert not any(pid_alive(p) for p in pids) and not set(pids) & set(orphans())
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(5)
