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
    TRITON_METRICS,
    load_dashboard,
    load_rules,
    metric_names,
    panel_exprs,
    recorded_names,
)


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
    known = set(TRITON_METRICS) | set(EXTERNAL_METRICS) | recorded_names(load_rules())
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


def test_metric_names_of_promql():
    assert metric_names('sum by (reco_dr_track) (rate(nv_inference_request_failure{reason="BACKEND"}[5m])) / 1000') == {
        "nv_inference_request_failure"
    }
    assert metric_names('max(x_total offset 5m) and on(job) up{app_kubernetes_io_name=~"triton|a"} > bool 0') == {
        "x_total",
        "up",
    }
    assert metric_names("reco_dr:triton_error_ratio:rate5m > 0.01") == {"reco_dr:triton_error_ratio:rate5m"}
