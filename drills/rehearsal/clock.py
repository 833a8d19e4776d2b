"""Drill time for a time-scaled rehearsal: the engine runs in the configuration's seconds, the world in scaled ones.

A rehearsal at `scale` s (0 < s <= 1) runs every modelled timing at s times its configured value: the Route 53
health-check interval (10 s -> 1 s at s = 0.1), the record TTL (60 s -> 6 s), propagation, replication lag.
The drills engine, unchanged, reads those values from the plan in configured seconds (a TTL of 60, a hold of
300 s, an RTO objective of 120 s). `ScaledClock` reconciles the two: the engine's clock runs 1/s times faster
than the wall clock, so the engine's waits, its journal timestamps and every figure in its report are in
*drill seconds* (configuration-equivalent seconds), directly comparable with the objectives, while the world
runs in wall seconds. `scale = 1` is real time (drill seconds are wall seconds).

What does not scale, stated in the report: request latencies (a ranking request takes the milliseconds it
takes, measured with perf_counter), process start-up (a Triton restart of ~2 wall seconds reads as ~20 drill
seconds at s = 0.1) and scheduling jitter on a busy machine (50 ms of wall jitter reads as 0.5 drill seconds).
"""

from __future__ import annotations

import time


class ScaledClock:
    """`now()`: drill seconds since the epoch, equal to the wall clock at construction, then 1/scale times faster.
    `sleep(x)`: sleep x drill seconds (x * scale wall seconds)."""

    def __init__(self, scale: float, origin: float | None = None):
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        self.origin = time.time() if origin is None else float(origin)

    def now(self) -> float:
        return self.to_drill(time.time())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds * self.scale)

    # ------------------------------------------------------------ conversions (records are in wall time)
    def to_drill(self, wall: float) -> float:
        return self.origin + (wall - self.origin) / self.scale

    def to_wall(self, drill: float) -> float:
        return self.origin + (drill - self.origin) * self.scale
