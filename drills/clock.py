"""Time, injectable: the engine, monitor and modelled backends read the clock only through this.

Tests pass a FakeClock so a 10-minute drill (holds, TTL waits, health-check intervals) runs in a second,
deterministically. Latencies of real HTTP probes are still measured with `time.perf_counter` (they are real
round trips), only waiting and timestamps go through the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (timestamps in the journal and report)."""

    def sleep(self, seconds: float) -> None: ...

    def to_wall(self, t: float) -> float:
        """A time of this clock as the wall clock's: what is persisted for other drills (pointers) is wall time."""

    def to_drill(self, wall: float) -> float:
        """A wall time on this clock (the inverse of `to_wall`)."""


class _Unscaled:
    """Clocks whose seconds are the wall clock's (or stand in for it, as a fake clock's do)."""

    def to_wall(self, t: float) -> float:
        return t

    def to_drill(self, wall: float) -> float:
        return wall


class SystemClock(_Unscaled):
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock(_Unscaled):
    """Advances only when slept on. `on_advance` callbacks fire at scheduled times, so a test can make a
    region fail at t+95 s of a drill without threads."""

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = float(start)
        self._lock = threading.Lock()
        self._timers: list[tuple[float, Callable[[], None]]] = []

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Move time forward, firing timers in time order with `now()` equal to each timer's time (a timer
        may schedule the next one, as a periodic checker does)."""
        target = self._now + seconds
        while True:
            with self._lock:
                due = [t for t in self._timers if t[0] <= target]
                if not due:
                    break
                first = min(due, key=lambda t: t[0])
                self._timers.remove(first)
                self._now = max(self._now, first[0])
            first[1]()
        self._now = target

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run `fn` once the clock reaches `when` (absolute)."""
        with self._lock:
            self._timers.append((when, fn))
