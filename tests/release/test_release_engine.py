"""Releases end to end on the drills engine against the test adapters (moto S3/Route 53/EKS, a fake fleet of
stable/canary Deployments with users' traffic, a fake clock)."""

from __future__ import annotations

import json

import pytest

from drills.engine import start_drill
from drills.journal import load
from drills.release.artifacts import read_pointer
from drills.release.planning import ReleaseOptions, build_release_plan, release_context
from drills.release.report import release_summary


def _plan(w, candidate: str, **kw):
    ctx = release_context(
        w.env,
        kw.pop("canary_region", None),
        plan_file=w.plan_file,
        stacks_dir=w.stacks,
        candidate=candidate,
        manifest=None,
    )
    return build_release_plan(ctx, ReleaseOptions(candidate=candidate, bake_seconds=kw.pop("bake", 30), **kw))


def _model_cfg(w):
    from infra.config import load_fleet

    f = load_fleet(w.env, w.stacks)
    return {r: (c.model.version, c.model.canary_version, c.model.canary_weight) for r, c in f.regions.items()}


def _entries(w, outcome):
    return load(w.state, outcome.drill_id)


def test_a_good_release_promotes_everywhere_and_records_lkg(release_world, repos):
    w = release_world()
    from tests.release.support import publish

    publish(w.backend, repos("2026.12.0", w_seed=2))
    outcome = start_drill(_plan(w, "2026.12.0"), w.state, backend=w.backend, clock=w.clock)
    entries = _entries(w, outcome)
    assert outcome.status == "completed", [
        (e.get("reason"), e.get("traceback")) for e in entries if e["type"] == "abort"
    ]
    assert set(_model_cfg(w).values()) == {("2026.12.0", None, 0)}
    for r in w.fleet.regions:
        t = w.backend.serving.tracks(r)
        assert set(t) == {"stable"} and t["stable"].version == "2026.12.0"
        ptr, vid = read_pointer(w.backend.s3, r, "ranker")
        assert (
            ptr is not None
            and ptr["version"] == "2026.12.0"
            and vid
            and all(f["version_id"] for f in ptr["files"].values())
        )
        assert ptr["previous"] is None
    s = release_summary(entries)
    assert s["outcome"] == "promoted" and set(s["lkg"]) == set(w.fleet.regions)
    gates = {(g["step"], g["gate"]) for g in s["gates"]}
    assert ("shift-us-west-2", "score_drift") in gates and ("shift-us-west-2", "track_errors") in gates
    psi = [g for g in s["gates"] if g["gate"] == "score_drift" and g["step"] == "canary-us-west-2"]
    assert psi[0]["value"] < 0.2 and psi[0]["threshold"] == 0.2 and psi[0]["ok"]
    errs = next(g for g in s["gates"] if g["gate"] == "track_errors" and g["step"] == "shift-us-west-2")
    assert errs["ok"] and errs["value"] == 0.0
    # The canary went first, region by region, then promotion, then the pointers.
    names = [e["name"] for e in entries if e["type"] == "step_begin"]
    assert names[:3] == ["precheck", "canary-us-west-2", "shift-us-west-2"] and names[-2:] == [
        "verify-release",
        "record-lkg",
    ]
    assert w.fleet.user_failures == []


def test_a_bad_model_is_caught_and_rolled_back_with_no_failed_request(release_world, repos):
    """Shuffled labels: every request succeeds, the scores are wrong. The canary's drift gates catch it before
    any user request reaches it; the rollback takes it away and the time is measured."""
    w = release_world()
    from tests.release.support import publish

    publish(w.backend, repos("2026.12.0-bad", "bad-labels"))
    before = _model_cfg(w)
    outcome = start_drill(_plan(w, "2026.12.0-bad", offline_blocking=False), w.state, backend=w.backend, clock=w.clock)
    entries = _entries(w, outcome)
    assert (
        outcome.status == "aborted"
        and "canary-us-west-2: gate failed" in (outcome.reason or "")
        and "PSI" in (outcome.reason or "")
    )
    assert _model_cfg(w) == before
    assert set(w.backend.serving.tracks("us-west-2")) == {"stable"}
    assert w.fleet.user_failures == [] and w.fleet.user_requests > 100
    s = release_summary(entries)
    assert s["outcome"] == "rolled back" and not s["time_to_rollback"]["candidate_took_traffic"]
    assert s["time_to_rollback"]["canary_removed_seconds"] is not None and s["time_to_rollback"]["verified"] is True
    failed = [g for g in s["gates"] if not g["ok"]]
    assert failed and failed[0]["value"] > 1.0  # PSI of collapsed scores
    # Offline AUC 0.5 was recorded, not enforced (offline_blocking=False): the drill exercised the online gates.
    offline = {v["name"]: v for v in s["candidate_verdicts"]}
    assert not offline["offline_auc"]["ok"] and not offline["offline_auc"]["blocking"]
    # No pointer moved.
    assert all(read_pointer(w.backend.s3, r, "ranker")[0] is None for r in w.fleet.regions)


def test_a_defect_only_traffic_shows_is_taken_off_at_the_first_failed_gate(release_world, repos):
    """Good scores on the golden rows, 5% of users' requests failing: the shadow step passes, the canary takes
    10% of us-west-2, the error-rate abort/gate fires, the weight goes back to 0 and the stable pods never stopped."""
    w = release_world()
    from tests.release.support import publish

    publish(w.backend, repos("2026.12.1", "errors-under-load", w_seed=1))
    outcome = start_drill(_plan(w, "2026.12.1", bake=120), w.state, backend=w.backend, clock=w.clock)
    entries = _entries(w, outcome)
    assert outcome.status == "aborted" and "error rate" in (outcome.reason or "")
    assert all(c == ("2026.11.0", None, 0) for c in _model_cfg(w).values())
    s = release_summary(entries)
    ttr = s["time_to_rollback"]
    assert ttr["candidate_took_traffic"] and ttr["exposed_seconds"] > 0 and ttr["canary_removed_seconds"] is not None
    # Users saw failures only from the canary, only while it had weight, and none after the rollback.
    t_removed = next(e["t"] for e in entries if e["type"] == "stack_up" and e.get("by") == "rollback")
    assert w.fleet.user_failures and all(f["track"] == "canary" and f["t"] <= t_removed for f in w.fleet.user_failures)
    w.clock.sleep(120)
    w.fleet.advance()
    assert all(f["t"] <= t_removed for f in w.fleet.user_failures)


def test_candidates_are_refused_before_any_traffic_moves(release_world, repos):
    """A manifest that fails verification in one region, a version missing from one region, engines that do not
    cover the fleet, an offline AUC below the gate, a consistent tampered pair in one region, another signer's
    release: each refused (exit 3) with nothing changed. Then a second
    release while a canary is configured is refused at plan time."""
    import shutil

    import boto3

    from drills.errors import GuardrailError
    from drills.release.artifacts import prefix
    from model_build.signing import dev_key, sign_with_key
    from tests.release.support import publish
    from tests.signing import tamper_consistently

    w = release_world()
    publish(w.backend, repos("2026.12.0-t", w_seed=2))
    bucket = w.backend.extras["outputs"]["eu-west-1"]["bucket_name"]
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket=bucket, Key=prefix("ranker", "2026.12.0-t") + "ranker_onnx/config.pbtxt", Body=b'name: "tampered"\n'
    )
    publish(w.backend, repos("2026.12.0-u", w_seed=2), regions=["us-west-2", "us-east-1"])
    publish(w.backend, repos("2026.12.0-e", w_seed=2, onnx_fallback=False))
    publish(w.backend, repos("2026.12.0-low", auc=0.6))
    # A consistent tampered pair in one region (model changed, its hash rewritten in the manifest): every file matches
    # that manifest, but the manifest is not the digest the stack pins and the signature no longer covers it.
    publish(w.backend, repos("2026.12.0-p", w_seed=2))
    s3, pre = boto3.client("s3", region_name="us-west-2"), prefix("ranker", "2026.12.0-p")
    pbucket = w.backend.extras["outputs"]["us-west-2"]["bucket_name"]
    forged = tamper_consistently(shutil.copytree(repos("2026.12.0-p", w_seed=2), w.state / "forged"))
    for rel in ("ranker_onnx/1/model.onnx", "manifest.json"):
        s3.put_object(Bucket=pbucket, Key=pre + rel, Body=(forged / rel).read_bytes())
    # Published and pinned, but signed by someone else.
    other = shutil.copytree(repos("2026.12.0-s", w_seed=2), w.state / "other-signer")
    sign_with_key(other, dev_key(w.state / "other-key")[0])
    publish(w.backend, other)
    cases = {
        "2026.12.0-p": "us-west-2: manifest.json: sha256 ",
        "2026.12.0-s": "model.sig: not a valid signature of key",
        "2026.12.0-t": "eu-west-1: ranker_onnx/config.pbtxt",
        "2026.12.0-u": "is not in eu-west-1's bucket",
        "2026.12.0-e": "no engine for compute capability 8.0",
        "2026.12.0-low": "offline AUC (manifest metrics.validation_auc) 0.6 (FAIL",
    }
    before = _model_cfg(w)
    for version, expect in cases.items():
        outcome = start_drill(_plan(w, version), w.state, backend=w.backend, clock=w.clock)
        entries = _entries(w, outcome)
        assert (
            outcome.status == "refused" and outcome.exit_code == 3 and "Nothing was changed" in (outcome.reason or "")
        )
        assert expect in (outcome.reason or ""), outcome.reason
        assert not [e for e in entries if e["type"] in ("config_set", "stack_up")]
        assert _model_cfg(w) == before and all(set(w.backend.serving.tracks(r)) == {"stable"} for r in w.fleet.regions)
        verdicts = release_summary(entries)["candidate_verdicts"]
        assert verdicts and any(not v["ok"] for v in verdicts)
    w.backend.stacks.set_config(
        "prod-euw1",
        {'model.digests["2026.10.9"]': "1" * 64, "model.canary_version": "2026.10.9", "model.canary_weight": 5},
    )
    with pytest.raises(GuardrailError) as e:
        _plan(w, "2026.12.0")
    assert e.value.code == "release-in-progress" and "eu-west-1: 2026.10.9 at 5%" in str(e.value)


def test_the_bad_release_drill_on_the_engine(release_world, repos, monkeypatch):
    """The registered scenario, as `drills run bad-release` builds it: <stable>-bad, offline gates recorded."""
    from drills.scenarios import build_plan

    w = release_world()
    from tests.release.support import publish

    publish(w.backend, repos("2026.11.0-bad", "bad-labels"))
    plan = build_plan("bad-release", "prod", "us-west-2", plan_file=w.plan_file, stacks_dir=w.stacks)
    assert [s.name for s in plan.steps] == ["precheck", "canary-us-west-2", "shift-us-west-2", "expect-caught"]
    outcome = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    s = release_summary(_entries(w, outcome))
    assert s["drill_objective"].startswith("met") and s["outcome"] == "rolled back"
    assert json.dumps(s)  # journal-only, serialisable


class Crash(BaseException):
    """Stands for a SIGKILL: nothing in the engine catches it, so no automatic rollback runs."""


def test_a_crashed_release_is_rolled_back_or_resumed_from_its_journal(release_world, repos):
    from drills.engine import resume_drill, rollback_drill
    from drills.journal import summarise
    from tests.release.support import publish

    w = release_world()
    publish(w.backend, repos("2026.12.0", w_seed=2))
    before = _model_cfg(w)

    def crash():
        raise Crash()

    # Crash during the canary's bake in us-west-2: the canary holds 10% there and the process is gone.
    w.clock.at(w.clock.now() + 80, crash)
    with pytest.raises(Crash):
        start_drill(_plan(w, "2026.12.0"), w.state, backend=w.backend, clock=w.clock)
    (drill,) = [p.name for p in (w.state / "drills").iterdir()]
    assert _model_cfg(w)["us-west-2"] == ("2026.11.0", "2026.12.0", 10)
    out = rollback_drill(drill, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "rolled-back" and _model_cfg(w) == before
    assert set(w.backend.serving.tracks("us-west-2")) == {"stable"}
    assert summarise(load(w.state, drill))["status"] == "rolled-back"

    # The same crash, then `drills resume`: the half-done step runs again and the release completes.
    w.clock.at(w.clock.now() + 80, crash)
    with pytest.raises(Crash):
        start_drill(_plan(w, "2026.12.0"), w.state, backend=w.backend, clock=w.clock)
    drill2 = next(p.name for p in (w.state / "drills").iterdir() if p.name != drill)
    out = resume_drill(drill2, w.state, confirm="prod", backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    assert set(_model_cfg(w).values()) == {("2026.12.0", None, 0)}


def test_a_release_killed_while_recording_lkg_is_rolled_back_with_its_pointers(release_world, repos, monkeypatch):
    """The process dies between two regions' pointer writes: `drills rollback` puts every pointer back to the
    exact bytes it had (or removes one the release created), as well as the config."""
    from drills.engine import rollback_drill
    from drills.journal import summarise
    from infra.names import lkg_key
    from tests.release.support import publish

    w = release_world()
    publish(w.backend, repos("2026.12.0", w_seed=2))
    s3 = w.backend.s3
    regions = sorted(w.fleet.regions)
    # One region has a pointer from an earlier release; the others have none yet.
    earlier = json.dumps({"version": "2026.11.0", "files": {"x": {"sha256": "0" * 64}}}).encode()
    s3.put_object(regions[0], lkg_key("ranker", regions[0]), earlier)
    before_cfg = _model_cfg(w)
    before = {r: s3.get_object(r, lkg_key("ranker", r)) for r in regions}
    assert before[regions[0]] == earlier and all(before[r] is None for r in regions[1:])

    real_put, puts = s3.put_object, []

    def put_then_die(region, key, body):
        if key in {lkg_key("ranker", r) for r in regions}:
            puts.append(region)
            if len(puts) == 2:  # the first pointer is written, the second is not: SIGKILL here
                raise Crash()
        return real_put(region, key, body)

    monkeypatch.setattr(s3, "put_object", put_then_die)
    with pytest.raises(Crash):
        start_drill(_plan(w, "2026.12.0"), w.state, backend=w.backend, clock=w.clock)
    monkeypatch.setattr(s3, "put_object", real_put)
    (drill,) = [p.name for p in (w.state / "drills").iterdir()]
    entries = load(w.state, drill)
    assert [e["type"] for e in entries].count("lkg_written") == 1
    first = puts[0]
    assert s3.get_object(first, lkg_key("ranker", first)) != before[first]  # the crash left one pointer changed

    out = rollback_drill(drill, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "rolled-back", out.reason
    assert {r: s3.get_object(r, lkg_key("ranker", r)) for r in regions} == before
    assert _model_cfg(w) == before_cfg
    entries = load(w.state, drill)
    reverted = {e["region"] for e in entries if e["type"] == "lkg_reverted"}
    assert reverted == set(puts)  # both journaled writes, the one that happened and the one that did not
    done = next(e for e in entries if e["type"] == "rollback_done")
    assert done["verified"] and not done["failed"] and not done["mismatches"]
    assert summarise(entries)["status"] == "rolled-back"


def test_a_release_is_refused_at_its_precheck_where_the_live_stack_has_no_tooling_range(release_world, repos):
    """Planned while the stacks named the release tooling's range; by the time it runs one live stack names none:
    every pinned score would get the listener's 403, so the precheck refuses it and nothing changes."""
    from tests.release.support import publish

    w = release_world()
    publish(w.backend, repos("2026.12.0-p", w_seed=2))
    plan = _plan(w, "2026.12.0-p")
    w.backend.stacks.set_config("prod-euw1", {"load_balancer.release_tooling_cidrs": []})
    before = _model_cfg(w)
    outcome = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert outcome.status == "refused" and outcome.exit_code == 3
    assert "prod-euw1: load_balancer.release_tooling_cidrs is empty" in (outcome.reason or "")
    assert "Pulumi.prod-euw1.yaml" in (outcome.reason or "") and "Nothing was changed" in (outcome.reason or "")
    assert _model_cfg(w) == before


def test_a_release_refuses_to_start_while_readiness_fails_naming_the_check(release_world, repos):
    """Releases pass the same readiness gate as drills (engine.readiness_gate): nothing is published to traffic,
    nothing journaled, and the failing check is named."""
    from drills.errors import GuardrailError
    from drills.readiness.checks import CheckResult
    from tests.release.support import publish

    w = release_world()
    publish(w.backend, repos("2026.12.0", w_seed=2))
    before = _model_cfg(w)
    w.backend.readiness = lambda: [
        CheckResult("capacity", False, "eu-west-1 lost: us-east-1 guaranteed 8 GPUs < 11 required"),
        CheckResult("digest", True, "every region serves manifest abc"),
    ]
    plan = _plan(w, "2026.12.0")
    assert plan.readiness_gate is True
    with pytest.raises(GuardrailError) as e:
        start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert e.value.code == "not-ready" and "capacity: eu-west-1 lost" in str(e.value) and "digest" not in str(e.value)
    assert _model_cfg(w) == before and not list(w.state.glob("**/*.jsonl"))
