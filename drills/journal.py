"""The drill journal: one JSON line per event, flushed and fsynced before the drill moves on.

Layout: <state dir>/drills/<drill id>/journal.jsonl (reports are written beside it). The first entry ("start")
holds the whole plan and the backend's name and options; the second ("pre_state") holds what the drill will
restore, read before any change. Every change is journaled *before* it is made (write-ahead), so after a crash
at any instant `drills rollback` knows everything that may have changed.

Durability: a record is one `\n`-terminated line, written whole (a short `os.write` is continued; one that makes
no progress or fails removes the partial record and raises) and fsynced before `write` returns; a new directory
or file is made durable by fsyncing its parent directory. A record only counts once its terminating newline is
on disk: an unterminated last line is a torn record (the process stopped mid-write, before the change it
announces was made). Reading reports it with its line number (`read_journal`); reopening the journal to append
(rollback, resume, resolve) cuts it off and journals `journal_torn`, so the next record does not run into it.
An unreadable line followed by more records is corruption, not a tear: reading raises `JournalError`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.clock import Clock
from drills.errors import DrillError

# "rollback-failed" is not terminal: the environment needs attention until a rollback retry or `drills resolve`.
TERMINAL = {"completed", "aborted", "rolled-back", "failed", "refused", "resolved"}

Writer = Callable[[int, bytes], int]  # os.write's signature: the journal's writes go through one (tests inject)


class JournalError(DrillError):
    """The journal cannot be written whole, or read back as written."""


def drills_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "drills"


def drill_dir(state_dir: Path, drill_id: str) -> Path:
    return drills_dir(state_dir) / drill_id


def new_drill_id(env: str, scenario: str, clock: Clock) -> str:
    stamp = datetime.fromtimestamp(clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{env}-{scenario}-{stamp}-{secrets.token_hex(2)}"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created, renamed or removed in it) durable: fsync of the file itself
    does not cover its name."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def make_dirs(path: Path) -> None:
    """`mkdir -p`, each directory it creates fsynced into its parent."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue  # another process made it (and fsyncs it)
        fsync_dir(d.parent)


def atomic_write(path: Path, text: str) -> None:
    make_dirs(path.parent)
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
    fsync_dir(path.parent)


@dataclass(frozen=True)
class TornRecord:
    """An unterminated last line: a record whose write did not complete."""

    line: int  # 1-based
    offset: int  # where it starts in the file: the file is whole up to here
    text: str  # what was written of it (at most 200 characters)

    def describe(self, path: Path) -> str:
        return (
            f"{path}: line {self.line}: torn record (the process stopped while writing it, before the change it "
            f"announces was made), ignored: {self.text!r}"
        )


@dataclass
class JournalRead:
    entries: list[dict]
    torn: TornRecord | None = None


def read_journal(path: Path) -> JournalRead:
    """Every whole record; a torn last record is returned apart, with its line number. Raises JournalError on an
    unreadable record that is not the last (corruption: the records after it cannot be trusted to be all)."""
    data = Path(path).read_bytes()
    *lines, tail = data.split(b"\n")  # `tail`: bytes after the last newline (b"" when the file ends whole)
    entries: list[dict] = []
    offset = 0
    for n, raw in enumerate(lines, 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise JournalError(
                f"{path}: line {n} is not a journal record ({raw[:120]!r}) and {len(lines) - n} line(s) follow it: "
                "the journal is damaged; nothing was read past it (repair it by hand before a rollback or resume)"
            )
        entries.append(entry)
        offset += len(raw) + 1
    torn = None
    if tail:
        torn = TornRecord(len(lines) + 1, offset, tail[:200].decode("utf-8", "replace"))
    return JournalRead(entries, torn)


def read_entries(path: Path) -> list[dict]:
    """The whole records (a torn last one left out: see `read_journal` to be told about it)."""
    return read_journal(path).entries


class Journal:
    """Appends records to one journal file. `writer` stands in for `os.write` (tests give a short writer).
    Thread-safe: an `up` the drill stopped waiting for journals its outcome from its own thread."""

    def __init__(self, path: Path, clock: Clock, writer: Writer = os.write):
        self.path, self.clock, self._writer = Path(path), clock, writer
        self._lock = threading.Lock()
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if created:
                fsync_dir(self.path.parent)
            read = read_journal(self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self.torn = read.torn
        self._seq = len(read.entries)
        if read.torn is not None:
            # Appending after it would glue the next record onto the torn one; the torn record's change was never
            # made (its write had not returned), so dropping it loses nothing. What it held is journaled.
            os.ftruncate(self._fd, read.torn.offset)
            os.fsync(self._fd)
            self.write("journal_torn", line=read.torn.line, text=read.torn.text, note=read.torn.describe(self.path))

    @classmethod
    def create(cls, state_dir: Path, drill_id: str, clock: Clock, writer: Writer = os.write) -> Journal:
        d = drill_dir(state_dir, drill_id)
        make_dirs(d.parent)
        d.mkdir(exist_ok=False)
        fsync_dir(d.parent)
        return cls(d / "journal.jsonl", clock, writer)

    @classmethod
    def open(cls, state_dir: Path, drill_id: str, clock: Clock, writer: Writer = os.write) -> Journal:
        p = drill_dir(state_dir, drill_id) / "journal.jsonl"
        if not p.exists():
            raise DrillError(f"no drill {drill_id!r} in {drills_dir(state_dir)} (see `drills status`)")
        return cls(p, clock, writer)

    def write(self, type: str, **data: Any) -> dict:
        with self._lock:
            entry = {
                "seq": self._seq,
                "type": type,
                "t": round(self.clock.now(), 3),
                "wall": datetime.now(UTC).isoformat(timespec="seconds"),
                **data,
            }
            self._append((json.dumps(entry, default=str, sort_keys=False) + "\n").encode(), entry["seq"])
            self._seq += 1
            return entry

    def _append(self, record: bytes, seq: int) -> None:
        """Write `record` whole and fsync it, or leave the file as it was and raise."""
        start = os.fstat(self._fd).st_size  # O_APPEND and one writer (this lock, the env's lock): the record's offset
        done = 0
        try:
            while done < len(record):
                n = self._writer(self._fd, record[done:])
                if n <= 0:
                    raise JournalError(
                        f"{self.path}: record {seq} not written: {done} of {len(record)} bytes, then a write of "
                        f"{len(record) - done} wrote nothing (disk full?); the partial record was removed"
                    )
                done += n
            os.fsync(self._fd)
        except BaseException:
            # A partial record would be a torn line in the middle of the journal once anything follows it.
            os.ftruncate(self._fd, start)
            os.fsync(self._fd)
            raise

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


def rollback_failures(entries: list[dict]) -> list[str]:
    """What the last rollback left undone, as sentences (undos that failed, then differences from the pre-drill
    state), from the journal alone."""
    for e in reversed(entries):
        if e["type"] == "rollback_done":
            return [f"undo failed: {f}" for f in e.get("failed", [])] + list(e.get("mismatches", []))
        if e["type"] == "rollback_failed":
            return [f"rollback stopped: {e.get('error')}"]
    return []


def list_drills(state_dir: Path) -> list[dict]:
    d = drills_dir(state_dir)
    paths = sorted(d.glob("*/journal.jsonl")) if d.exists() else []
    out = []
    for p in paths:
        try:
            read = read_journal(p)
        except JournalError as e:
            out.append({"drill_id": p.parent.name, "env": "?", "scenario": "?", "status": f"unreadable: {e}"})
            continue
        row = summarise(read.entries) | {"drill_id": p.parent.name}
        if read.torn is not None:
            row["torn"] = read.torn.describe(p)
        out.append(row)
    return sorted(out, key=lambda x: x.get("started", 0), reverse=True)


def host() -> str:
    return socket.gethostname()
