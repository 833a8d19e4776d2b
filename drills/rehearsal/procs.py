"""Process supervision for the rehearsal: every server it starts is a child it can account for and stop.

The rehearsal starts real servers (moto_server, one Triton per region); a run that crashes, is interrupted
or fails a check must not leave any of them behind, and must not collide with a server somebody else runs.

- Each child runs in its own session and process group (`start_new_session=True`), so the group id equals
  the child's pid and a stop reaches its helpers too (Triton's python-backend stub is a grandchild).
- Stop is a ladder: a polite signal (SIGINT by default: Triton and werkzeug both drain on it), then SIGTERM
  to the whole group, then SIGKILL to the whole group, each with its own timeout. Afterwards the group must
  be empty; `on_stop` hooks run last (Triton uses one to unlink its shared-memory regions).
- Cleanup runs on a normal exit of the `with` block, on an exception inside it, on SIGINT/SIGTERM (handlers
  installed while the supervisor is entered, previous handlers restored on exit) and at interpreter exit
  (`atexit`), whichever comes first; it is idempotent.
- Ports: `check_ports_free` binds each (address, port) the rehearsal is about to use, so a port held by
  another process is reported clearly *before* anything starts; `free_port_block` picks a block of
  consecutive ports free on every address, below Linux's ephemeral range so client sockets do not race it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import random
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from drills.lock import pid_alive

# Linux hands out client (ephemeral) ports from 32768-60999 by default; picking server ports below that
# keeps a port we checked free from being taken by some outgoing connection a moment later.
PORT_RANGE = (20000, 32000)


class PortInUse(RuntimeError):
    """A port the rehearsal needs is held by another process."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        super().__init__(f"port {port} on {host} is in use by another process: stop it or pass --base-port")


class ProcessError(RuntimeError):
    """A child failed to start, died early, or did not become ready."""


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) and nothing holds it bound.

    SO_REUSEADDR makes the probe ignore TIME_WAIT leftovers of earlier connections (which do not stop a
    server from binding either) while still failing against a live listener.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def udp_port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports_free(endpoints: Iterable[tuple[str, int]], udp: Iterable[tuple[str, int]] = ()) -> None:
    """Raise PortInUse for the first (host, port) that is taken (TCP for `endpoints`, UDP for `udp`)."""
    for host, port in endpoints:
        if not port_free(host, port):
            raise PortInUse(host, port)
    for host, port in udp:
        if not udp_port_free(host, port):
            raise PortInUse(host, port)


def free_port_block(
    n: int, hosts: Sequence[str] = ("127.0.0.1",), *, tries: int = 200, rng: random.Random | None = None
) -> int:
    """The first port of `n` consecutive ports free (TCP and UDP) on every host in `hosts`.

    Random start points spread concurrent rehearsals (other test runs on the same machine) apart. The
    block is only known free at the moment of the check; the servers then bind it, and a lost race shows
    up as a server failing to start, reported with its log.
    """
    rng = rng or random.Random()
    lo, hi = PORT_RANGE
    for _ in range(tries):
        base = rng.randrange(lo, hi - n)
        if all(port_free(h, base + i) and udp_port_free(h, base + i) for h in hosts for i in range(n)):
            return base
    raise ProcessError(f"no block of {n} free ports in {lo}-{hi} on {', '.join(hosts)}")


# ---------------------------------------------------------------- pids
# pid_alive is the drills lock's own liveness test (drills.lock), imported above.
def pgrp(pid: int) -> int | None:
    """The process group of `pid`, or None when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        # fields after the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return sorted(out)


def cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of VmRSS over `pids` in KiB (0 for processes that are gone)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


# ---------------------------------------------------------------- orphans of a killed rehearsal
# SIGINT, SIGTERM, an exception and interpreter exit all reach the Supervisor's cleanup; SIGKILL reaches nothing,
# and the children (each in its own session) outlive their owner. They carry OWNER_VAR=<owner pid>:<owner start
# time> in their environment; `reap_orphans` stops those whose owner is gone. The start time makes a reused pid
# number not count as the owner still running.
OWNER_VAR = "RECO_DR_REHEARSAL_OWNER"


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def orphans() -> dict[int, str]:
    """Live processes started by a rehearsal Supervisor whose owner process is gone: pid -> owner tag."""
    out: dict[int, str] = {}
    me = str(os.getuid())
    prefix = f"{OWNER_VAR}=".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if str(d.stat().st_uid) != me:
                continue
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(prefix):
                tag = item[len(prefix) :].decode(errors="replace")
                opid, _, ostart = tag.partition(":")
                if (
                    opid.isdigit()
                    and (not pid_alive(int(opid)) or _start_time(int(opid)) != ostart)
                    and pid_alive(int(d.name))
                ):
                    out[int(d.name)] = tag
                break
    return out


def reap_orphans(grace: float = 3.0) -> list[int]:
    """Stop (SIGTERM, then SIGKILL after `grace`) every orphan of a killed rehearsal; return their pids."""
    found = orphans()
    for pid in found:
        try:
            os.kill(pid, signal.SIGCONT)  # a stalled (SIGSTOPped) region acts on signals only once continued
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in found):
        time.sleep(0.05)
    for pid in found:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return sorted(found)


# ---------------------------------------------------------------- children
@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path | None
    started_at: float
    on_stop: list[Callable[[Child], None]] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)  # every pid observed in the group, for audits

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session: the child leads its own group

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group(self) -> list[int]:
        pids = group_pids(self.pgid)
        self.seen_pids.update(pids)
        return pids

    def signal(self, sig: int, *, group: bool = False) -> None:
        try:
            if group:
                os.killpg(self.pgid, sig)
            else:
                self.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-20000:].decode(errors="replace")
        return "\n".join(data.splitlines()[-lines:])


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()


def _atexit_cleanup() -> None:
    for sup in list(_LIVE):
        sup.stop_all()


atexit.register(_atexit_cleanup)


class Supervisor:
    """Starts children, remembers them, stops them all. Use as a context manager.

    Inside `with Supervisor() as sup:` SIGINT and SIGTERM stop every child, then continue as the previous
    handler would (KeyboardInterrupt for SIGINT, SystemExit(143) for SIGTERM), so the code unwinds
    through its own `finally` blocks too.
    """

    def __init__(self, log_dir: Path | str | None = None, *, name: str = "rehearsal"):
        self.name = name
        self.log_dir = Path(log_dir) if log_dir else None
        self.children: dict[str, Child] = {}
        self.stopped: list[Child] = []  # every child ever stopped, for "nothing left behind" audits
        self._lock = threading.RLock()
        # as signal.signal returns them: a handler, SIG_DFL / SIG_IGN (ints), or None (not set from Python)
        self._prev_handlers: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
        _LIVE.add(self)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Supervisor:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._prev_handlers[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop_all()
        finally:
            for sig, prev in self._prev_handlers.items():
                signal.signal(sig, prev)
            self._prev_handlers.clear()

    def _on_signal(self, signum: int, frame) -> None:
        self.stop_all()
        prev = self._prev_handlers.get(signum)
        if callable(prev):
            prev(signum, frame)  # e.g. the default SIGINT handler raises KeyboardInterrupt
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    # ------------------------------------------------------------ start
    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        log_path: Path | str | None = None,
        on_stop: Callable[[Child], None] | None = None,
    ) -> Child:
        """Start `argv` in a new session; stdout and stderr go to `log_path` (default <log_dir>/<name>.log)."""
        with self._lock:
            if name in self.children and self.children[name].alive():
                raise ProcessError(f"{name} is already running (pid {self.children[name].pid})")
            if log_path is None and self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log_path = self.log_dir / f"{name}.log"
            # closed in the `finally` below, once the child holds its own descriptor
            log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed after Popen
            # Every child (and its own children, who inherit the environment) carries its owner's identity, so
            # the next rehearsal can find and stop what a SIGKILLed one left behind (`reap_orphans`).
            env = {**(os.environ if env is None else env), OWNER_VAR: owner_tag()}
            try:
                popen = subprocess.Popen(
                    list(argv),
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as e:
                raise ProcessError(f"cannot start {name}: {e}") from None
            finally:
                if not isinstance(log, int):  # an open file, not subprocess.DEVNULL
                    log.close()  # the child has its own descriptor now
            child = Child(
                name,
                list(argv),
                popen,
                Path(log_path) if log_path else None,
                time.monotonic(),
                [on_stop] if on_stop else [],
            )
            child.seen_pids.add(popen.pid)
            self.children[name] = child
            return child

    # ------------------------------------------------------------ stop
    def stop(
        self,
        child: Child | str,
        *,
        first: int = signal.SIGINT,
        first_to_group: bool = True,
        grace: float = 5.0,
        term_grace: float = 2.0,
    ) -> int | None:
        """Stop one child by the signal ladder; return its exit status (negative: killed by that signal)."""
        with self._lock:
            if isinstance(child, str):
                child = self.children[child]
            self.children.pop(child.name, None)
        if child.alive():
            child.group()  # remember the helpers' pids before the leader goes
            child.signal(first, group=first_to_group)
            # A stopped (SIGSTOP, a "stalled region") process only acts on signals once continued;
            # SIGCONT to a running process is a no-op.
            child.signal(signal.SIGCONT, group=True)
            try:
                child.popen.wait(grace)
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGTERM, group=True)
                try:
                    child.popen.wait(term_grace)
                except subprocess.TimeoutExpired:
                    child.signal(signal.SIGKILL, group=True)
                    child.popen.wait(5)
        self._drain_group(child)
        for hook in child.on_stop:
            with contextlib.suppress(Exception):  # a failing cleanup hook must not stop the others
                hook(child)
        with self._lock:
            if child not in self.stopped:
                self.stopped.append(child)
        return child.popen.returncode

    def _drain_group(self, child: Child, timeout: float = 3.0) -> None:
        """Helpers that outlive the leader (orphans in its group) get SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + timeout
        sent_term = False
        while group_pids(child.pgid):
            if time.monotonic() > deadline:
                child.signal(signal.SIGKILL, group=True)
                time.sleep(0.05)
                break
            if not sent_term and time.monotonic() > deadline - timeout / 2:
                child.signal(signal.SIGTERM, group=True)
                sent_term = True
            time.sleep(0.05)

    def stop_all(self, **kw) -> None:
        """Stop every child, politely and in parallel (each Triton takes its --exit-timeout-secs to drain)."""
        with self._lock:
            children = list(self.children.values())
        if not children:
            return
        threads = [threading.Thread(target=self.stop, args=(c,), kwargs=kw, daemon=True) for c in children]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ------------------------------------------------------------ audits
    def all_pids(self) -> dict[int, int]:
        """Every pid this supervisor ever saw (leaders and their group members), with its group id."""
        pids: dict[int, int] = {}
        for c in [*self.children.values(), *self.stopped]:
            if c.alive():
                c.group()
            pids.update(dict.fromkeys(c.seen_pids, c.pgid))
        return pids

    def leftovers(self) -> list[int]:
        """Pids we started that still run. A pid counts only while it is still in the group we gave it,
        so a pid number the kernel has since reused for an unrelated process is not reported."""
        return sorted(p for p, g in self.all_pids().items() if pid_alive(p) and pgrp(p) == g)


# ---------------------------------------------------------------- helper children that say when they are ready
def start_announcing(
    sup: Supervisor, name: str, argv: Sequence[str], started: Path, what: str, ready_timeout: float = 30.0
) -> tuple[Child, str]:
    """Start a helper (`argv`) that writes `started` once it serves (see `announce`); return it and what it wrote.
    A helper that exits first, or is not ready in time, is stopped and reported with its log tail."""
    started.unlink(missing_ok=True)
    child = sup.start(name, argv)
    deadline = time.monotonic() + ready_timeout
    while not started.exists():
        if not child.alive():
            raise RuntimeError(f"{what} exited with {child.popen.returncode}: {child.log_tail()}")
        if time.monotonic() > deadline:
            sup.stop(child)
            raise RuntimeError(f"{what} did not start in {ready_timeout:g} s: {child.log_tail()}")
        time.sleep(0.05)
    return child, started.read_text()


def announce(started: Path, text: str) -> None:
    """The helper's side: write `started` whole (rename), so the parent never reads half of it."""
    tmp = started.with_suffix(".partial")
    tmp.write_text(text)
    tmp.rename(started)
