"""The Prometheus rules pass promtool (syntax and unit tests) and the Grafana dashboard reads only metrics that
exist."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from infra.monitoring import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    EXTERNAL_METRICS,
    READINESS_METRIC,
    TRITON_METRICS,
    load_dashboard,
    load_rules,
    metric_names,
    panel_exprs,
    recorded_names,
)

# The Pushgateway's own gauge (in EXTERNAL_METRICS), one per pushed group: when the group last received a push.
# readiness.yml pushes the readiness gauges there; the dashboard and ReadinessStale read it.
PUSHGATEWAY_METRICS = ("push_time_seconds",)
READINESS_GROUP = "reco-dr-readiness"  # alerts.yml's group of readiness alerts


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's `prometheus` package "
            "(`bash requirements/system.sh`, run by `make test`, installs it) and validates infra/monitoring/alerts.yml"
        )
    return path


def test_promtool_check_rules():
    r = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_of_the_alerts():
    # Run from the rules' directory: the test file names alerts.yml relative to itself.
    r = subprocess.run(
        [_promtool(), "test", "rules", ALERTS_TEST.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS_TEST.parent,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_alerts_the_issue_names_exist():
    rules = load_rules()
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for name in (
        "RankerErrorRateHigh",
        "RankerCanaryErrorRateHigh",
        "RankerLatencyP99High",
        "ArtifactReplicationLagHigh",
        "RegionHealthCheckFailing",
    ):
        assert name in alerts and alerts[name]["labels"]["severity"] in ("page", "warn")
    known = set(TRITON_METRICS) | set(EXTERNAL_METRICS) | recorded_names(rules)
    for g in rules["groups"]:
        for r in g["rules"]:
            assert metric_names(r["expr"]) <= known, (
                r.get("alert") or r.get("record"),
                metric_names(r["expr"]) - known,
            )


def test_dashboard_is_valid_and_reads_only_known_metrics():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    exprs = panel_exprs(load_dashboard())
    assert len(exprs) >= 12
    known = set(TRITON_METRICS) | set(EXTERNAL_METRICS) | set(PUSHGATEWAY_METRICS) | recorded_names(load_rules())
    used = set()
    for title, e in exprs:
        names = metric_names(e)
        assert names, f"panel {title!r}: no metric in {e!r}"
        assert names <= known, f"panel {title!r} reads unknown metrics {names - known}"
        used |= names
    # The panels cover the sources the release gates use: errors, latency, GPUs, health, replication.
    assert {
        "nv_inference_request_summary_us",
        "nv_gpu_utilization",
        "reco_dr:triton_error_ratio:rate5m",
        "aws_route53_health_check_status_minimum",
        "aws_s3_replication_latency_maximum",
    } <= used


def test_every_readiness_alert_has_its_metrics_on_the_dashboard():
    """Whoever a readiness alert reaches finds what it fired on: every metric an alert of the group reads is shown by
    some panel."""
    groups = [g for g in load_rules()["groups"] if g["name"] == READINESS_GROUP]
    assert len(groups) == 1, f"alerts.yml: no group {READINESS_GROUP}"
    alerts = {r["alert"]: metric_names(r["expr"]) for r in groups[0]["rules"] if "alert" in r}
    assert alerts and all(alerts.values()), alerts
    shown = {name for _, e in panel_exprs(load_dashboard()) for name in metric_names(e)}
    assert READINESS_METRIC in shown, "no panel reads the readiness gauge"
    for alert, names in alerts.items():
        assert names <= shown, f"alert {alert} reads {sorted(names - shown)}, which no panel shows"


def test_readiness_panels_follow_the_env_variable():
    d = load_dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert "env" in variables, "the readiness panels pick an environment"
    assert variables["env"]["query"] == f"label_values({READINESS_METRIC}, env)"
    readiness = [
        (title, e) for title, e in panel_exprs(d) if metric_names(e) & {READINESS_METRIC, *PUSHGATEWAY_METRICS}
    ]
    # Per check, the state; and how long since the last run, from the readiness job's group only.
    assert any(e == f'min by (check) ({READINESS_METRIC}{{env="$env"}})' for _, e in readiness), readiness
    ages = [e for _, e in readiness if set(PUSHGATEWAY_METRICS) & metric_names(e)]
    assert ages and all('job="reco-dr-readiness"' in e for e in ages), ages
    for title, e in readiness:
        assert 'env="$env"' in e, f"panel {title!r}: {e!r} does not follow $env"


def test_metric_names_of_promql():
    assert metric_names('sum by (reco_dr_track) (rate(nv_inference_request_failure{reason="BACKEND"}[5m])) / 1000') == {
        "nv_inference_request_failure"
    }
    assert metric_names('max(x_total offset 5m) and on(job) up{app_kubernetes_io_name=~"triton|a"} > bool 0') == {
        "x_total",
        "up",
    }
    assert metric_names("reco_dr:triton_error_ratio:rate5m > 0.01") == {"reco_dr:triton_error_ratio:rate5m"}
