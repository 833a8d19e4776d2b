"""Triton's /metrics: parsed from a live Triton 2.51's text (fixtures), differenced between two scrapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.release import metrics as M

FIX = Path(__file__).resolve().parent / "fixtures"


def test_parse_a_live_triton_scrape():
    samples = M.parse((FIX / "triton-2.51-metrics-backend-failures.txt").read_text())
    names = {s.name for s in samples}
    assert {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_request_duration_us",
        "nv_inference_request_summary_us",
        "nv_inference_count",
    } <= names
    fails = [s for s in samples if s.name == "nv_inference_request_failure"]
    assert {s.labels["reason"] for s in fails} == {"OTHER", "BACKEND", "CANCELED", "REJECTED"}


def test_snapshot_of_the_live_scrapes():
    """Measured on that server: 40 good requests + 3 whose model raised = 40 success, 3 failure (BACKEND);
    40 good + 3 answered with an error response = 43 *success* (the counters miss those: the gates add what
    the probes saw)."""
    s = M.snapshot((FIX / "triton-2.51-metrics-backend-failures.txt").read_text(), "toy")
    assert (s.success, s.failure, s.inferences, s.executions) == (40, 3, 160, 43)
    assert s.quantiles_us["0.99"] == 736 and s.found
    r = M.snapshot((FIX / "triton-2.51-metrics-response-errors.txt").read_text(), "toy")
    assert (r.success, r.failure) == (43, 0)
    assert not M.snapshot((FIX / "triton-2.51-metrics-response-errors.txt").read_text(), "other_model").found


def test_delta_between_two_scrapes_of_several_pods():
    a = {
        "p1": M.TritonSnapshot(success=100, failure=1, request_us=200_000, queue_us=10_000),
        "p2": M.TritonSnapshot(success=50, failure=0, request_us=100_000),
    }
    b = {
        "p1": M.TritonSnapshot(
            success=300, failure=5, request_us=600_000, queue_us=30_000, quantiles_us={"0.99": 9000}
        ),
        "p2": M.TritonSnapshot(
            success=10, failure=0, request_us=20_000, quantiles_us={"0.99": 12000}
        ),  # restarted: counts from 0
        "p3": M.TritonSnapshot(success=40, failure=2, request_us=80_000),
    }  # new pod
    d = M.delta(a, b)
    assert d.success == 200 + 10 + 40 and d.failure == 4 + 0 + 2
    assert d.requests == 256 and d.error_rate == pytest.approx(6 / 256)
    assert d.restarted == ["p2"] and d.appeared == ["p3"]
    assert d.mean_request_ms == pytest.approx((400_000 + 20_000 + 80_000) / 250 / 1000)
    assert d.p99_ms == 12.0  # the worst instance: quantiles of different pods cannot be merged


def test_no_requests_means_no_rate():
    s = {"p": M.TritonSnapshot(success=5)}
    d = M.delta(s, s)
    assert d.requests == 0 and d.error_rate is None and d.mean_request_ms is None


def test_render_round_trips_through_the_parser():
    text = M.render(
        {"success": 12, "failure": 3, "request_us": 48_000},
        "ranker_onnx",
        quantiles_us={"0.99": 5000.0},
        gpu_utilization=0.5,
    )
    s = M.snapshot(text, "ranker_onnx")
    assert (s.success, s.failure, s.request_us, s.quantiles_us["0.99"], s.gpu_utilization) == (
        12,
        3,
        48_000,
        5000.0,
        0.5,
    )


def test_parser_edge_cases():
    text = '# HELP x y\n\nm{a="q\\"uote",b="x\\\\y"} 1.5 1700000000000\nm_nan NaN\nm_inf{a="1"} +Inf\n'
    s = M.parse(text)
    assert s[0].labels == {"a": 'q"uote', "b": "x\\y"} and s[0].value == 1.5
    assert s[1].value != s[1].value and s[2].value == float("inf")
    with pytest.raises(ValueError, match="line 1"):
        M.parse("not a metric line at all {")
