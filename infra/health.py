"""A region's health, as the stacks declare it and the rehearsal evaluates it: names, constants and the deep-health
program, in one Pulumi-free module (the drills and the rehearsal import it, never a component).

Four checks per region, combined by one CALCULATED Route 53 health check that the region's record carries:

    shallow  HTTPS  GET /v2/health/ready through the ALB           Triton up and its models loaded
    deep     HTTPS_STR_MATCH GET DEEP_HEALTH_PATH through the ALB  one inference answered within DEEP_HEALTH_BOUND_MS
    5xx      CLOUDWATCH_METRIC on the ALB's 5xx ratio alarm         what users get: errors
    latency  CLOUDWATCH_METRIC on the ALB's mean TargetResponseTime what users get: latency

Each child sees a failure the others cannot (a slow network path answers /v2/health/ready and the deep check in
time; an unloaded model answers /v2/health/ready), so the calculated check needs every child healthy
(CHILD_HEALTH_THRESHOLD = all of them): one failing child is enough to take the region out of DNS. Flapping is held
off inside each child (the endpoint checks' failure threshold, the alarms' datapoints-to-alarm over evaluation
periods), not by a vote between children. When every region is unhealthy Route 53 answers as if all were healthy
(fail-open), so a false positive in every region at once cannot take the service off the air.
"""

from __future__ import annotations

from typing import Literal

# ---------------------------------------------------------------- the children of a region's calculated check
SHALLOW, DEEP, ERRORS, LATENCY = "shallow", "deep", "5xx", "latency"
ALARM_KINDS: tuple[str, ...] = (ERRORS, LATENCY)
CHILD_KINDS: tuple[str, ...] = (SHALLOW, DEEP, *ALARM_KINDS)
CHILD_HEALTH_THRESHOLD = len(CHILD_KINDS)
CALCULATED = "calculated"  # the `check` tag of the region's calculated check (its children carry their CHILD_KINDS)
# Tags on every check (REGION_TAG, CHECK_TAG) and every ALB alarm (REGION_TAG, ALARM_TAG) of a region: the drills and
# the rehearsal find them in a stack's resources by these, not by resource names.
REGION_TAG, CHECK_TAG, ALARM_TAG = "region", "check", "alarm"

# ---------------------------------------------------------------- the deep check
DEEP_HEALTH_PATH = "/deep-health"
# Route 53 (HTTPS_STR_MATCH) passes a check whose status is 2xx/3xx and whose first 5,120 body bytes hold this string.
DEEP_HEALTH_OK = "DEEP-OK"
DEEP_HEALTH_FAIL = "DEEP-FAIL"  # the body of a failed check (status 503); it never contains DEEP_HEALTH_OK
# The deep-health sidecar's port in the Triton pod (beside Triton's 8000-8002).
DEEP_HEALTH_PORT = 8003
DEEP_HEALTH_PORT_NAME = "deep-health"
DEEP_HEALTH_CONTAINER = "deep-health"  # the sidecar's container name in the Triton pod (the rehearsal reads it)
# One row through the region's Triton Service must answer within the fleet's p99 objective (objectives.p99_ms, 250 ms
# in every shipped environment): slower than every user's whole budget, for one row, is a broken region.
DEEP_HEALTH_BOUND_MS = 250
# A check result is reused for this long: the path is public behind the ALB, so no request rate can drive more than
# one inference a second per pod (Route 53's checkers send a few requests a second per region in all).
DEEP_HEALTH_CACHE_S = 1.0
# Listener rule priority of the deep-health path: after the header pins and guard (10-20), before the edge routes
# (infra.names.edge_routes, 100 and up).
DEEP_HEALTH_PRIORITY = 90


def deep_health_target_group_name(stack: str) -> str:
    return f"reco-dr-{stack}-deep"[:32]  # ELB names are at most 32 characters


# The sidecar's program, run as
# `python3 -c DEEP_HEALTH_SCRIPT [HOST:]PORT TRITON_URL MODEL BOUND_MS PATH OK FAIL CACHE_S`
# (no HOST: every address of the pod; the rehearsal names one, as its pods share this machine's ports) with
# the Triton image's own python3 (stdlib only: the rehearsal runs the same text against its local Tritons).
# The sidecar reaches Triton through the region's stable Service, not over loopback: its request crosses the pods'
# network as users' requests do, so a fault there (latency, loss: AWS FIS's pod-network actions) is in what it measures,
# and the check proves the path, not only the model. A check asks for a model's metadata (once per model, then cached)
# and posts one row built from it: every input at shape [1, ...] filled with zeros (id 0 exists in every embedding
# table; a float feature of 0 is its standardised mean). MODELS is comma-separated: the Service may answer from a pod of
# another pool serving another of the region's models, so a model that pod does not know (400/404) passes to the next.
# It proves the model executes end to end within the bound and returns finite numbers, not its accuracy (that is the
# release gates' job). Non-finite output, any other non-200 answer, a timeout or a slow answer fails the check.
DEEP_HEALTH_SCRIPT = r"""
import json, math, sys, threading, time, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, triton, models, bound_ms, path, ok, fail, cache_s = sys.argv[1:9]
host, _, port = port.rpartition(":")
port, bound, cache_s, models = int(port), float(bound_ms) / 1000, float(cache_s), models.split(",")
lock, state = threading.Lock(), {"meta": {}, "at": -1e9, "result": None}
def call(url, body=None, timeout=1.0):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())
def row(meta):
    inputs = []
    for i in meta["inputs"]:
        shape = [1] + [1 if d < 0 else d for d in i["shape"][1:]]
        n = math.prod(shape)
        zero = "" if i["datatype"] == "BYTES" else (False if i["datatype"] == "BOOL" else 0)
        inputs.append({"name": i["name"], "shape": shape, "datatype": i["datatype"], "data": [zero] * n})
    return json.dumps({"inputs": inputs}).encode()
def infer(model):
    if model not in state["meta"]:
        state["meta"][model] = call(f"{triton}/v2/models/{model}")
    t0 = time.perf_counter()
    out = call(f"{triton}/v2/models/{model}/infer", row(state["meta"][model]), timeout=bound + 0.05)
    return out, (time.perf_counter() - t0) * 1000
def check():
    why = "no model"
    for model in models:
        try:
            out, ms = infer(model)
        except urllib.error.HTTPError as e:
            state["meta"].pop(model, None)
            why = f"{model}: HTTP {e.code}"
            if e.code in (400, 404):
                continue
            return 503, f"{fail} {why}"
        except Exception as e:
            state["meta"].pop(model, None)
            return 503, f"{fail} {model}: {type(e).__name__}: {e}"
        vals = [v for o in out.get("outputs", []) for v in o.get("data", [])]
        if not vals or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            return 503, f"{fail} {model}: no finite output"
        if ms > bound * 1000:
            return 503, f"{fail} {model}: {ms:.1f} ms > {bound * 1000:.0f} ms"
        return 200, f"{ok} {model} {ms:.1f} ms"
    return 503, f"{fail} {why}"
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != path:
            self.send_error(404)
            return
        with lock:
            now = time.monotonic()
            if now - state["at"] >= cache_s:
                state["result"], state["at"] = check(), now
            status, text = state["result"]
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer((host, port), Handler).serve_forever()
"""


def deep_health_argv(triton_url: str, models: str, port: int = DEEP_HEALTH_PORT) -> list[str]:
    """The sidecar's command line; `models`: the region's served models, comma-separated (the rehearsal passes its own
    port and Service URL)."""
    return [
        "python3",
        "-c",
        DEEP_HEALTH_SCRIPT,
        str(port),
        triton_url.rstrip("/"),
        models,
        str(DEEP_HEALTH_BOUND_MS),
        DEEP_HEALTH_PATH,
        DEEP_HEALTH_OK,
        DEEP_HEALTH_FAIL,
        str(DEEP_HEALTH_CACHE_S),
    ]


# ---------------------------------------------------------------- the ALB alarms
ALB_NAMESPACE = "AWS/ApplicationELB"
# The 5xx ratio by metric math: target and load-balancer 5xx over requests. The ALB publishes a count metric only for
# periods with a non-zero count, so the 5xx terms are FILLed with 0 (a minute without errors is a ratio of 0, not a
# missing datapoint); a minute without requests stays missing (RequestCount is not filled: 0/0 is no datapoint).
ERROR_METRICS = {
    "target5xx": "HTTPCode_Target_5XX_Count",
    "elb5xx": "HTTPCode_ELB_5XX_Count",
    "requests": "RequestCount",
}
ERROR_RATIO_ID = "ratio"
ERROR_RATIO_EXPRESSION = "(FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"
# Not proven against AWS (no account here): Route 53 describes a followed alarm by one MetricName, Namespace and
# Statistic (the API's CloudWatchAlarmConfiguration), which a metric-math alarm does not have, so CreateHealthCheck may
# refuse a metric check on this alarm. If `pulumi up` does, follow single-metric Sum alarms on the two 5xx counts
# instead (the ratio alarm then serves people, like the p99 one).
LATENCY_METRIC = "TargetResponseTime"  # seconds, per request that reached a target
# The latency alarms read the stable Triton target group's TargetResponseTime (dimensions LoadBalancer and TargetGroup),
# not the whole load balancer's: the deep-health target group's answers are the deep check's own evidence, and in a
# region at weight 0 they are most of the traffic besides the shallow checks, so a deep answer that is slow but within
# DEEP_HEALTH_BOUND_MS would lift the mean over the threshold with no user affected. The 5xx ratio stays per load
# balancer (HTTPCode_ELB_5XX_Count exists only there, and the ratio's terms must share one dimension): the deep check's
# own 503s count in it, which only ever agrees with the deep check.
# Route 53 metric checks accept alarms on Average, Minimum, Maximum, Sum or SampleCount only: "Extended statistics
# aren't supported" (Route 53 API reference, AlarmIdentifier). So the alarm that can move DNS follows the mean response
# time, with a threshold (HealthAlarms.latency_ms) well under the p99 objective: a region-wide slowdown lifts the mean
# as much as the tail. The p99 itself is alarmed for people (infra/components/alarms.py, SNS), not for DNS.
LATENCY_STATISTIC = "Average"
# The alarm for people: the p99 of the same TargetResponseTime against objectives.p99_ms, notifying the region's SNS
# alarm topic. It feeds no health check (Route 53 refuses extended statistics) and so never moves traffic by itself.
P99, P99_STATISTIC = "p99", "p99"
# No requests is no evidence of failure: a drained region still gets Route 53's checker requests through its ALB, and a
# blackholed ALB (no requests at all) is the endpoint checks' to catch. Missing datapoints therefore count as good, so
# a metric alarm can never hold a region out of DNS on silence alone.
TREAT_MISSING_DATA: Literal["notBreaching"] = "notBreaching"
# A metric check whose alarm has too little data (just created, CloudWatch itself impaired) reports healthy: a
# CloudWatch problem must not move traffic; crashes and broken inference are still caught by the endpoint checks.
# "Unhealthy" would fail every region at once on a CloudWatch outage (then fail-open); "LastKnownStatus" could hold a
# region out for as long as the data is missing.
INSUFFICIENT_DATA_HEALTH_STATUS: Literal["Healthy"] = "Healthy"


def alarm_name(env: str, region: str, kind: str) -> str:
    """The ALB alarm of `kind` (ALARM_KINDS) for `region`: named explicitly, so the Route 53 metric check, the drills
    and the rehearsal address it by name."""
    if kind not in ALARM_KINDS:
        raise ValueError(f"alarm kind {kind!r} is not one of {ALARM_KINDS}")
    return f"reco-dr-{env}-{region}-alb-{kind}"


def p99_alarm_name(env: str, region: str) -> str:
    """The p99 alarm of `region` (P99_STATISTIC), for people: named like the ALARM_KINDS alarms, beside them."""
    return f"reco-dr-{env}-{region}-alb-{P99}"
