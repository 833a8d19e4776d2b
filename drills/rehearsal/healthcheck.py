"""Model of Route 53 health checks (moto stores health checks but never probes anything).

What it models, per health check:
- an HTTP(S) GET of the check's ResourcePath on its endpoint every RequestInterval seconds (10 or 30 in
  AWS; the rehearsal may scale the interval down for CI, recorded in `CheckSpec.interval`);
- a probe passes on a 2xx/3xx answer within the timeout (AWS: TCP connect within 4 s and the status line
  within 2 s after it; scaled down with the interval), and fails on anything else, a refused connection or a
  timeout; an HTTP(S)_STR_MATCH check also needs its SearchString in the first 5,120 bytes of the body. Each
  probe opens a fresh connection (`Connection: close`), as Route 53 checkers do;
- status changes healthy -> unhealthy after FailureThreshold consecutive failed probes, and back after
  FailureThreshold consecutive passing probes;
- a new check starts healthy: Route 53 considers a new health check healthy until it has enough data;
- `Inverted` reports the opposite of the probe result; `Disabled` is always reported healthy (both as in
  Route 53), so a drill that inverts a check through the Route 53 API sees the effect;
- checks are not synchronised with each other: each starts at a random phase within its interval.
Simplification, stated: Route 53 runs ~15 checkers in several regions and calls an endpoint healthy when
more than 18% of them report it healthy; this model is one checker. With all checkers seeing the same
loopback endpoint the outcome is the same, only the detection time lacks the checkers' spread.

Thread-safe: `status()`, `statuses()`, `snapshot()` and `transitions()` may be called from any thread.
Every state change is appended to `transitions()` with its wall-clock time and, when `status_file` is set,
written atomically to that JSON file (a drills adapter can read it without importing this process).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests


@dataclass(frozen=True)
class CheckSpec:
    id: str
    url: str  # full URL probed, e.g. http://127.0.10.1:21002/v2/health/ready
    interval: float  # seconds between probes
    failure_threshold: int
    inverted: bool = False
    disabled: bool = False
    label: str = ""  # the region, for reports
    timeout: float | None = None  # probe timeout; default min(2 s, 0.8 x interval)
    search: str | None = None  # HTTP(S)_STR_MATCH: the string the body must hold

    @property
    def probe_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(2.0, 0.8 * self.interval)


@dataclass(frozen=True)
class Transition:
    t: float  # wall clock, time.time()
    check_id: str
    label: str
    healthy: bool
    reason: str  # what the last probe saw
    probes: int  # probes run by this check so far


@dataclass
class CheckState:
    """Route 53's counting rule, separate from any I/O so it can be tested alone."""

    threshold: int
    raw_healthy: bool = True  # before inversion
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    probes: int = 0
    last_reason: str = "new check: healthy until enough data"
    since: float = field(default_factory=time.time)

    def observe(self, ok: bool, reason: str = "") -> bool:
        """Record one probe; return True when the (raw) status flipped."""
        self.probes += 1
        self.last_reason = reason
        if ok:
            self.consecutive_ok += 1
            self.consecutive_fail = 0
            if not self.raw_healthy and self.consecutive_ok >= self.threshold:
                self.raw_healthy = True
                return True
        else:
            self.consecutive_fail += 1
            self.consecutive_ok = 0
            if self.raw_healthy and self.consecutive_fail >= self.threshold:
                self.raw_healthy = False
                return True
        return False


def reported(spec: CheckSpec, raw_healthy: bool) -> bool:
    """What Route 53 reports for a check: Disabled counts as healthy, Inverted flips the result."""
    if spec.disabled:
        return True
    return (not raw_healthy) if spec.inverted else raw_healthy


STR_MATCH_BYTES = 5120  # Route 53 searches this much of the body for an HTTP(S)_STR_MATCH check's string


def probe(url: str, timeout: float, search: str | None = None) -> tuple[bool, str]:
    try:
        r = requests.get(url, timeout=timeout, headers={"Connection": "close"}, allow_redirects=False)
    except requests.Timeout:
        return False, f"timeout after {timeout:.2f} s"
    except requests.ConnectionError as e:
        return False, f"connection failed: {type(e).__name__}"
    ok = 200 <= r.status_code < 400
    if ok and search is not None and search.encode() not in r.content[:STR_MATCH_BYTES]:
        return False, f"HTTP {r.status_code} without {search!r} in its body"
    return ok, f"HTTP {r.status_code}"


class HealthChecker:
    def __init__(
        self,
        specs: Iterable[CheckSpec] = (),
        *,
        status_file: Path | str | None = None,
        on_transition: Callable[[Transition], None] | None = None,
        seed: int | None = None,
        probe_fn: Callable[[str, float, str | None], tuple[bool, str]] = probe,
        source: Callable[[], Iterable[CheckSpec]] | None = None,
        source_interval: float = 1.0,
    ):
        """`source`, when given, is re-read every `source_interval` seconds (e.g. `specs_from_route53` on
        moto), so a check updated through the Route 53 API (inverted, disabled, threshold) takes effect."""
        self.source, self.source_interval = source, source_interval
        self.status_file = Path(status_file) if status_file else None
        self.on_transition = on_transition
        self._rng = random.Random(seed)
        self._probe = probe_fn
        self._lock = threading.RLock()
        self._specs: dict[str, CheckSpec] = {}
        self._state: dict[str, CheckState] = {}
        self._transitions: list[Transition] = []
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._running = False
        self.set_specs(specs)

    # ------------------------------------------------------------ configuration
    def set_specs(self, specs: Iterable[CheckSpec]) -> None:
        """Add, update or remove checks; an updated check keeps its counters (Route 53 keeps its history)."""
        by_id = {s.id: s for s in specs}
        changed = []
        with self._lock:
            for cid in set(self._specs) - set(by_id):
                del self._specs[cid]
                self._state.pop(cid, None)
            for cid, spec in by_id.items():
                old = self._specs.get(cid)
                self._specs[cid] = spec
                st = self._state.setdefault(cid, CheckState(spec.failure_threshold))
                st.threshold = spec.failure_threshold
                if old is not None and reported(old, st.raw_healthy) != reported(spec, st.raw_healthy):
                    changed.append(self._record(cid, "configuration changed (inverted/disabled)"))
            if self._running:
                for cid in by_id:
                    self._ensure_thread(cid)
            self._write()
        self._notify(changed)

    def specs(self) -> dict[str, CheckSpec]:
        with self._lock:
            return dict(self._specs)

    # ------------------------------------------------------------ running
    def start(self) -> HealthChecker:
        if self.source is not None:
            self.set_specs(self.source())
        with self._lock:
            self._running = True
            self._stop.clear()
            for cid in self._specs:
                self._ensure_thread(cid)
            if self.source is not None:
                t = threading.Thread(target=self._source_loop, name="hc-source", daemon=True)
                self._threads["<source>"] = t
                t.start()
        return self

    def _source_loop(self) -> None:
        while not self._stop.wait(self.source_interval):
            # the API briefly unavailable: keep the checks as they are
            with contextlib.suppress(Exception):
                assert self.source is not None  # this loop runs only when a source was given (start)
                self.set_specs(self.source())

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._running = False
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> HealthChecker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _ensure_thread(self, cid: str) -> None:
        t = self._threads.get(cid)
        if t is None or not t.is_alive():
            t = threading.Thread(target=self._loop, args=(cid,), name=f"hc-{cid[:8]}", daemon=True)
            self._threads[cid] = t
            t.start()

    def _loop(self, cid: str) -> None:
        with self._lock:
            spec = self._specs.get(cid)
        if spec is None:
            return
        # Probes run on a fixed schedule from a random phase: a slow probe does not delay the next one.
        next_t = time.monotonic() + self._rng.uniform(0, spec.interval)
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            with self._lock:
                spec = self._specs.get(cid)
            if spec is None:
                return
            ok, reason = self._probe(spec.url, spec.probe_timeout, spec.search)
            self.observe(cid, ok, reason)
            next_t += spec.interval
            if next_t < time.monotonic():  # fell behind (probe longer than the interval): do not burst
                next_t = time.monotonic()

    def observe(self, cid: str, ok: bool, reason: str = "") -> None:
        """Feed one probe result (the probe threads call this; tests may too)."""
        changed = []
        with self._lock:
            st = self._state.get(cid)
            if st is None:
                return
            if st.observe(ok, reason):
                st.since = time.time()
                changed.append(self._record(cid, reason))
        self._notify(changed)

    def _record(self, cid: str, reason: str) -> Transition:
        """Append a transition (caller holds the lock); the listener is told later, by `_notify`."""
        spec, st = self._specs[cid], self._state[cid]
        tr = Transition(time.time(), cid, spec.label, reported(spec, st.raw_healthy), reason, st.probes)
        self._transitions.append(tr)
        self._write()
        return tr

    def _notify(self, transitions: list[Transition]) -> None:
        # Outside our lock: the listener (the DNS model) takes its own lock and reads our status, so calling
        # it while holding ours would deadlock against a DNS query evaluating health.
        for tr in transitions:
            if self.on_transition:
                # a listener's bug must not stop the health checks
                with contextlib.suppress(Exception):
                    self.on_transition(tr)

    # ------------------------------------------------------------ reading
    def status(self, cid: str) -> bool:
        """Route 53's view of check `cid`: True when healthy. Unknown ids raise KeyError."""
        with self._lock:
            return reported(self._specs[cid], self._state[cid].raw_healthy)

    def statuses(self) -> dict[str, bool]:
        with self._lock:
            return {cid: reported(s, self._state[cid].raw_healthy) for cid, s in self._specs.items()}

    def by_label(self) -> dict[str, bool]:
        with self._lock:
            return {s.label or cid: reported(s, self._state[cid].raw_healthy) for cid, s in self._specs.items()}

    def transitions(self) -> list[Transition]:
        with self._lock:
            return list(self._transitions)

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "updated": time.time(),
                "checks": {
                    cid: {
                        "label": s.label,
                        "url": s.url,
                        "healthy": reported(s, self._state[cid].raw_healthy),
                        "interval": s.interval,
                        "failure_threshold": s.failure_threshold,
                        "inverted": s.inverted,
                        "disabled": s.disabled,
                        "probes": self._state[cid].probes,
                        "consecutive_failures": self._state[cid].consecutive_fail,
                        "since": self._state[cid].since,
                        "last_probe": self._state[cid].last_reason,
                    }
                    for cid, s in self._specs.items()
                },
                "transitions": [asdict(t) for t in self._transitions],
            }

    def _write(self) -> None:
        if not self.status_file:
            return
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, self.status_file)  # atomic: a reader sees the old or the new file, never half


def read_status_file(path: Path | str) -> dict[str, bool]:
    """check id -> healthy, from a status file written by a HealthChecker (for adapters in other processes)."""
    data = json.loads(Path(path).read_text())
    return {cid: c["healthy"] for cid, c in data["checks"].items()}


def specs_from_route53(
    r53,
    endpoint: Callable[[dict], tuple[str, int] | None],
    *,
    interval: float | None = None,
    timeout: float | None = None,
    labels: dict[str, str] | None = None,
) -> list[CheckSpec]:
    """CheckSpecs for the health checks stored in Route 53 (moto), probing the rehearsal's endpoints.

    `endpoint(health_check_config)` maps a check's target (FullyQualifiedDomainName / IPAddress, Port) to
    the loopback (address, port) that stands for it, or None to skip it. HTTPS checks are probed over plain
    HTTP: the rehearsal's load balancers terminate no TLS (Route 53 does not validate certificates either).
    `interval` replaces RequestInterval for scaled-down runs. Calculated and CloudWatch-metric checks probe
    nothing: drills/rehearsal/health_model.py evaluates them.
    """
    specs = []
    marker = None
    while True:
        kw: dict[str, str] = {"Marker": marker} if marker else {}
        page = r53.list_health_checks(**kw)
        for hc in page["HealthChecks"]:
            cfg = hc["HealthCheckConfig"]
            if cfg["Type"] in ("CALCULATED", "CLOUDWATCH_METRIC"):
                continue
            ep = endpoint(cfg)
            if ep is None:
                continue
            host, port = ep
            specs.append(
                CheckSpec(
                    id=hc["Id"],
                    url=f"http://{host}:{port}{cfg.get('ResourcePath') or '/'}",
                    interval=interval if interval is not None else float(cfg.get("RequestInterval", 30)),
                    failure_threshold=int(cfg.get("FailureThreshold", 3)),
                    inverted=bool(cfg.get("Inverted", False)),
                    disabled=bool(cfg.get("Disabled", False)),
                    label=(labels or {}).get(hc["Id"], ""),
                    timeout=timeout,
                    search=cfg.get("SearchString") if cfg["Type"].endswith("_STR_MATCH") else None,
                )
            )
        if not page.get("IsTruncated"):
            return specs
        marker = page.get("NextMarker")
