"""Recovery below a region on the engine: last-known-good pointers, restore, artifact corruption, node loss."""

from __future__ import annotations

import boto3
import pytest

from drills.engine import start_drill
from drills.journal import load
from drills.release.artifacts import compare_to_pointer, prefix, read_pins, read_pointer, sha256
from drills.release.planning import build_restore_plan, release_context
from drills.release.report import release_summary, render_markdown
from drills.scenarios import build_plan


def _adopt_everywhere(w) -> dict:
    ptrs = {}
    for r in w.fleet.regions:
        ctx = release_context(w.env, r, plan_file=w.plan_file, stacks_dir=w.stacks)
        out = start_drill(
            build_restore_plan(ctx, r, adopt=True, scenario="restore-adopt"), w.state, backend=w.backend, clock=w.clock
        )
        assert out.status == "completed", out.reason
        ptr = read_pointer(w.backend.s3, r, "ranker")[0]
        assert ptr is not None and ptr["version"] == "2026.11.0" and all(f["version_id"] for f in ptr["files"].values())
        ptrs[r] = ptr
    return ptrs


def test_artifact_corruption_is_refused_before_serving_and_restored_exactly(release_world):
    w = release_world()
    ptrs = _adopt_everywhere(w)
    w.clock.sleep(600)  # the recovery point is 10 minutes old when the corruption strikes
    loads_before = len(w.fleet.loads)
    plan = build_plan("artifact-corruption", "prod", "us-west-2", plan_file=w.plan_file, stacks_dir=w.stacks)
    outcome = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    entries = load(w.state, outcome.drill_id)
    assert outcome.status == "completed", [
        (e.get("reason"), e.get("traceback")) for e in entries if e["type"] == "abort"
    ]
    s = release_summary(entries)
    # Caught by verification, by its hash, before any pod loaded it.
    c = s["corruption"]
    assert c["region"] == "us-west-2" and any(p.startswith("ranker_onnx/1/model.onnx: sha256") for p in c["problems"])
    good = {p: f["sha256"] for p, f in ptrs["us-west-2"]["files"].items()}
    new_loads = [x for x in w.fleet.loads[loads_before:] if x["region"] == "us-west-2"]
    assert new_loads and all(
        h == good[p] for x in new_loads for p, h in x["loaded"].items()
    )  # the restart after the restore fetched the pinned bytes
    # Restored to the pointer's exact hashes; before/after in the report; RPO measured.
    r = s["restore"]["us-west-2"]
    assert (
        r["hashes_after"] == good and r["hashes_before"]["ranker_onnx/1/model.onnx"] != good["ranker_onnx/1/model.onnx"]
    )
    assert r["pinned"] == ["ranker_onnx/1/model.onnx"] and r["restarted"] is True and 600 <= r["rpo_seconds"] <= 700
    assert not compare_to_pointer(w.backend.s3, "us-west-2", ptrs["us-west-2"])
    # Restored by version id, not by copy-over: the only write to the published key since the pointer is the
    # corruption itself, which stays its current version; the fetch pins name the pointer's version ids.
    key = prefix("ranker", ptrs["us-west-2"]["version"]) + "ranker_onnx/1/model.onnx"
    (corruption,) = [v for v in w.backend.s3.versions("us-west-2", key) if v["version_id"] != _vid(ptrs, key)]
    assert corruption["latest"]
    current = w.backend.s3.get_object("us-west-2", key)
    assert current is not None and sha256(current) != good["ranker_onnx/1/model.onnx"]
    pins = read_pins(w.backend.s3, "us-west-2", "ranker")
    assert pins is not None
    version, digest, pinned = pins
    assert (version, digest) == (ptrs["us-west-2"]["version"], ptrs["us-west-2"]["manifest_sha256"])
    assert pinned == {p: f["version_id"] for p, f in ptrs["us-west-2"]["files"].items()}
    # Replication carried the corrupt object to the other regions; each was pinned to its own pointer: exact.
    for region in ("us-east-1", "eu-west-1"):
        o = s["other_regions"][region]
        assert o["saw_corrupt"] is not None and o["exact_at"] is not None and o["pinned"]
        assert not compare_to_pointer(w.backend.s3, region, ptrs[region])
    md = render_markdown(s)
    assert "sha256 before" in md and "(pinned)" in md


def _vid(ptrs: dict, key: str) -> str:
    """The S3 version id us-west-2's pointer pins for `key`."""
    rel = key.split("/", 2)[2]
    return ptrs["us-west-2"]["files"][rel]["version_id"]


def test_restore_brings_back_the_exact_last_known_good_version(release_world, repos):
    """A region left on another version with a tampered file: restore re-points the config at the pointer's
    version, pins the fetch of the file to its pinned S3 version and verifies every hash."""
    from tests.release.support import publish

    w = release_world()
    ptrs = _adopt_everywhere(w)
    publish(w.backend, repos("2026.12.0", w_seed=2), regions=["eu-west-1"])
    w.backend.stacks.set_config("prod-euw1", {"model.version": "2026.12.0"})
    w.backend.stacks.up("prod-euw1", "someone rolled forward by hand")
    bucket = w.backend.extras["outputs"]["eu-west-1"]["bucket_name"]
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket=bucket, Key=prefix("ranker", "2026.11.0") + "ranker_onnx/config.pbtxt", Body=b"garbage"
    )
    ctx = release_context(w.env, "eu-west-1", plan_file=w.plan_file, stacks_dir=w.stacks)
    outcome = start_drill(build_restore_plan(ctx, "eu-west-1"), w.state, backend=w.backend, clock=w.clock)
    entries = load(w.state, outcome.drill_id)
    assert outcome.status == "completed", [
        (e.get("reason"), e.get("traceback")) for e in entries if e["type"] == "abort"
    ]
    assert w.backend.stacks.get_config("prod-euw1", "model.version") == "2026.11.0"
    assert w.backend.serving.tracks("eu-west-1")["stable"].version == "2026.11.0"
    assert not compare_to_pointer(w.backend.s3, "eu-west-1", ptrs["eu-west-1"])
    r = release_summary(entries)["restore"]["eu-west-1"]
    assert r["pinned"] == ["ranker_onnx/config.pbtxt"] and r["hashes_after"] == {
        p: f["sha256"] for p, f in ptrs["eu-west-1"]["files"].items()
    }


def test_restore_without_a_pointer_is_refused(release_world):
    w = release_world()
    ctx = release_context(w.env, "us-east-1", plan_file=w.plan_file, stacks_dir=w.stacks)
    outcome = start_drill(build_restore_plan(ctx, "us-east-1"), w.state, backend=w.backend, clock=w.clock)
    assert outcome.status == "refused" and "--adopt" in (outcome.reason or "")


def test_node_loss_measures_capacity_readiness_and_latency(release_world):
    w = release_world()
    plan = build_plan("node-loss", "prod", "us-east-1", plan_file=w.plan_file, stacks_dir=w.stacks)
    outcome = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    entries = load(w.state, outcome.drill_id)
    assert outcome.status == "completed", [
        (e.get("reason"), e.get("traceback")) for e in entries if e["type"] == "abort"
    ]
    n = release_summary(entries)["node_loss"]
    assert n["pre_ready"] == 2 and n["min_ready"] == 1 and n["dropped_at"] is not None
    assert 40 <= n["recovered_at"] <= 60  # the fake node group replaces the node after 45 s
    assert n["infer_errors"] == 0 and n["infer_p99_ms"] is not None
    f = n["figures"]
    assert f["gpus_per_node"] == 8 and f["gpus_required_at_peak"] > 0
    # One of two pods lost = one of us-east-1's two 8-GPU nodes: 50% left, predicted 50%, 8 of 16 GPUs needed at peak.
    assert (n["capacity_fraction_min"], n["capacity_fraction_predicted"], n["capacity_fraction_required"]) == (
        0.5,
        0.5,
        0.5,
    )
    assert n["gpus_serving_min"] == 8 and n["covered_peak_through_loss"] is True


@pytest.mark.parametrize(
    "min_ready,pre_ready,required,covered,gpus",
    [
        (8, 16, 8, True, 8),  # AWS: one pod per GPU, one 8-GPU node of 16 lost
        (1, 2, 8, True, 8),  # the rehearsal: one pod per node, same fraction
        (1, 2, 9, False, 8),  # the survivors cannot carry the region's share of peak
        (0, 1, 0, True, 0),  # a region that needs nothing at peak is covered even at zero
    ],
)
def test_node_loss_capacity_compares_fractions_of_the_declared_fleet(min_ready, pre_ready, required, covered, gpus):
    from drills.release.actions import node_loss_capacity

    fig = {"gpus_desired": 16, "gpus_after_loss": 8, "gpus_required_at_peak": required}
    c = node_loss_capacity(min_ready, pre_ready, fig)
    assert (
        c["covered_peak_through_loss"] is covered
        and c["gpus_serving_min"] == gpus
        and c["capacity_fraction_predicted"] == 0.5
    )
