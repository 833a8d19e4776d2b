"""`python -m drills rehearse` as a user runs it (a subprocess): the report and chart it leaves, and the bad inputs
that must stop it with a clear message, a non-zero exit and no process left behind.

The end-to-end run is `--scenario all` on staging (failover routing, the default stacks) at 1/30 of the
configured timings with a small real model_build output; test_rehearsal_drills.py drills a weighted world
in-process, the full prod run is the README's `make rehearse`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drills.rehearsal.procs import free_port_block, port_free, udp_port_free
from drills.rehearsal.world import LB_NET
from infra.config import ROOT

SCALE = str(1 / 30)
# Tolerance on the predicted RTO, wall seconds: the health checker's random phase (up to one interval) plus
# scheduling slack of the processes sharing 2 cores.
TOLERANCE_WALL = 10 / 30 + 0.5


def rehearse(*args: str, timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drills", "rehearse", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line mentions `text` (the run directory: Tritons, the load generator)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and "pytest" not in cmd:
                out.append(f"{d.name}: {cmd[:200]}")
    return out


def test_rehearse_every_scenario_end_to_end(small_model, tmp_path):
    """`--scenario all` on staging: region-outage, stack-flip and artifact-replication one after the other in one world
    (evacuate-region is refused by staging's failover routing, and says so), a report each, an index, nothing left."""
    out = tmp_path / "run"
    r = rehearse(
        "--env",
        "staging",
        "--scenario",
        "all",
        "--scale",
        SCALE,
        "--hold",
        "6",
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
    assert "engine: [1/7] precheck" in r.stdout and "teardown: every process stopped" in r.stdout  # progress as it goes
    idx = json.loads((out / "report.json").read_text())
    assert [x["scenario"] for x in idx["scenarios"]] == ["region-outage", "stack-flip", "artifact-replication"]
    assert all(x["status"] == "completed" and x["verdict"] == "PASS" for x in idx["scenarios"]), idx["scenarios"]
    assert idx["skipped"][0]["scenario"] == "evacuate-region" and "failover mode" in idx["skipped"][0]["reason"]
    assert "rto" in idx and idx["rto"]["kind"] == "failover" and (out / "report.md").exists()
    # region-outage (us-east-1, staging's PRIMARY, killed): the RTO from the clients' records against the prediction.
    rep = json.loads((out / "region-outage" / "report.json").read_text())
    fo = rep["rto"]
    parts = {p["part"]: p for p in fo["parts"]}
    assert rep["rehearsal"]["scale"] == pytest.approx(1 / 30) and fo["region"] == "us-east-1"
    assert fo["predicted"] == {
        "detection": 30.0,
        "dns_change": 10.0,
        "ttl": 30.0,
        "total": 70.0,
    }  # interval x threshold + propagation + TTL
    # Detection as Route 53 counts: 3 consecutive failed probes at the (scaled) interval, i.e. 2 to 3 intervals.
    interval = 10 * (1 / 30)
    assert 2 * interval - 0.05 <= parts["detection"]["wall_s"] <= 3 * interval + TOLERANCE_WALL
    # Measured RTO within the configured prediction plus the tolerance (one interval of checker phase + 0.5 s).
    pred = fo["predicted_modelled_wall"]["total_s"]
    assert parts["all_clients_recovered"]["wall_s"] <= pred + TOLERANCE_WALL and fo["within_prediction"]
    assert fo["rto_wall_s"] <= pred + TOLERANCE_WALL and fo["verdict_objective"] == "PASS"
    # No request lost after the failover window; some failed inside it (the price of DNS failover).
    assert fo["lost_after_window"] == 0 and fo["errors_during_failover"] > 0
    # Traffic moves off the failed region: once the last affected client moved, nobody is answered by it.
    recs = [json.loads(x) for x in (out / "region-outage" / "requests.jsonl").read_text().splitlines()]
    moved = fo["fault_wall"] + parts["all_clients_recovered"]["wall_s"]
    later = [r for r in recs if moved < r["t"] < fo["cleared_wall"]]
    assert later and {r["region"] for r in later} == {"us-west-2"} and all(r["ok"] for r in later)
    assert fo["before"]["share"] == {"us-east-1": 1.0} and fo["before"]["success_rate"] == 1.0
    # One RTO: the clients' figure is the drill report's RTO objective too; the probe-based parts are left out.
    rto_rows = [o for o in rep["drill"]["objectives"] if o["objective"].startswith("RTO")]
    assert [(o["measured"], o["verdict"]) for o in rto_rows] == [(fo["rto_drill_s"], fo["verdict_objective"])]
    assert "clients' records" in rto_rows[0]["objective"] and rep["drill"]["rto"] == [] and "rto_engine" not in rep
    assert "probe-based" not in (out / "region-outage" / "report.md").read_text()
    # Fail-back after clearing the fault lost nothing.
    assert fo["failback"]["errors"] == 0 and fo["failback"]["share"].get("us-east-1", 0) > 0
    assert (out / "region-outage" / "failover.png").stat().st_size > 20_000
    for sc in ("region-outage", "stack-flip", "artifact-replication"):
        assert (out / sc / "timeline.png").stat().st_size > 20_000 and (out / sc / "report.md").read_text().count(
            "scale"
        ) >= 2
    # stack-flip: the flip and the flip back, as the clients saw them: every client left the old primary,
    # nothing failed.
    rep = json.loads((out / "stack-flip" / "report.json").read_text())
    flips = {s["step"]: s for s in rep["switches"]}
    assert flips["flip"]["away"] == ["us-east-1"] and flips["flip-back"]["away"] == ["us-west-2"]
    assert rep["traffic"]["errors"] == 0 and rep["traffic"]["requests"] > 100
    assert any(u["stack"] == "staging-global" for u in rep["rehearsal"]["stack_ups"])
    assert "PRIMARY" in (ROOT / "stacks" / "Pulumi.staging-global.yaml").read_text()  # the copy changed, stacks/ never
    # artifact-replication: RPO measured.
    rep = json.loads((out / "artifact-replication" / "report.json").read_text())
    assert rep["rpo"]["rpo_drill_s"] is not None and rep["rpo"]["verdict"] == "PASS"
    # No process left behind: nothing mentions the run directory, every port of the world is free again.
    assert not processes_mentioning(str(out)) and rep["rehearsal"]["processes_left_behind"] == []
    ports = rep["rehearsal"]["world"]["ports"]
    assert port_free("127.0.0.1", ports["moto"]) and udp_port_free("127.0.0.1", ports["dns"])
    assert all(port_free(v["address"], ports["http"]) for v in rep["rehearsal"]["world"]["regions"].values())


def test_scenario_the_env_cannot_run(tmp_path):
    r = rehearse("--env", "prod", "--scenario", "stack-flip", "--out", str(tmp_path / "run"))
    assert r.returncode == 3
    assert "stack-flip needs routing mode failover; prod routes in weighted mode" in r.stderr
    assert "evacuate-region" in r.stderr and "started nothing" in r.stderr  # what to do instead; nothing ran
    assert not (tmp_path / "run" / "world").exists()


def test_missing_and_corrupted_model(small_model, tmp_path):
    r = rehearse("--env", "staging", "--model-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "model artifact missing" in r.stderr and "python -m model_build --out" in r.stderr
    bad = tmp_path / "bad"
    shutil.copytree(small_model, bad)
    onnx = bad / "ranker_onnx" / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped: only the hash can tell
    onnx.write_bytes(bytes(data))
    r = rehearse("--env", "staging", "--model-dir", str(bad), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "model artifact corrupted" in r.stderr and "ranker_onnx/1/model.onnx" in r.stderr
    assert "Nothing was started" in r.stderr and "--rebuild-model" in r.stderr
    assert not (tmp_path / "b" / "world").exists()


def test_port_in_use(small_model, tmp_path):
    base = free_port_block(5, ["127.0.0.1", f"{LB_NET}1", f"{LB_NET}2"])
    with socket.socket() as s:
        s.bind((f"{LB_NET}2", base + 2))  # someone else's server on the second region's Triton HTTP port
        s.listen()
        r = rehearse(
            "--env",
            "staging",
            "--model-dir",
            str(small_model),
            "--base-port",
            str(base),
            "--out",
            str(tmp_path / "run"),
        )
    assert r.returncode == 2
    assert f"port {base + 2} on {LB_NET}2 is in use by another process" in r.stderr and "--base-port" in r.stderr
    assert "Nothing is left running" in r.stderr and not processes_mentioning(str(tmp_path / "run"))


def test_triton_that_never_becomes_ready(small_model, tmp_path):
    out = tmp_path / "run"
    r = rehearse("--env", "staging", "--model-dir", str(small_model), "--ready-timeout", "0.05", "--out", str(out))
    assert r.returncode == 2
    assert "not ready on http://127.0.11." in r.stderr and "after 0.05 s; stopped it" in r.stderr
    assert "triton.log" in r.stderr and "--ready-timeout" in r.stderr  # where to look, what to change
    assert not processes_mentioning(str(out))


def test_ab_test_refuses_a_region_the_env_lacks_before_anything_starts(tmp_path):
    r = rehearse("--env", "prod", "--scenario", "ab-test", "--region", "ap-south-1", "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    assert "--region ap-south-1: not a region of prod" in r.stderr
    assert not (tmp_path / "run").exists()  # nothing written, no model built, no world started
