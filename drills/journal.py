"""The drill journal: one JSON line per event, flushed and fsynced before the drill moves on.

Layout: <state dir>/drills/<drill id>/journal.jsonl (reports are written beside it). The first entry ("start")
holds the whole plan and the backend's name and options; the second ("pre_state") holds what the drill will
restore, read before any change. Every change is journaled *before* it is made (write-ahead), so after a crash
at any instant `drills rollback` knows everything that may have changed. A torn last line (a crash mid-write)
is ignored on reading.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.clock import Clock
from drills.errors import DrillError

TERMINAL = {"completed", "aborted", "rolled-back", "failed"}  # "rollback-failed" is not: the env needs attention


def drills_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "drills"


def drill_dir(state_dir: Path, drill_id: str) -> Path:
    return drills_dir(state_dir) / drill_id


def new_drill_id(env: str, scenario: str, clock: Clock) -> str:
    stamp = datetime.fromtimestamp(clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{env}-{scenario}-{stamp}-{secrets.token_hex(2)}"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_entries(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a torn line can only be the last one: everything before it was fsynced
    return out


class Journal:
    def __init__(self, path: Path, clock: Clock):
        self.path, self.clock = Path(path), clock
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._seq = len(read_entries(self.path))

    @classmethod
    def create(cls, state_dir: Path, drill_id: str, clock: Clock) -> Journal:
        d = drill_dir(state_dir, drill_id)
        d.mkdir(parents=True, exist_ok=False)
        return cls(d / "journal.jsonl", clock)

    @classmethod
    def open(cls, state_dir: Path, drill_id: str, clock: Clock) -> Journal:
        p = drill_dir(state_dir, drill_id) / "journal.jsonl"
        if not p.exists():
            raise DrillError(f"no drill {drill_id!r} in {drills_dir(state_dir)} (see `drills status`)")
        return cls(p, clock)

    def write(self, type: str, **data: Any) -> dict:
        entry = {
            "seq": self._seq,
            "type": type,
            "t": round(self.clock.now(), 3),
            "wall": datetime.now(UTC).isoformat(timespec="seconds"),
            **data,
        }
        os.write(self._fd, (json.dumps(entry, default=str, sort_keys=False) + "\n").encode())
        os.fsync(self._fd)
        self._seq += 1
        return entry

    def entries(self) -> list[dict]:
        return read_entries(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def load(state_dir: Path, drill_id: str) -> list[dict]:
    p = drill_dir(state_dir, drill_id) / "journal.jsonl"
    if not p.exists():
        raise DrillError(f"no drill {drill_id!r} in {drills_dir(state_dir)} (see `drills status`)")
    return read_entries(p)


def summarise(entries: list[dict]) -> dict:
    """Status of a drill from its journal alone."""
    if not entries or entries[0]["type"] != "start":
        return {"status": "unreadable", "terminal": False}
    s = entries[0]
    plan = s["plan"]
    out = {
        "drill_id": s["drill_id"],
        "env": plan["env"],
        "scenario": plan["scenario"],
        "region": plan.get("region"),
        "started": s["t"],
        "started_iso": datetime.fromtimestamp(s["t"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "pid": s.get("pid"),
        "host": s.get("host"),
        "backend": s.get("backend", {}).get("name"),
    }
    last_step = None
    status = "incomplete"
    for e in entries:
        if e["type"] == "step_begin":
            last_step = e["name"]
        elif e["type"] == "rollback_begin":
            status = "rolling-back (incomplete)"
        elif e["type"] == "finished":
            status = e["status"]
    out.update(status=status, last_step=last_step, terminal=status in TERMINAL, ended=entries[-1]["t"])
    return out


def list_drills(state_dir: Path) -> list[dict]:
    d = drills_dir(state_dir)
    paths = sorted(d.glob("*/journal.jsonl")) if d.exists() else []
    out = [summarise(read_entries(p)) | {"drill_id": p.parent.name} for p in paths]
    return sorted(out, key=lambda x: x.get("started", 0), reverse=True)


def host() -> str:
    return socket.gethostname()
