"""Gray failures end to end, small: `python -m drills rehearse --scenario region-brownout` on staging at 1/30 of the
configured timings (an alarm period of 60 s lasts 2 wall seconds), and the quiet soak. The prod runs at the default
scale are the README's; these prove the same path in `make test`: a fault the shallow check misses is seen by the check
built for it, DNS moves users away within the window, and a soak without a fault raises no detection."""

from __future__ import annotations

import json

from tests.rehearsal.test_rehearse_cli import SCALE, processes_mentioning, rehearse


def run(small_model, tmp_path, *args: str) -> dict:
    out = tmp_path / "run"
    r = rehearse(
        "--env",
        "staging",
        *args,
        "--scale",
        SCALE,
        "--hold",
        "90",  # 3 wall s: the share after recovery is judged over the hold, not over a few requests
        "--rate",
        "30",
        "--clients",
        "12",
        "--model-dir",
        str(small_model),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert not processes_mentioning(str(out))
    return json.loads((out / "report.json").read_text())


def test_a_5xx_brownout_is_seen_by_the_error_alarm_and_drained(small_model, tmp_path):
    rep = run(small_model, tmp_path, "--scenario", "region-brownout", "--fault", "errors=0.5")
    assert rep["verdict"] == "PASS"
    fo = rep["rto"]
    assert fo["fault"] == "errors=0.5" and fo["lost_after_window"] == 0
    det = fo["detection"]["by_check"]
    assert det["5xx"]["detected_drill_s"] is not None  # the alarm built for it saw it
    assert det["calculated"]["detected_drill_s"] is not None  # and the record's check with it
    assert det["calculated"]["healthy_after_clear_drill_s"] is not None  # fail-back after the clearing
    assert fo["after"]["share"].get(fo["region"], 0.0) < 0.05
    assert any(a["kind"] == "5xx" and a["state"] == "ALARM" for a in rep["alarm_transitions"])


def test_an_unloaded_model_is_seen_by_the_deep_check(small_model, tmp_path):
    rep = run(small_model, tmp_path, "--scenario", "region-brownout", "--fault", "unload")
    assert rep["verdict"] == "PASS"
    det = rep["rto"]["detection"]["by_check"]
    assert det["deep"]["detected_drill_s"] is not None
    assert rep["rto"]["lost_after_window"] == 0


def test_a_quiet_soak_detects_nothing(small_model, tmp_path):
    rep = run(small_model, tmp_path, "--scenario", "quiet", "--minutes", "1.5")
    assert rep["health_detections"] == {"detections": 0, "by_check": {}}
    assert rep["verdict"] == "PASS"


def test_a_bad_fault_is_refused_before_anything_starts(tmp_path):
    r = rehearse("--env", "staging", "--scenario", "region-brownout", "--fault", "errors=2", "--out", str(tmp_path))
    assert r.returncode == 3  # a guardrail refusal
    err = r.stderr + r.stdout
    assert "REFUSED" in err and "errors=2" in err and "(0, 1]" in err and "started nothing" in err
