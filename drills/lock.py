"""One drill per environment: a lock file with the holder's pid, host, process start time and drill id.

Taken with O_CREAT|O_EXCL (atomic on a local file system). A lock whose process is gone (same host, pid dead or
reused by another process, told apart by the process start time from /proc) is stale. A stale lock of a drill
that did not finish is *not* cleared silently: the environment may be mid-shift, so the next drill is refused
until that drill is rolled back or resumed (which take the lock over). A stale lock of a finished drill is
removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from drills.errors import GuardrailError
from drills.journal import atomic_write, drill_dir, host, read_entries, summarise


def lock_path(state_dir: Path, env: str) -> Path:
    return Path(state_dir) / "locks" / f"{env}.lock"


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


def _alive(info: dict) -> bool:
    if info.get("host") != host():
        return True  # cannot tell from here: treat as held
    pid = int(info.get("pid", 0))
    if not pid_alive(pid):
        return False
    started = info.get("proc_start")
    return started is None or _start_time(pid) in (None, started)


def lock_status(state_dir: Path, env: str) -> dict | None:
    p = lock_path(state_dir, env)
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return info | {"alive": _alive(info)}


class Lock:
    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info

    @classmethod
    def acquire(cls, state_dir: Path, env: str, drill_id: str, *, takeover_of: str | None = None) -> Lock:
        """Take the environment's lock for `drill_id`. `takeover_of`: the drill whose stale lock this process may
        take over (rollback/resume of a crashed drill)."""
        p = lock_path(state_dir, env)
        p.parent.mkdir(parents=True, exist_ok=True)
        info = {"drill_id": drill_id, "pid": os.getpid(), "host": host(), "proc_start": _start_time(os.getpid())}
        for _ in range(3):
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = lock_status(state_dir, env)
                if held is None:
                    continue  # vanished or half-written between our calls: try again
                if held["alive"]:
                    if held.get("drill_id") == drill_id and held.get("pid") == os.getpid():
                        return cls(p, info)
                    raise GuardrailError(
                        "lock",
                        f"drill {held['drill_id']} holds the {env} lock (pid {held['pid']} on {held['host']}); "
                        "one drill per environment. Wait for it, or stop it with SIGINT/SIGTERM (it rolls back).",
                    ) from None
                if held.get("drill_id") == takeover_of:
                    atomic_write(p, json.dumps(info))
                    return cls(p, info)
                other = held.get("drill_id", "?")
                jp = drill_dir(state_dir, other) / "journal.jsonl"
                if jp.exists() and not summarise(read_entries(jp)).get("terminal"):
                    raise GuardrailError(
                        "unfinished-drill",
                        f"drill {other} on {env} stopped without finishing (pid {held.get('pid')} is gone) "
                        f"and may have left {env} mid-drill: "
                        f"run `drills rollback {other}` (or `drills resume {other}`) first",
                    ) from None
                p.unlink(missing_ok=True)  # stale lock of a finished drill
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            return cls(p, info)
        raise GuardrailError("lock", f"could not take the {env} lock at {p}")

    def release(self) -> None:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if held.get("drill_id") == self.info["drill_id"] and held.get("pid") == self.info["pid"]:
            self.path.unlink(missing_ok=True)
