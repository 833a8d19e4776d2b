"""Gray failures end to end, small: `python -m drills rehearse --scenario region-brownout` on staging at 1/30 of the
configured timings (an alarm period of 60 s lasts 2 wall seconds), and the quiet soak. The prod runs at the default
scale are the README's; these prove the same path in `make test`: a fault the shallow check misses is seen by the check
built for it, DNS moves users away within the window, and a soak without a fault raises no detection."""

from __future__ import annotations

import json

from tests.rehearsal.test_rehearse_cli import SCALE, processes_mentioning, rehearse


def run(small_model, tmp_path, *args: str, hold: str = "90") -> dict:
    """`hold`: drill seconds at the drilled state (90: 3 wall s, so the share after recovery is judged over more than
    a few requests)."""
    out = tmp_path / "run"
    r = rehearse(
        "--env",
        "staging",
        *args,
        "--scale",
        SCALE,
        "--hold",
        hold,
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


def test_a_replication_partition_grows_rpo_fires_the_alarm_and_catches_up(small_model, tmp_path):
    """Serving is untouched; canaries written elsewhere cannot reach the cut region until the heal; the declared
    ReplicationLatency alarm (900 s over 300 s periods) fires for a cut longer than that; every canary lands after."""
    rep = run(small_model, tmp_path, "--scenario", "region-brownout", "--fault", "replication-partition", hold="1300")
    assert rep["verdict"] == "PASS", rep["drill"]["findings"]
    pt = rep["rpo"]["partition"]
    assert pt["verdict"] == "PASS" and pt["cut_drill_s"] >= 1300
    assert {(c["source"], c["destination"]) for c in pt["canaries"]} == {("us-west-2", pt["region"])}
    (c,) = pt["canaries"]
    assert c["exposure_drill_s"] >= 1300 and c["catch_up_drill_s"] < rep["rpo"]["objective_s"]
    assert c["alarm_fired_after_cut_drill_s"] is not None and c["alarm_fired_after_cut_drill_s"] <= 900 + 300 + 30
    assert rep["rto"].get("kind") != "failover"  # no DNS failover: serving was never faulted
