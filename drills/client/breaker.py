"""Per-region outlier ejection, after Envoy's outlier detection (consecutive failures, growing ejection time,
max ejection percent).

A region that fails `consecutive_failures` attempts in a row (connect error, reset, timeout, 5xx, unusable
answer; not a 4xx, which is the request's fault) is ejected for `base_ejection_s * times_ejected`, capped at
`max_ejection_s`; the multiplier drops by one for every `base_ejection_s` the region spent un-ejected, as Envoy
decrements it while a host stays healthy. Never more than `max_ejection_percent` of the regions are ejected at
once, and never all of them: one region is always kept, so a client that loses every region still tries one.
An ejected region is eligible again as soon as its time is up (nothing has to probe it). Time comes from an
injected clock, so tests step it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drills.client.errors import ClientConfigError


@dataclass(frozen=True)
class EjectionPolicy:
    """Defaults: Envoy's consecutive_5xx (5), base_ejection_time (30 s) and max_ejection_time (300 s); 50 %
    rather than Envoy's 10 % because a fleet has few regions: of three, one may be ejected (N+1 capacity covers
    the loss of one region, not two)."""

    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_percent: float = 50.0
    max_ejection_s: float = 300.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ClientConfigError("ejection.consecutive_failures", self.consecutive_failures, "must be >= 1")
        if not self.base_ejection_s > 0:
            raise ClientConfigError("ejection.base_ejection_s", self.base_ejection_s, "must be > 0")
        if not 0 < self.max_ejection_percent <= 100:
            raise ClientConfigError("ejection.max_ejection_percent", self.max_ejection_percent, "must be in (0, 100]")
        if self.max_ejection_s < self.base_ejection_s:
            raise ClientConfigError("ejection.max_ejection_s", self.max_ejection_s, "must be >= base_ejection_s")

    def max_ejected(self, regions: int) -> int:
        """How many of `regions` may be ejected at once: the percentage, rounded down, and always one kept."""
        return min(regions - 1, math.floor(regions * self.max_ejection_percent / 100))


@dataclass
class _Region:
    consecutive: int = 0
    times_ejected: int = 0
    ejected_until: float | None = None  # also the moment the last ejection ended, for the multiplier's decay


class OutlierDetector:
    """Ejection state of every region of one client. Thread-safe (one lock); `clock` returns seconds."""

    def __init__(self, regions: Sequence[str], policy: EjectionPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.regions = tuple(regions)
        self._clock = clock
        self._state = {r: _Region() for r in self.regions}
        self._lock = threading.Lock()
        self.ejections = 0

    def _ejected(self, st: _Region, now: float) -> bool:
        return st.ejected_until is not None and now < st.ejected_until

    def ejected(self) -> list[str]:
        """The regions ejected now, in constructor order."""
        now = self._clock()
        with self._lock:
            return [r for r in self.regions if self._ejected(self._state[r], now)]

    def order(self, preference: Sequence[str]) -> list[str]:
        """`preference` with the regions ejected now moved to the end (kept as a last resort, same order)."""
        now = self._clock()
        with self._lock:
            ejected = {r for r in preference if self._ejected(self._state[r], now)}
        return [r for r in preference if r not in ejected] + [r for r in preference if r in ejected]

    def record_success(self, region: str) -> None:
        with self._lock:
            self._state[region].consecutive = 0

    def record_failure(self, region: str) -> bool:
        """Count a failure; True when it ejected the region."""
        now = self._clock()
        p = self.policy
        with self._lock:
            st = self._state[region]
            st.consecutive += 1
            if st.consecutive < p.consecutive_failures or self._ejected(st, now):
                return False
            if sum(self._ejected(s, now) for s in self._state.values()) >= p.max_ejected(len(self.regions)):
                return False
            if st.ejected_until is not None:  # healthy time since the last ejection ended earns the multiplier back
                st.times_ejected = max(0, st.times_ejected - int((now - st.ejected_until) // p.base_ejection_s))
            st.times_ejected += 1
            st.ejected_until = now + min(p.base_ejection_s * st.times_ejected, p.max_ejection_s)
            st.consecutive = 0
            self.ejections += 1
            return True
