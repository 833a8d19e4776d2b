"""RankerClient: deadline budget, one cross-region retry, optional hedging, retry budget, outlier ejection and the
fallback ranking, around `Transport` (the I/O). See the package docstring for the contract."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drills.client.breaker import EjectionPolicy, OutlierDetector
from drills.client.budget import RetryBudget, RetryBudgetPolicy
from drills.client.errors import ClientConfigError
from drills.client.fallback import Fallback
from drills.client.messages import AttemptError, RankRequest, RankResponse
from drills.client.transport import Outcome, Transport, parse_endpoint
from infra.names import arm_header_value, triton_models

if TYPE_CHECKING:
    from infra.experiments import Experiment

# An attempt with less time left than this can only time out: not worth a token or a connection.
MIN_ATTEMPT_MS = 5.0
_COUNTERS = ("requests", "attempts", "retries", "hedges", "throttled", "degraded", "failed")


@dataclass
class _Trace:
    """What one request did, for its response and the client's counters."""

    start: float
    deadline: float
    order: list[str]
    tried: list[str] = field(default_factory=list)
    errors: list[AttemptError] = field(default_factory=list)
    retries: int = 0
    hedges: int = 0
    throttled: int = 0

    def remaining_ms(self) -> float:
        return (self.deadline - time.monotonic()) * 1000

    def next_region(self) -> str | None:
        return next((r for r in self.order if r not in self.tried), None)


class RankerClient:
    """A ranker client over per-region endpoints. Thread-safe: share one instance between threads (ejection state,
    retry budget and counters are per instance, behind locks; connections are per thread).

    Beyond the package docstring's settings: `output` is the V2 output tensor holding one score per row;
    `retryable_status` the HTTP statuses retried on another region and counted against the region (add 404/400 to
    treat a region serving without the model as failed); `clock` the time source of ejection; `max_workers` the
    threads of the hedging path (two per concurrent request when hedging; attempts beyond it queue).

    `experiment` (infra.experiments.Experiment, as the global stack declares it): while it runs (`is_running` at
    `utc_now()`, default the real UTC time), a `rank` given a `user_id` sends the user's cell in the arm header."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        model: str,
        *,
        deadline_ms: float = 250.0,
        attempt_timeout_ms: float = 100.0,
        hedging_delay_ms: float | None = None,
        max_attempts: int = 2,
        retry_budget: RetryBudgetPolicy | None = None,
        ejection: EjectionPolicy | None = None,
        fallback: Fallback | None = None,
        output: str = "score",
        retryable_status: Collection[int] = range(500, 600),
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 64,
        experiment: Experiment | None = None,
        utc_now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not isinstance(endpoints, Mapping) or not endpoints:
            raise ClientConfigError("endpoints", endpoints, "needs at least one region -> base URL")
        parsed = {region: parse_endpoint(region, url) for region, url in endpoints.items()}
        if not model or not isinstance(model, str):
            raise ClientConfigError("model", model, "must be a non-empty model name")
        for key, value in (("deadline_ms", deadline_ms), ("attempt_timeout_ms", attempt_timeout_ms)):
            if not value > 0:
                raise ClientConfigError(key, value, "must be > 0")
        if deadline_ms < attempt_timeout_ms:
            raise ClientConfigError(
                "deadline_ms", deadline_ms, f"must be >= attempt_timeout_ms ({attempt_timeout_ms}): one whole attempt"
            )
        if hedging_delay_ms is not None:
            if not hedging_delay_ms > 0:
                raise ClientConfigError("hedging_delay_ms", hedging_delay_ms, "must be > 0 (None turns hedging off)")
            if hedging_delay_ms >= deadline_ms:
                raise ClientConfigError("hedging_delay_ms", hedging_delay_ms, f"must be < deadline_ms ({deadline_ms})")
        if max_attempts < 1:
            raise ClientConfigError("max_attempts", max_attempts, "must be >= 1 (1: no retry, no hedge)")
        if max_workers < 2:
            raise ClientConfigError("max_workers", max_workers, "must be >= 2 (a hedge runs beside its primary)")
        # The fallback names the model family (the manifest's model.name); `model` is a Triton model of it (the
        # family itself, or its TensorRT / ONNX Runtime / python-backend model: infra.names.triton_models).
        if fallback is not None and model not in (fallback.model_name, *triton_models(fallback.model_name).values()):
            raise ClientConfigError("fallback", fallback.model_name, f"is the fallback of another model than {model!r}")
        self._assign: Callable[[Experiment, str], str] | None = None
        if experiment is not None:
            # Imported only with an experiment: a client without one does not load the experiment schema.
            from drills.experiment.assignment import assign
            from infra.experiments import Experiment

            if not isinstance(experiment, Experiment):
                raise ClientConfigError(
                    "experiment", experiment, "must be an infra.experiments.Experiment (None: no experiment)"
                )

            self._assign = assign
        self.experiment = experiment
        self._utc_now = utc_now
        self.regions = tuple(endpoints)
        self.model = model
        self.deadline_ms, self.attempt_timeout_ms = float(deadline_ms), float(attempt_timeout_ms)
        self.hedging_delay_ms = hedging_delay_ms
        self.max_attempts = max_attempts
        self.fallback = fallback
        self.budget = RetryBudget(retry_budget or RetryBudgetPolicy())
        self.breaker = OutlierDetector(self.regions, ejection or EjectionPolicy(), clock)
        self._transport = Transport(parsed, model, output, retryable_status)
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # ------------------------------------------------------------ public
    def rank(
        self,
        request: RankRequest,
        prefer: str | None = None,
        deadline_ms: float | None = None,
        user_id: str | None = None,
    ) -> RankResponse:
        """Rank `request`: first choice `prefer` (else constructor order), ejected regions last; at most
        `max_attempts` attempts on distinct regions within the deadline (`deadline_ms` narrows the client's, e.g.
        a deadline propagated from upstream). Never raises for a failed ranking: returns the fallback (degraded).
        `user_id`: the user ranked for; with the client's experiment running now, every attempt carries the user's
        cell in the arm header and the response names the cell (`arm`)."""
        if prefer is not None and prefer not in self.regions:
            raise ClientConfigError("prefer", prefer, f"is not one of the regions {list(self.regions)}")
        if deadline_ms is not None and not deadline_ms > 0:
            raise ClientConfigError("deadline_ms", deadline_ms, "must be > 0")
        cell: str | None = None
        if user_id is not None and self.experiment is not None and self._assign is not None:
            if not isinstance(user_id, str):
                raise ClientConfigError("user_id", user_id, "must be a string (the id events are logged under)")
            if self.experiment.is_running(self._utc_now()):
                cell = self._assign(self.experiment, user_id)
                value = arm_header_value(self.experiment.id, cell)
                if request.arm is not None and request.arm != value:
                    raise ClientConfigError(
                        "request.arm",
                        request.arm,
                        f"differs from user {user_id!r}'s cell {value!r} in experiment {self.experiment.id}: leave "
                        "it unset, the client sets it",
                    )
                request = dataclasses.replace(request, arm=value)
        budget_ms = self.deadline_ms if deadline_ms is None else min(deadline_ms, self.deadline_ms)
        preference = [prefer, *(r for r in self.regions if r != prefer)] if prefer else list(self.regions)
        start = time.monotonic()
        trace = _Trace(start, start + budget_ms / 1000, self.breaker.order(preference))
        if budget_ms < MIN_ATTEMPT_MS:
            answer = None
        elif self.hedging_delay_ms is None or self.max_attempts == 1:
            answer = self._run_sequential(request, trace)
        else:
            answer = self._run_hedged(request, trace, self.hedging_delay_ms / 1000)
        return self._respond(request, trace, answer, cell)

    def stats(self) -> dict[str, float]:
        """Counters since construction; amplification = attempts / requests (1.0 = no extra attempt)."""
        with self._lock:
            out: dict[str, float] = dict(self._counts)
        out["ejections"] = self.breaker.ejections
        out["amplification"] = out["attempts"] / out["requests"] if out["requests"] else 0.0
        return out

    def close(self) -> None:
        """Close every connection and stop the hedging threads; in-flight ignored attempts end at their timeout."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._transport.close()

    def __enter__(self) -> RankerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ attempts
    def _attempt(self, region: str, request: RankRequest, timeout_s: float) -> Outcome:
        """One attempt; its outcome feeds the outlier detector even when the request no longer waits for it."""
        outcome = self._transport.attempt(region, request, timeout_s)
        if outcome.error is None:
            self.breaker.record_success(region)
        elif outcome.retryable:  # a 4xx says nothing about the region
            self.breaker.record_failure(region)
        return outcome

    def _may_send(self, trace: _Trace, extra: bool) -> str | None:
        """The region for the next attempt, or None when attempts, regions, time or the retry budget are spent."""
        region = trace.next_region()
        if region is None or len(trace.tried) >= self.max_attempts or trace.remaining_ms() < MIN_ATTEMPT_MS:
            return None
        if extra and not self.budget.allows_extra_attempt():
            trace.throttled += 1
            return None
        trace.tried.append(region)
        return region

    def _timeout_s(self, trace: _Trace) -> float:
        return min(self.attempt_timeout_ms, trace.remaining_ms()) / 1000

    def _consume(self, trace: _Trace, outcome: Outcome) -> bool:
        """Account for an outcome the request waited for (the budget counts those only, as gRPC does); True if good."""
        if outcome.error is None:
            self.budget.record_success()
            return True
        trace.errors.append(outcome.error)
        if outcome.retryable:
            self.budget.record_failure()
        return False

    def _run_sequential(self, request: RankRequest, trace: _Trace) -> Outcome | None:
        """Attempts one after another on the caller's thread (no hedging: no thread hand-off)."""
        extra = False
        while (region := self._may_send(trace, extra)) is not None:
            trace.retries += extra
            outcome = self._attempt(region, request, self._timeout_s(trace))
            if self._consume(trace, outcome):
                return outcome
            if not outcome.retryable:
                return None
            extra = True
        return None

    def _run_hedged(self, request: RankRequest, trace: _Trace, delay_s: float) -> Outcome | None:
        """gRPC hedging: a further attempt on another region when none answered within the delay, or at once when
        one failed; the first good answer wins and the others are ignored (they end at their own timeout)."""
        pool = self._executor()
        pending: set[Future[Outcome]] = set()

        def launch(region: str) -> None:
            pending.add(pool.submit(self._attempt, region, request, self._timeout_s(trace)))

        first = self._may_send(trace, extra=False)
        if first is not None:
            launch(first)
        hedge_at = time.monotonic() + delay_s
        stop = False
        while pending:
            now = time.monotonic()
            if now >= trace.deadline:
                return None
            wake = trace.deadline if stop else min(trace.deadline, hedge_at)
            done, pending = wait(pending, timeout=max(0.0, wake - now), return_when=FIRST_COMPLETED)
            failed = False
            for f in done:
                outcome = f.result()
                if self._consume(trace, outcome):
                    return outcome
                failed = True
                stop = stop or not outcome.retryable
            if stop:
                continue
            if failed or time.monotonic() >= hedge_at:
                region = self._may_send(trace, extra=True)
                if region is None:
                    stop = True
                    continue
                if failed:
                    trace.retries += 1
                else:
                    trace.hedges += 1
                launch(region)
                hedge_at = time.monotonic() + delay_s
        return None

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:  # created on first use: a client without hedging never starts a thread
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="ranker-client")
            return self._pool

    # ------------------------------------------------------------ answer
    def _respond(self, request: RankRequest, trace: _Trace, answer: Outcome | None, cell: str | None) -> RankResponse:
        latency_ms = (time.monotonic() - trace.start) * 1000
        degraded = answer is None
        with self._lock:
            c = self._counts
            c["requests"] += 1
            c["attempts"] += len(trace.tried)
            c["retries"] += trace.retries
            c["hedges"] += trace.hedges
            c["throttled"] += trace.throttled
            c["degraded"] += degraded and self.fallback is not None
            c["failed"] += degraded and self.fallback is None
        scores: list[float] | None = None
        region: str | None = None
        if answer is None or answer.scores is None:
            ranking = self.fallback.rank(request.item_ids) if self.fallback else None
        else:
            scores, region = answer.scores, answer.region
            by_score = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)  # stable: ties keep row order
            ranking = [request.item_ids[i] for i in by_score]
        return RankResponse(
            ranking=ranking,
            scores=scores,
            region=region,
            attempts=len(trace.tried),
            hedged=trace.hedges > 0,
            degraded=degraded,
            latency_ms=latency_ms,
            errors=trace.errors,
            arm=cell,
        )
