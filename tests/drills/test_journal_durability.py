"""The journal on disk: short writes are continued or undone (never a partial record), a torn last record is
reported with its line number and cut off before anything is appended, corruption in the middle is an error, and
every directory entry the journal and the lock create, rename or remove is fsynced through its directory."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from drills.clock import FakeClock
from drills.journal import Journal, JournalError, drill_dir, list_drills, load, read_journal
from drills.lock import Lock, flock_path, lock_path

PLAN = {"env": "prod", "scenario": "evacuate-region", "region": "us-east-1", "steps": []}


def _start(j: Journal) -> None:
    j.write("start", drill_id="d1", plan=PLAN)
    j.write("step_begin", index=0, name="shift-1", action="apply_weights")


class ShortWriter:
    """os.write that writes at most `chunk` bytes per call; after `budget` bytes in all it writes nothing (or
    raises `error`): a full disk, a signal, a quota."""

    def __init__(self, chunk: int, budget: int | None = None, error: OSError | None = None):
        self.chunk, self.budget, self.error = chunk, budget, error
        self.calls = 0

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        n = min(self.chunk, len(data))
        if self.budget is not None:
            if self.budget <= 0:
                if self.error is not None:
                    raise self.error
                return 0
            n = min(n, self.budget)
            self.budget -= n
        return os.write(fd, data[:n])


def test_short_writes_are_continued_until_the_record_is_whole(tmp_path):
    writer = ShortWriter(chunk=7)
    j = Journal.create(tmp_path, "d1", FakeClock(), writer=writer)
    _start(j)
    big = j.write("config_set", stack="prod-global", values={"routing.regions.us-east-1.weight": 0}, before={"x": 1})
    j.close()
    assert writer.calls > 30  # every record took many writes
    read = read_journal(j.path)
    assert read.torn is None
    assert [e["type"] for e in read.entries] == ["start", "step_begin", "config_set"]
    assert read.entries[-1] == json.loads(json.dumps(big))


@pytest.mark.parametrize("error", [None, OSError(errno.ENOSPC, "No space left on device")])
def test_a_write_that_stops_part_way_is_detected_and_leaves_no_partial_record(tmp_path, error):
    clock = FakeClock()
    j = Journal.create(tmp_path, "d1", clock)
    _start(j)
    whole = j.path.read_bytes()
    j._writer = ShortWriter(chunk=10, budget=25, error=error)  # 25 bytes of the next record, then nothing
    if error is None:
        with pytest.raises(JournalError, match=r"record 2 not written: 25 of \d+ bytes"):
            j.write("config_set", stack="prod-global", values={"routing.regions.us-east-1.weight": 0}, before={})
    else:
        with pytest.raises(OSError, match="No space left"):
            j.write("config_set", stack="prod-global", values={"routing.regions.us-east-1.weight": 0}, before={})
    assert j.path.read_bytes() == whole  # the 25 bytes written were taken back
    j._writer = os.write
    j.write("abort", reason="journal write failed")  # the next record starts on a line of its own
    j.close()
    read = read_journal(j.path)
    assert read.torn is None and [e["type"] for e in read.entries] == ["start", "step_begin", "abort"]
    assert [e["seq"] for e in read.entries] == [0, 1, 2]


def test_a_torn_last_record_is_reported_with_its_line_number_and_cut_off_on_reopening(tmp_path):
    clock = FakeClock()
    j = Journal.create(tmp_path, "d1", clock)
    _start(j)
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"seq": 2, "type": "config_set", "stack": "prod-gl')  # the process died mid-write
    read = read_journal(j.path)
    assert [e["type"] for e in read.entries] == ["start", "step_begin"]
    assert read.torn is not None and read.torn.line == 3 and read.torn.text.startswith('{"seq": 2')
    assert "line 3: torn record" in read.torn.describe(j.path)
    (row,) = list_drills(tmp_path)
    assert "line 3" in row["torn"] and row["status"] == "incomplete"
    assert [e["type"] for e in load(tmp_path, "d1")] == ["start", "step_begin"]

    again = Journal.open(tmp_path, "d1", clock)  # what rollback/resume do: the torn bytes go, and say so
    assert again.torn is not None and again.torn.line == 3
    again.write("takeover", purpose="rollback")
    again.close()
    read = read_journal(j.path)
    assert read.torn is None
    assert [e["type"] for e in read.entries] == ["start", "step_begin", "journal_torn", "takeover"]
    assert read.entries[2]["line"] == 3 and "prod-gl" in read.entries[2]["text"]


def test_an_unterminated_last_line_is_torn_even_if_it_parses(tmp_path):
    """A record counts once its newline is written: the write of the whole line had not returned."""
    j = Journal.create(tmp_path, "d1", FakeClock())
    _start(j)
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"seq": 2, "type": "finished", "status": "completed"}')
    read = read_journal(j.path)
    assert read.torn is not None and read.torn.line == 3
    assert [e["type"] for e in read.entries] == ["start", "step_begin"]


def test_an_unreadable_record_in_the_middle_is_an_error_naming_its_line(tmp_path):
    j = Journal.create(tmp_path, "d1", FakeClock())
    _start(j)
    j.close()
    lines = j.path.read_bytes().split(b"\n")
    lines[0] = lines[0][:20]  # damaged, and records follow it
    j.path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match=r"line 1 is not a journal record .* 1 line\(s\) follow"):
        read_journal(j.path)
    (row,) = list_drills(tmp_path)
    assert row["status"].startswith("unreadable") and "line 1" in row["status"]


class FsyncLog:
    """os.fsync, recording the directories it is called on (by path)."""

    def __init__(self, real):
        self.real, self.dirs = real, []

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.dirs.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        self.real(fd)


def test_new_and_renamed_entries_are_fsynced_through_their_directory(tmp_path, monkeypatch):
    fsyncs = FsyncLog(os.fsync)
    monkeypatch.setattr(os, "fsync", fsyncs)
    state = tmp_path / "state"
    j = Journal.create(state, "d1", FakeClock())
    d = drill_dir(state, "d1")
    # state/ and state/drills/ created, d1/ created in drills/, journal.jsonl created in d1/: each parent fsynced
    assert fsyncs.dirs == [tmp_path, state, state / "drills", d]
    j.write("start", drill_id="d1", plan=PLAN)  # an append: the file's own fsync, not the directory's
    assert fsyncs.dirs == [tmp_path, state, state / "drills", d]
    j.close()

    fsyncs.dirs.clear()
    lock = Lock.acquire(state, "prod", "d1")
    locks = lock_path(state, "prod").parent
    # locks/ created in state/, the flock file created in locks/, the record renamed into locks/
    assert fsyncs.dirs == [state, locks, locks]
    fsyncs.dirs.clear()
    lock.release()
    assert fsyncs.dirs == [locks] and not lock_path(state, "prod").exists()  # the record's removal
    assert flock_path(state, "prod").exists()
