"""Readiness against the rehearsal world as against AWS (`python -m drills rehearse --scenario readiness`): the same
checks pass, fail on the digest check alone when one region's served manifest differs, and pass again; every drill
of the rehearsal consults the same readiness before it starts (engine.readiness_gate)."""

from __future__ import annotations

import json

from tests.rehearsal.test_rehearse_cli import SCALE, processes_mentioning, rehearse


def test_readiness_passes_fails_on_a_differing_served_manifest_and_passes_again(small_model, tmp_path):
    out = tmp_path / "run"
    r = rehearse(
        "--env",
        "staging",
        "--scenario",
        "readiness",
        "--scale",
        SCALE,
        "--model-dir",
        str(small_model),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert not processes_mentioning(str(out))
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "PASS"
    failing = [[c["name"] for c in checks if not c["ok"]] for checks in rep["readiness"]]
    assert failing == [[], ["digest"], []]
    names = [c["name"] for c in rep["readiness"][0]]
    assert names == ["capacity", "engines", "tensorrt", "digest", "replication", "config", "health_checks"]
    (digest,) = [c for c in rep["readiness"][1] if c["name"] == "digest"]
    assert "digests differ" in digest["detail"] and "us-east-1" in digest["detail"]
    assert rep["rto"].get("kind") != "failover"  # the fault moves no traffic
