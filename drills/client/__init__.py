"""The ranker client: what the load generator, the probes and the shop's services call to rank candidates.

It hides a region's failure from the caller within a deadline: one retry on another region, optional hedging, a
retry budget so an outage is not amplified, per-region ejection, and a degraded answer (the fallback ranking
published with the model version) when no region answers in time.

Construction (bad values raise `ClientConfigError`, a ValueError naming the key, the value and the rule):

    from drills.client import RankerClient, RankRequest, load_fallback
    client = RankerClient(
        {"us-east-1": "http://ranker-use1.shop.internal", "us-west-2": "http://ranker-usw2.shop.internal"},
        "ranker",
        deadline_ms=250, attempt_timeout_ms=100, hedging_delay_ms=None,
        fallback=load_fallback("fallback.json", sha256="<published digest>"),
    )

Endpoints: an ordered mapping region -> base URL (in AWS the plain per-region record `ranker-<short>.<zone>`, not
the weighted name, so the client picks the region); the order is the default preference.

A call (thread-safe; share one client per process):

    req = RankRequest.from_inputs(item_ids, [{"name": ..., "shape": [n, k], "datatype": "FP32", "data": [...]}])
    resp = client.rank(req, prefer="us-east-1")       # prefer: e.g. the region DNS answered; None = endpoint order

`RankRequest(item_ids, body)` takes a ready KServe V2 JSON body (row i scores `item_ids[i]`). The request is POST
/v2/models/<model>/infer over HTTP/1.1 keep-alive (one connection per thread per region). The primary is the
first non-ejected region of the preference; on connect error, reset, timeout, 5xx (`retryable_status`) or a 200
without the `output` tensor, the next region is tried while time, `max_attempts` and the retry budget allow.
A 4xx is the request's fault: no retry, no ejection.

A/B experiments (infra/experiments.py, declared in the global stack): give the client the experiment and each
call the user it ranks for, and it sets the user's arm:

    from infra.config import load_fleet
    (experiment,) = load_fleet("prod").glob.experiments
    client = RankerClient(endpoints, "ranker", experiment=experiment)
    resp = client.rank(req, prefer="us-east-1", user_id="u-1234")    # resp.arm: "holdout" or the arm's name

While the experiment runs (its window [start, end) holds at the call: `utc_now`, default the real UTC time, is
injectable) and a `user_id` is given, the request carries the header `X-Reco-Arm: <experiment id>.<cell>`
(infra.names.ARM_HEADER, `arm_header_value`), the cell being `drills.experiment.assignment.assign(experiment,
user_id)`: a pure function of the experiment and the user, so the same user gets the same cell on every call, in
every region and on every attempt (the header goes with the retry and the hedge too: a failover keeps the user's
arm). Each region's edge routes the header's value to that cell's version (the holdout to control's). Before start,
from end on, without an experiment or without `user_id`, no header is sent and `resp.arm` is None: the request is
ranked as any other. A degraded answer keeps `resp.arm` (the user's cell; the fallback ranked, see `degraded`).
`RankRequest(..., arm="<id>.<cell>")` sets the header by hand; with the client's experiment running, a value other
than the user's cell is a ClientConfigError. A new declaration (`python -m drills experiment start|stop` moves the
window) takes effect in a client built from it.

Response (`RankResponse`): `ranking` (item ids best first), `scores` (per row, None when degraded), `region` that
answered, `attempts`, `hedged`, `degraded` (the fallback ranked: no region answered in time), `failed` (degraded
and no fallback configured: `ranking` is None), `arm` (the user's experiment cell, or None), `latency_ms`, `errors`
(an `AttemptError` per failed attempt: region, kind connect|reset|timeout|status|bad_response, detail, latency,
HTTP status). `rank` never raises for a failed ranking; only a bad argument (`prefer` not a region,
`deadline_ms` <= 0, a `user_id` not a string, a request `arm` that contradicts the experiment) raises
ClientConfigError.

Defaults and why:
- deadline_ms=250: the shop's p99 objective; past it the fallback is worth more than a late answer.
- attempt_timeout_ms=100: two attempts fit in the deadline, so a dead region costs one timeout, not the page.
- max_attempts=2: the primary plus one retry or hedge on another region; more only spends the budget.
- hedging_delay_ms=None: hedging adds load on every slow request; turn it on at about the p95 latency.
- retry_budget=RetryBudgetPolicy(max_tokens=10, token_ratio=0.1): gRPC retry throttling; retries and hedges stop
  while the bucket is at or below half, so a total outage costs about 5 extra attempts, not one per request.
- ejection=EjectionPolicy(consecutive_failures=5, base_ejection_s=30, max_ejection_percent=50,
  max_ejection_s=300): Envoy outlier detection; ejected regions are tried last, never as primary, and at least
  one region is always kept. `clock` (default time.monotonic) drives ejection only; deadlines use real time.

Fallback file (see `drills.client.fallback`): JSON {"model": {"name", "version"}, "order": [item ids, best
first], "source": "..."}; `load_fallback(path, sha256)` refuses a file whose digest differs. Candidates rank by
their position in `order`, unknown items last in their given order.

Counters for reports: `client.stats()` -> requests, attempts, retries, hedges, throttled (extra attempts the
budget refused), degraded, failed, ejections, amplification (= attempts / requests).
"""

from drills.client.breaker import EjectionPolicy
from drills.client.budget import RetryBudgetPolicy
from drills.client.client import RankerClient
from drills.client.errors import ClientConfigError, FallbackError
from drills.client.fallback import Fallback, load_fallback
from drills.client.messages import AttemptError, RankRequest, RankResponse

__all__ = [
    "AttemptError",
    "ClientConfigError",
    "EjectionPolicy",
    "Fallback",
    "FallbackError",
    "RankRequest",
    "RankResponse",
    "RankerClient",
    "RetryBudgetPolicy",
    "load_fallback",
]
