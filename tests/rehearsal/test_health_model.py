"""Route 53's metric and calculated checks as the rehearsal evaluates them (drills/rehearsal/health_model.py), the
string-matching endpoint probe, the brownout fault vocabulary, and the report's per-check detection. No servers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from drills import brownout
from drills.adapters.faults import CompositeFaults
from drills.adapters.route53 import calculated_healthy, metric_check_healthy
from drills.errors import GuardrailError
from drills.rehearsal.cloudwatch import ALARM, INSUFFICIENT_DATA, OK, AlarmSpec
from drills.rehearsal.health_model import HealthModel, alarm_kinds, declared_alarms
from drills.rehearsal.healthcheck import HealthChecker, probe
from drills.rehearsal.report import check_kind, detection_by_check, false_positives


# ---------------------------------------------------------------- pure rules
@pytest.mark.parametrize(
    ("state", "insufficient", "last", "healthy"),
    [
        (ALARM, "Healthy", True, False),
        (OK, "Unhealthy", False, True),
        (INSUFFICIENT_DATA, "Healthy", False, True),
        (INSUFFICIENT_DATA, "Unhealthy", True, False),
        (INSUFFICIENT_DATA, "LastKnownStatus", False, False),
        (INSUFFICIENT_DATA, "LastKnownStatus", True, True),
    ],
)
def test_metric_check_follows_its_alarm(state: str, insufficient: str, last: bool, healthy: bool) -> None:
    assert metric_check_healthy(state, insufficient, last) is healthy


def test_metric_check_refuses_an_unknown_insufficient_data_status() -> None:
    with pytest.raises(ValueError, match="Sometimes"):
        metric_check_healthy(INSUFFICIENT_DATA, "Sometimes")


def test_calculated_check_needs_threshold_children() -> None:
    assert calculated_healthy([True, True, True, True], 4)
    assert not calculated_healthy([True, True, False, True], 4)
    assert calculated_healthy([True, False, False], 1)


def test_declared_alarms_scale_the_period_and_skip_alarms_no_check_follows() -> None:
    res = [
        {
            "type": "aws:cloudwatch/metricAlarm:MetricAlarm",
            "region": "us-east-1",
            "inputs": {
                "name": "a-5xx",
                "metricQueries": [{"id": "ratio", "expression": "x"}, {"id": "r", "metric": {"period": 60}}],
                "evaluationPeriods": 2,
                "datapointsToAlarm": 1,
                "threshold": 0.01,
                "treatMissingData": "notBreaching",
            },
        },
        {"type": "aws:cloudwatch/metricAlarm:MetricAlarm", "inputs": {"name": "paging-p99", "period": 60}},
    ]
    [a] = declared_alarms(res, {"a-5xx": "5xx"}, scale=0.1)
    assert (a.name, a.region, a.kind, a.period_s, a.datapoints_to_alarm) == ("a-5xx", "us-east-1", "5xx", 6.0, 1)
    info = {"m": {"type": "CLOUDWATCH_METRIC", "kind": "latency", "alarm": "a-lat"}, "s": {"type": "HTTPS"}}
    assert alarm_kinds(info) == {"a-lat": "latency"}


# ---------------------------------------------------------------- the model over a fake checker and log
class Log:
    def __init__(self) -> None:
        self.entries: list[list] = []

    def requests(self, since: int = 0) -> tuple[int, list[list]]:
        return len(self.entries), self.entries[since:]


def model(log: Log, origin_period: float = 1.0) -> tuple[HealthModel, HealthChecker]:
    checker = HealthChecker(probe_fn=lambda url, timeout, search: (True, "HTTP 200"))
    from drills.rehearsal.healthcheck import CheckSpec

    checker.set_specs([CheckSpec("shallow", "http://x/", 1.0, 3, label="r1 shallow")])
    info: dict[str, dict[str, Any]] = {
        "shallow": {"type": "HTTPS", "region": "r1", "kind": "shallow"},
        "err": {
            "type": "CLOUDWATCH_METRIC",
            "region": "r1",
            "kind": "5xx",
            "alarm": "r1-5xx",
            "insufficient_data": "Healthy",
        },
        "calc": {
            "type": "CALCULATED",
            "region": "r1",
            "kind": "calculated",
            "children": ["shallow", "err"],
            "health_threshold": 2,
        },
    }
    alarms = [AlarmSpec("r1-5xx", "r1", "5xx", origin_period, 2, 1, 0.05, "notBreaching")]
    m = HealthModel(checker, info, {"calc": "r1", "err": "r1 5xx", "shallow": "r1 shallow"}, alarms, lambda: [log])
    return m, checker


def test_errors_in_the_log_alarm_the_metric_check_and_take_the_calculated_check_down() -> None:
    log = Log()
    m, _ = model(log)
    origin = m.evaluators["r1-5xx"].origin
    assert m.status("calc") and m.status("err")  # new checks are healthy (INSUFFICIENT_DATA -> Healthy)
    log.entries += [[origin + 0.1 + i / 100, "r1", 502 if i % 3 == 0 else 200, 5.0, "/x"] for i in range(50)]
    log.entries += [[origin + 0.2, "r2", 502, None, "/x"]] * 50  # another region's errors count for it only
    m.poll(origin + 1.01)
    assert m.alarm_states()["r1-5xx"] == ALARM
    assert not m.status("err") and not m.status("calc")
    kinds = [(t.label, t.healthy) for t in m.transitions()]
    assert ("r1 5xx", False) in kinds and ("r1", False) in kinds
    # Two clean periods: OK again (1 of 2), the calculated check healthy again.
    log.entries += [[origin + 1.5, "r1", 200, 5.0, "/x"], [origin + 2.5, "r1", 200, 5.0, "/x"]]
    m.poll(origin + 3.01)
    assert m.status("calc") and m.alarm_states()["r1-5xx"] == OK


def test_an_unhealthy_endpoint_child_takes_the_calculated_check_down_and_inverting_flips_it() -> None:
    m, checker = model(Log())
    for _ in range(3):
        checker.observe("shallow", False, "timeout")
    m.evaluate()
    assert not m.status("calc")
    told = []
    m.on_change = lambda: told.append(m.status("calc"))
    m.set_inverted("calc", True)
    assert m.status("calc") and told == [True]  # the DNS model is told at once: no health change would tell it
    assert [(t.label, t.healthy) for t in m.transitions()][-1] == ("r1", True)
    m.set_inverted("calc", True)
    assert told == [True]  # nothing changed, nobody told


def test_a_metric_check_naming_an_undeclared_alarm_is_refused() -> None:
    checker = HealthChecker()
    info = {"m": {"type": "CLOUDWATCH_METRIC", "region": "r1", "kind": "5xx", "alarm": "nope", "name": "hc-5xx"}}
    with pytest.raises(ValueError, match="nope"):
        HealthModel(checker, info, {}, [], list)


# ---------------------------------------------------------------- the string-matching probe
@pytest.fixture
def server():
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"DEEP-OK ranker 3.1 ms\n" if self.path == "/ok" else b"DEEP-FAIL ranker\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_str_match_probe_needs_the_string_in_the_body(server: str) -> None:
    assert probe(server + "/ok", 2.0, "DEEP-OK")[0]
    ok, why = probe(server + "/fail", 2.0, "DEEP-OK")
    assert not ok and "DEEP-OK" in why
    assert probe(server + "/fail", 2.0)[0]  # a plain HTTP check passes on the status alone


# ---------------------------------------------------------------- the fault vocabulary
@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("errors=0.3", "errors", 0.3),
        ("latency=400ms", "latency", 400.0),
        ("latency=250", "latency", 250.0),
        ("blackhole", "blackhole", None),
        ("unload", "unload", None),
        ("loss=1", "loss", 1.0),
        ("slow-model=300ms", "slow-model", 300.0),
    ],
)
def test_brownout_faults_parse(text: str, kind: str, value: float | None) -> None:
    f = brownout.parse(text)
    assert (f.kind, f.value) == (kind, value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("errors=1.5", "(0, 1]"),
        ("errors", "needs a value"),
        ("blackhole=1", "takes no value"),
        ("jitter=3", "unknown kind"),
        ("loss=0.2ms", "rule"),
        ("latency=-5", "rule"),
    ],
)
def test_bad_brownout_faults_name_kind_value_and_rule(text: str, words: str) -> None:
    with pytest.raises(GuardrailError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        brownout.parse(text)


def test_network_faults_become_load_balancer_specs_and_the_backend_picks_by_kind() -> None:
    assert brownout.parse("errors=0.3").lb() == {"kind": "errors", "fraction": 0.3}
    assert brownout.parse("blackhole").lb() == {"kind": "blackhole"}
    with pytest.raises(ValueError, match="network"):
        brownout.parse("unload").lb()

    class A:
        kinds = ("errors",)

        def prepare(self, region: str, kind: str) -> dict:
            return {"got": kind}

    assert CompositeFaults(A()).prepare("r", "errors=0.3") == {"got": "errors=0.3"}


# ---------------------------------------------------------------- the report's view
def test_detection_by_check_and_the_shallow_only_figure() -> None:
    tr = [
        {"t": 100.0, "label": "us-east-1 5xx", "healthy": False},
        {"t": 100.5, "label": "us-east-1", "healthy": False},
        {"t": 99.0, "label": "eu-west-1 deep", "healthy": False},  # another region, before the fault
        {"t": 112.0, "label": "us-east-1 5xx", "healthy": True},
        {"t": 112.0, "label": "us-east-1", "healthy": True},
        {"t": 90.0, "label": "us-east-1 shallow", "healthy": True},
    ]
    d = detection_by_check(tr, "us-east-1", 97.0, 110.0, 0.1, {"dns_change": 5, "ttl": 60})
    assert d["by_check"]["5xx"]["detected_drill_s"] == 30.0
    assert d["by_check"]["calculated"] == {"detected_drill_s": 35.0, "healthy_after_clear_drill_s": 20.0}
    assert d["by_check"]["shallow"]["detected_drill_s"] is None
    assert d["shallow_only"]["rto_bound_drill_s"] is None and "never" in d["shallow_only"]["verdict"]
    assert check_kind("us-east-1 deep", "us-east-1") == "deep" and check_kind("eu-west-1", "us-east-1") is None
    assert false_positives(tr) == {
        "detections": 3,
        "by_check": {"eu-west-1 deep": 1, "us-east-1": 1, "us-east-1 5xx": 1},
    }
