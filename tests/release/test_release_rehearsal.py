"""Release drills in the rehearsal against real Triton servers (two model versions side by side), staging (2 regions),
scaled timings. Needs the nvidia-pytriton server and the model builds (cached by content hash; ~25 s each the first time)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("pytriton")


@pytest.mark.release_rehearsal
def test_bad_release_rolled_back_and_corruption_refused(tmp_path):
    import drills.release.plugin  # noqa: F401 - the release scenarios, actions, checks and backend, not left to another test's import
    from drills.release.rehearsal import Options, run

    s = run(Options(env="staging", scenarios=("bad-release", "artifact-corruption"), out=tmp_path / "run", scale=0.1, rate=30, clients=8,
                    params={"hold_seconds": 5.0}), log=lambda line: None)
    by = {d["scenario"]: d for d in s["drills"]}
    bad = by["bad-release"]
    assert bad["release"]["outcome"] == "rolled back"
    failed = [g for g in bad["release"]["gates"] if not g["ok"]]
    assert failed and failed[0]["gate"] == "score_drift" and failed[0]["value"] > failed[0]["threshold"]
    assert bad["release"]["time_to_rollback"]["verified"] is True
    ac = by["artifact-corruption"]
    assert ac["refused_pod_start"]["refused"] and ac["refused_pod_start"]["serving_pods_before"] == ac["refused_pod_start"]["serving_pods_after"]
    assert ac["status"] == "completed", ac["reason"]
    # A corrupted artifact never served: every pod that became ready served exactly the manifest's hashes.
    refused = [e for e in s["serving_events"] if e["event"] == "refused"]
    assert refused and "sha256" in refused[0]["reason"]
    assert not s["processes_left_behind"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["drills"]
