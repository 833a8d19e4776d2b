"""The one runner `rehearse` and `rehearse-release` share: a started world, client traffic, drills through the
engine, and a teardown that always runs and says what it left behind.

    with Session(start_world_fn, log) as session:      # the world up (its start-up failures raise here)
        traffic = session.traffic(rate=..., ...)       # client traffic in a child process, stopped at teardown
        outcome = session.drill(plan, state_dir, backend_for, clock)   # one drill, the world as a backend object
    session.leftovers                                  # processes still alive after the teardown (should be [])

What differs between the two commands (which serving the world has, how many drills share one traffic run, what
the reports hold) stays in rehearse.py and release_run.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Log = Callable[[str], None]


class Session:
    def __init__(self, start: Callable[[], Any], log: Log):
        self._start, self.log = start, log
        self.live: Any = None  # rehearse.LiveWorld
        self.leftovers: list[int] = []
        self._traffic: list[Any] = []

    def start(self) -> Session:
        self.live = self._start()
        return self

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def traffic(
        self,
        *,
        rate: float,
        duration: float,
        clients: int,
        timeout: float,
        resilient: Any = None,
        shoppers: dict[str, Any] | None = None,
    ) -> Any:
        """Client traffic through the DNS model from its own process, started now; stopped at teardown at the latest.
        `clients` naive clients, and the resilient ones `resilient` (loadgen.Resilient) describes; `shoppers`: the
        A/B rehearsal's (loadgen_proc.LoadProcess)."""
        lg = self.live.world.traffic.process(
            rate=rate, duration=duration, clients=clients, timeout=timeout, resilient=resilient, shoppers=shoppers
        )
        self._traffic.append(lg)
        lg.start()
        return lg

    def drill(self, plan: Any, state_dir: Any, backend_for: Callable[[Any], Any], clock: Any) -> Any:
        """One drill through the engine on `clock` (the rehearsal's ScaledClock: drill seconds), on the backend
        `backend_for(clock)` builds over this world; the backend is closed after it (the world is not)."""
        from drills.engine import start_drill

        backend = backend_for(clock)
        try:
            return start_drill(plan, state_dir, backend=backend, clock=clock, log=lambda s: self.log(f"  engine: {s}"))
        finally:
            backend.close()

    def close(self) -> None:
        """Stop the traffic and every process of the world (idempotent); `leftovers` lists what survived."""
        for lg in self._traffic:
            lg.stop()
        self._traffic.clear()
        if self.live is None:
            return
        world, self.live = self.live.world, None
        world.close()
        self.leftovers = world.sup.leftovers()
        self.log(
            "teardown: every process stopped"
            if not self.leftovers
            else f"[red]teardown: processes left behind: {self.leftovers}[/red]"
        )
