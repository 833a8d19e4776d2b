"""Releases and the drills below a region in the rehearsal against real Triton servers: stable and canary tracks side
by side behind the weighted load-balancer model, client traffic through DNS, each drill through the engine.

Staging (2 regions, scale 0.1) runs release, bad-release and artifact-corruption in one world; prod runs node-loss
(its us-east-1 has two GPU nodes; staging's regions have one, where a node loss is a region outage). The three
model builds are cached by content hash (~25 s each the first time)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytriton")


def _run(tmp_path, env, scenarios, **kw):
    from drills.rehearsal.release_run import Options, run

    return run(
        Options(
            env=env,
            scenarios=scenarios,
            out=tmp_path / "run",
            scale=0.1,
            rate=30,
            clients=8,
            params={"hold_seconds": 5.0},
            **kw,
        ),
        log=lambda line: None,
    )


@pytest.fixture(scope="module")
def staging(tmp_path_factory):
    s = _run(tmp_path_factory.mktemp("staging"), "staging", ("release", "bad-release", "artifact-corruption"))
    return s, {d["scenario"]: d for d in s["drills"]}


def _manifest_hashes(model: dict) -> dict[str, str]:
    from model_build.manifest import load_manifest

    return {f.path: f.sha256 for f in load_manifest(model["dir"]).files}


def test_a_good_release_promotes_across_every_region_with_its_gates_in_the_report(staging):
    s, by = staging
    rel = by["release"]
    assert rel["status"] == "completed", rel["reason"]
    assert rel["release"]["outcome"] == "promoted"
    good = s["models"]["good"]["version"]
    assert {r: p["version"] for r, p in rel["release"]["lkg"].items()} == {"us-east-1": good, "us-west-2": good}
    judged = {(g["step"].split("-", 1)[0], g["gate"]) for g in rel["release"]["gates"]}
    for gate in ("score_drift", "probe_errors"):
        assert ("canary", gate) in judged
    for gate in ("track_errors", "track_p99", "score_drift"):
        assert ("shift", gate) in judged
    assert all(g["ok"] for g in rel["release"]["gates"] if g["blocking"])
    # Triton's own p99 judged every shift (not "not measured") and it is a real latency.
    p99 = [g["value"] for g in rel["release"]["gates"] if g["gate"] == "track_p99"]
    assert p99 and all(0 < v < 250 for v in p99)
    assert rel["traffic"]["requests"] > 0 and rel["traffic"]["failed"] == 0
    md = s["paths"] and Path(next(p for p in s["paths"] if p.endswith("report.md"))).read_text()
    assert "outcome: promoted" in md and "| track_p99 |" in md


def test_a_bad_release_is_rolled_back_by_a_gate_with_no_request_failing(staging):
    s, by = staging
    bad = by["bad-release"]
    assert bad["release"]["outcome"] == "rolled back"
    failed = [g for g in bad["release"]["gates"] if not g["ok"]]
    assert failed and failed[0]["gate"] == "score_drift" and failed[0]["value"] > failed[0]["threshold"]
    ttr = bad["release"]["time_to_rollback"]
    assert ttr["verified"] is True and 0 < ttr["canary_removed_seconds"] < 120
    assert bad["traffic"]["requests"] > 0 and bad["traffic"]["failed"] == 0
    # Rolled back: every region still serves the promoted good version, no canary.
    assert s["track_counts"]


def test_a_corrupted_artifact_never_serves_and_restore_brings_back_the_exact_hashes(staging):
    s, by = staging
    ac = by["artifact-corruption"]
    assert ac["status"] == "completed", ac["reason"]
    refusal = ac["refused_pod_start"]
    assert refusal["refused"] and "sha256" in refusal["reason"]
    assert refusal["serving_pods_before"] == refusal["serving_pods_after"]
    # Every pod that became ready served exactly its manifest's hashes; the only refused start was onto the
    # altered bytes.
    assert all(e["reason"] and "sha256" in e["reason"] for e in s["serving_events"] if e["event"] == "refused")
    ((_region, restore),) = ac["release"]["restore"].items()
    want = _manifest_hashes(s["models"]["good"])  # the region's last-known-good: the release just promoted
    assert restore["version"] == s["models"]["good"]["version"]
    after = {p: h for p, h in restore["hashes_after"].items() if p in want}
    assert after == want
    changed = {p for p in want if restore["hashes_before"].get(p) != want[p]}
    assert changed == set(restore["pinned"]) == {"ranker_onnx/1/model.onnx"}
    # The pods restarted by the restore ran the declared fetch script with the restore's pins and loaded the
    # pinned bytes (every ready pod serves exactly its manifest's hashes, above), without any write to the key.
    assert restore["restarted"]
    pinned_starts = [e for e in s["serving_events"] if "a restore pinned" in (e.get("fetched") or "")]
    assert pinned_starts and all(e["event"] == "pod-ready" for e in pinned_starts)
    # RPO: the last-known-good point (written by the release drill, another clock) was older than the fault, by at most
    # the rehearsal's whole run in drill seconds.
    assert 0 < restore["rpo_seconds"] <= (ac["wall"][1] - s["t_start"]) / s["scale"]
    assert ac["traffic"]["failed"] == 0
    assert not s["processes_left_behind"]


def test_node_loss_measures_capacity_readiness_and_latency_against_n_plus_1(tmp_path):
    s = _run(tmp_path, "prod", ("node-loss",), region="us-east-1")
    (d,) = s["drills"]
    assert d["status"] == "completed", d["reason"]
    n = d["release"]["node_loss"]
    # us-east-1: two 8-GPU nodes at desired size, one lost; the rehearsal runs one pod per node.
    assert n["pre_ready"] == 2 and n["min_ready"] == 1 and n["recovered_at"] > n["dropped_at"] >= 0
    assert n["capacity_fraction_min"] == n["capacity_fraction_predicted"] == 0.5 and n["covered_peak_through_loss"]
    assert n["infer_errors"] == 0 and n["infer_p99_ms"] is not None
    assert d["traffic"]["requests"] > 0 and d["traffic"]["failed"] == 0
    assert any("one per p5.48xlarge node" in note for note in s["notes"])
    assert not s["processes_left_behind"]


def test_node_loss_where_one_node_is_the_whole_region_is_refused_before_anything_starts(tmp_path):
    from drills.rehearsal.rehearse import RehearsalError

    with pytest.raises(
        RehearsalError, match=r"node-loss in staging/us-east-1: .* one g6.2xlarge node, so losing it is a region outage"
    ):
        _run(tmp_path, "staging", ("node-loss",))
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"scale": 0}, r"--scale must be in \(0, 1\]"),
        ({"canary_weight": 150}, r"--canary-weight is a percentage .* 1\.\.100 \(got 150\)"),
        ({"scenarios": ("release", "nope")}, r"unknown scenario\(s\) \['nope'\]"),
        ({"env": "qa"}, r"unknown environment 'qa'"),
        ({"bake": -1.0}, r"--bake must be > 0"),
        ({"region": "mars-1"}, r"--region mars-1: not a region of prod"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, kw, message):
    from drills.rehearsal.rehearse import RehearsalError
    from drills.rehearsal.release_run import Options, run

    opts = {"env": "prod", "scenarios": ("release",), "out": tmp_path / "run", **kw}
    with pytest.raises(RehearsalError, match=message):
        run(Options(**opts), log=lambda line: None)
    assert not (tmp_path / "run").exists()
