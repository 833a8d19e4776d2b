"""One drill per environment: a kernel lock says who holds it; a record says which drill, and what state it left.

Two files per environment under `<state>/locks/`:
  `<env>.flock`  empty and permanent (never removed or replaced): its `flock(LOCK_EX)` *is* the lock. A holder
                 keeps the descriptor open for as long as it holds the environment; the kernel drops the lock when
                 the holder closes it or dies, however it dies, so "is the holder alive?" needs no pid or /proc guess.
  `<env>.lock`   the record (JSON: drill id, pid, host, process start time; a left lock adds its `state` and what
                 failed): written, replaced and removed only by the process that holds the flock (tmp + rename +
                 directory fsync, so a reader sees the old or the new record, never half of one).

Taking the lock, including taking over a stale one, is therefore one critical section: get the flock (without
waiting), read the record, decide, write ours. Two processes cannot both be in it, and the flock stays held until
`release()`/`leave()`, so two can never both hold the environment.

The record outlives its holder on purpose. A drill that stopped without finishing (crash, SIGKILL), or whose
rollback failed, leaves it, and the next drill or release is refused until that drill is rolled back, resumed
(both take the lock over) or, after a failed rollback, resolved by an operator (`drills resolve`). The record of
a drill that finished (or that never journaled anything) is simply replaced.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import time
from pathlib import Path

from drills.errors import GuardrailError
from drills.journal import (
    JournalError,
    atomic_write,
    drill_dir,
    fsync_dir,
    host,
    make_dirs,
    read_journal,
    rollback_failures,
    summarise,
)

# How long to retry when the flock is held but the record names no live holder: another process is taking or
# examining the lock at that instant (it decides in microseconds) and may be about to refuse and let go.
BUSY_WAIT_SECONDS = 2.0


def lock_path(state_dir: Path, env: str) -> Path:
    return Path(state_dir) / "locks" / f"{env}.lock"


def flock_path(state_dir: Path, env: str) -> Path:
    return Path(state_dir) / "locks" / f"{env}.flock"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the comm field
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie (a zombie holds no resources, only an exit status)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def _process_alive(info: dict) -> bool:
    """The recorded process still runs (same host; pid alive and not reused, told apart by its start time). Only
    a hint (who holds a busy flock); the flock decides."""
    if info.get("host") != host():
        return True
    pid = int(info.get("pid", 0))
    if not pid or not pid_alive(pid):
        return False
    started = info.get("proc_start")
    return started is None or _start_time(pid) in (None, started)


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _open_flock(state_dir: Path, env: str) -> int:
    p = flock_path(state_dir, env)
    make_dirs(p.parent)
    created = not p.exists()
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children (PEP 446)
    if created:
        fsync_dir(p.parent)
    return fd


def _flock_held(state_dir: Path, env: str) -> bool:
    """Whether some process holds the environment's flock now (a probe: taken and let go at once)."""
    p = flock_path(state_dir, env)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing lets go of a probe that succeeded
    return False


def lock_status(state_dir: Path, env: str) -> dict | None:
    """The record, with `alive`: its holder still holds the environment (a left lock: False)."""
    info = _read(lock_path(state_dir, env))
    if info is None:
        return None
    other_host = info.get("host") != host()  # a flock on a local file system says nothing about another host
    return info | {"alive": other_host or _flock_held(state_dir, env)}


def _cli(state_dir: Path, *args: str) -> str:
    return shlex.join(["python", "-m", "drills", *args, "--state-dir", str(Path(state_dir).resolve())])


def rollback_command(state_dir: Path, drill_id: str) -> str:
    return _cli(state_dir, "rollback", drill_id)


def resolve_command(state_dir: Path, env: str, drill_id: str) -> str:
    """The operator's command that records a failed rollback as put right by hand."""
    return _cli(
        state_dir, "resolve", drill_id, "--confirm", env, "--reason", "<what you restored, and how you checked>"
    )


def rollback_failed_message(state_dir: Path, env: str, drill_id: str, entries: list[dict]) -> str:
    left = rollback_failures(entries) or ["(the journal does not say: see its rollback_done entry)"]
    return (
        f"drill {drill_id} could not roll {env} back: {'; '.join(left)}. {env} is not known to be in its pre-drill "
        f"state, so no drill or release starts on it until this is resolved. Retry the rollback: "
        f"`{rollback_command(state_dir, drill_id)}`; or put it right by hand, then record who did what: "
        f"`{resolve_command(state_dir, env, drill_id)}`"
    )


def _left_behind(state_dir: Path, env: str, held: dict) -> GuardrailError | None:
    """Why the drill of a record whose holder is gone still keeps the environment, or None if it does not."""
    other = str(held.get("drill_id", "?"))
    jp = drill_dir(state_dir, other) / "journal.jsonl"
    if not jp.exists():
        return None  # it stopped before its journal began: it changed nothing
    try:
        entries = read_journal(jp).entries
    except JournalError as e:
        return GuardrailError(
            "unfinished-drill", f"drill {other} left the {env} lock and its journal cannot be read: {e}"
        )
    summary = summarise(entries)
    if summary.get("status") == "rollback-failed":
        return GuardrailError("rollback-failed", rollback_failed_message(state_dir, env, other, entries))
    if summary.get("terminal") or not entries:
        return None
    return GuardrailError(
        "unfinished-drill",
        f"drill {other} on {env} stopped without finishing (pid {held.get('pid')} is gone) "
        f"and may have left {env} mid-drill: run `drills rollback {other}` (or `drills resume {other}`) first "
        f"(`{rollback_command(state_dir, other)}`)",
    )


class Lock:
    def __init__(self, path: Path, info: dict, fd: int | None):
        self.path, self.info = path, info
        self._fd = fd  # the flock's descriptor; None: this object does not hold the flock (re-entry, or let go)

    @classmethod
    def acquire(
        cls,
        state_dir: Path,
        env: str,
        drill_id: str,
        *,
        takeover_of: str | None = None,
        busy_wait: float = BUSY_WAIT_SECONDS,
    ) -> Lock:
        """Take the environment's lock for `drill_id`. `takeover_of`: the drill whose left lock this process may
        take over (rollback, resume or resolve of it); a drill may also take back a lock it left itself."""
        state_dir = Path(state_dir)
        p = lock_path(state_dir, env)
        info = {"drill_id": drill_id, "pid": os.getpid(), "host": host(), "proc_start": _start_time(os.getpid())}
        fd = _open_flock(state_dir, env)
        try:
            deadline = time.monotonic() + busy_wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    held = _read(p)
                    # A left record (`state`) names a drill no process holds: whoever has the flock is a taker.
                    holder = held if held is not None and "state" not in held else None
                    if holder is not None and holder.get("pid") == os.getpid() and holder.get("drill_id") == drill_id:
                        os.close(fd)
                        return cls(p, holder, None)  # this process holds it for this drill already
                    if holder is not None and _process_alive(holder):
                        raise GuardrailError(
                            "lock",
                            f"drill {holder.get('drill_id')} holds the {env} lock (pid {holder.get('pid')} on "
                            f"{holder.get('host')}); one drill per environment. Wait for it, or stop it with "
                            "SIGINT/SIGTERM (it rolls back).",
                        ) from None
                    if time.monotonic() >= deadline:
                        raise GuardrailError(
                            "lock",
                            f"the {env} lock ({flock_path(state_dir, env)}) stayed held for {busy_wait:g} s by a "
                            f"process its record does not name (record: {held}); another drill is taking it, or a "
                            "child of a dead holder still has it open: see `drills status`, try again",
                        ) from None
                    time.sleep(0.01)
            # The flock is ours: nobody else reads-then-writes the record until we let go.
            held = _read(p)
            if held is not None and held.get("host") != host():
                # Its flock (if any) is on that host's kernel: nothing here says whether it still runs.
                raise GuardrailError(
                    "lock",
                    f"drill {held.get('drill_id')} holds the {env} lock from another host ({held.get('host')}, "
                    f"pid {held.get('pid')}): this host cannot tell whether it still runs; roll back, resume or "
                    "resolve it there",
                )
            if held is not None and held.get("drill_id") not in (drill_id, takeover_of):
                refusal = _left_behind(state_dir, env, held)
                if refusal is not None:
                    raise refusal
            if held is not None and held.get("drill_id") != drill_id:
                info["took_over_from"] = {k: held.get(k) for k in ("drill_id", "pid", "host", "state")}
            atomic_write(p, json.dumps(info))
            return cls(p, info, fd)
        except BaseException:
            os.close(fd)  # lets go of the flock if we had it
            raise

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """The drill is over: remove the record, then let go."""
        if self._fd is None:
            return
        try:
            held = _read(self.path)
            if held is not None and held.get("drill_id") == self.info["drill_id"] and held.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
                fsync_dir(self.path.parent)
        finally:
            self._let_go()

    def leave(self, **state: object) -> None:
        """The drill stopped without restoring the environment for sure: keep the record, marked with `state`,
        and let go, so that the next taker is refused until this drill is rolled back, resumed or resolved."""
        if self._fd is None:
            return
        try:
            self.info = self.info | state
            atomic_write(self.path, json.dumps(self.info, default=str))
        finally:
            self._let_go()

    def _let_go(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock
