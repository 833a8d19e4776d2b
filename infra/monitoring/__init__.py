"""Monitoring of the ranker fleet: Prometheus rules (alerts.yml, unit tests in alerts_test.yml) and a Grafana
dashboard (dashboard.json), both over Triton's own metrics plus the CloudWatch metrics only AWS has.

Shipped as files, for the cluster's metrics pipeline: the prometheus chart takes the rules as its
`serverFiles.alerting_rules.yml` value (infra/components/addons.py does not pass them yet: it runs Prometheus for
the HPAs, with no Alertmanager), Grafana imports dashboard.json. The release engine reads the same Triton counters
directly (drills/release/metrics.py). `metric_names(expr)` lists the metrics a PromQL expression reads, so tests
hold every panel to metrics that exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
ALERTS_TEST = HERE / "alerts_test.yml"
DASHBOARD = HERE / "dashboard.json"

# What Triton 2.51 serves on :8002/metrics (checked against a live server; tests/release/fixtures/), the
# ones the rules and panels may use.
TRITON_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_power_usage",
    "nv_cpu_utilization",
)
# The gauge `python -m drills readiness --prom-file` writes, one series per check (drills/readiness/checks.py).
READINESS_METRIC = "reco_readiness"
# Not Triton's: Prometheus' own scrape health, CloudWatch through YACE (aws_<namespace>_<metric>_<statistic>), and
# the readiness gauge.
EXTERNAL_METRICS = (
    READINESS_METRIC,
    "push_time_seconds",  # the Pushgateway's, per pushed group: when readiness.yml last pushed the gauges
    "up",
    "aws_s3_replication_latency_maximum",
    "aws_s3_operations_failed_replication_sum",
    "aws_s3_operations_pending_replication_sum",
    "aws_route53_health_check_status_minimum",
    "aws_route53_health_check_percentage_healthy_average",
)

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, aggregation modifiers,
    label names (inside {...} or by/without/on/ignoring(...)), range/offset durations or keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors and subqueries
    s = re.sub(r"\boffset\s+\w+", " ", s)
    out = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        name = m.group(0)
        rest = s[m.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        out.add(name)
    return out


def load_rules(path: Path = ALERTS) -> dict:
    return yaml.safe_load(path.read_text())


def recorded_names(rules: dict) -> set[str]:
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text())


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every target, rows' nested panels included."""
    return [
        (q.get("title", "?"), t["expr"])
        for p in dashboard.get("panels", [])
        for q in [p, *p.get("panels", [])]
        for t in q.get("targets", [])
        if t.get("expr")
    ]
