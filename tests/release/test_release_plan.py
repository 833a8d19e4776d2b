"""Release plans are pure (no cloud calls): steps, order, rollback order, guardrails, CLI with --help everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.errors import GuardrailError
from drills.release.planning import (
    CANARY_VERSION,
    CANARY_WEIGHT,
    VERSION,
    ReleaseOptions,
    build_release_plan,
    node_loss_figures,
    release_context,
    rollout_order,
    split_capacity,
)

_COPY: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _stacks(tmp_path_factory):
    """stacks/ with the release tooling's egress range declared (stacks/ declares none; a release refuses without)."""
    from tests.drills.drills_support import copy_stacks

    _COPY["stacks"] = copy_stacks(tmp_path_factory.mktemp("stacks"))


def stacks() -> Path:
    return _COPY["stacks"]


def _plan(env="prod", candidate="2026.12.0", stacks_dir=None, **kw):
    ctx = release_context(
        env, kw.pop("canary_region", None), candidate=candidate, manifest=None, stacks_dir=stacks_dir or stacks()
    )
    return build_release_plan(ctx, ReleaseOptions(candidate=candidate, **kw))


def test_a_release_plans_from_the_shipped_stacks_and_names_the_pins_it_needs():
    """stacks/ declares no release tooling range (an operator sets theirs): planning still works, and the plan names
    the stacks the precheck will check live."""
    from infra.config import STACKS_DIR

    p = _plan(stacks_dir=STACKS_DIR)
    assert set(p.steps[0].params["release"]["pinned_scoring"]) == {"us-east-1", "us-west-2", "eu-west-1"}


def test_prod_release_plan_canary_then_region_by_region_then_promotion():
    p = _plan()
    names = [s.name for s in p.steps]
    assert names == [
        "precheck",
        "canary-us-west-2",
        "shift-us-west-2",
        "canary-eu-west-1",
        "shift-eu-west-1",
        "canary-us-east-1",
        "shift-us-east-1",
        "promote-us-west-2",
        "promote-eu-west-1",
        "promote-us-east-1",
        "verify-release",
        "record-lkg",
    ]
    # Only regional stacks and only the three model keys; rollback restores the canary region first.
    assert list(p.touches) == ["prod-usw2", "prod-euw1", "prod-use1"]
    assert all(v == [VERSION, CANARY_VERSION, CANARY_WEIGHT] for v in p.touches.values())
    assert p.pre_config["prod-usw2"] == {VERSION: "2026.11.0", CANARY_VERSION: "", CANARY_WEIGHT: 0}
    shift = p.steps[2]
    assert shift.params["values"] == {CANARY_WEIGHT: 10} and shift.wait_seconds == 300
    kinds = [c.kind for c in shift.checks]
    assert kinds == ["traffic_split", "track_errors", "track_p99", "score_drift", "score_drift"]
    promote = p.steps[7]
    assert (
        promote.params["values"] == {VERSION: "2026.12.0", CANARY_VERSION: "", CANARY_WEIGHT: 0}
        and promote.params["allow_deletes"] == 8
    )
    assert {c.kind for c in p.abort_conditions} == {"slo", "healthy", "canary_errors"}
    assert all(s.mutates for s in p.steps if s.action in ("release_set", "record_lkg"))
    assert "canary region us-west-2 first" in p.rollback[0]


def test_options_and_no_shadow():
    p = _plan(canary_region="us-east-1", canary_weight=25, bake_seconds=60, shadow=False)
    assert [s.name for s in p.steps][:3] == ["precheck", "canary-us-east-1", "canary-eu-west-1"]
    first = p.steps[1]
    assert first.params["values"] == {CANARY_VERSION: "2026.12.0", CANARY_WEIGHT: 25} and first.wait_seconds == 60
    assert rollout_order(__import__("infra.config", fromlist=["load_fleet"]).load_fleet("prod"), "us-east-1") == [
        "us-east-1",
        "eu-west-1",
        "us-west-2",
    ]


def test_staging_failover_mode_canaries_in_the_primary_and_shadows_the_secondary():
    p = _plan("staging")
    names = [s.name for s in p.steps]
    assert names[:4] == ["precheck", "canary-us-east-1", "shift-us-east-1", "canary-us-west-2"]
    assert "shift-us-west-2" not in names  # no traffic there: shadow comparison only, then promotion
    with pytest.raises(GuardrailError) as e:
        _plan("staging", canary_region="us-west-2")
    assert e.value.code == "canary-region" and "us-east-1" in str(e.value)


@pytest.mark.parametrize("candidate,code", [("2026.11.0", "candidate"), ("not a version", "candidate")])
def test_refusals_at_plan_time(candidate, code):
    with pytest.raises(GuardrailError) as e:
        _plan(candidate=candidate)
    assert e.value.code == code


def test_capacity_for_stable_and_canary_side_by_side(tmp_path):
    from infra.config import load_fleet
    from tests.drills.drills_support import copy_stacks

    f = load_fleet("prod")
    s = split_capacity(f, "us-west-2", 10)
    # 30% of 150,000 QPS at 7,000 QPS per A100: 6 GPUs stable at 90%, 1 canary (its floor: one pod per pool).
    assert (s["stable_gpus"], s["canary_gpus"], s["gpus_max"], s["ok"]) == (6, 1, 24, True)
    stacks = copy_stacks(
        tmp_path / "stacks",
        {
            "prod-global": {
                "capacity": {
                    "peak_qps": 1_000_000,
                    "qps_per_gpu": {"9.0": 12000, "8.0": 7000, "8.9": 4000, "8.6": 2500},
                }
            }
        },
    )
    with pytest.raises(GuardrailError) as e:
        _plan(stacks_dir=stacks)
    assert e.value.code == "capacity" and "side by side at peak" in str(e.value)


def test_node_loss_figures_are_the_n_plus_one_math_of_one_node():
    from infra.config import load_fleet

    f = node_loss_figures(load_fleet("prod"), "us-west-2")
    assert (f["gpus_desired"], f["gpus_per_node"], f["gpus_after_loss"], f["gpus_required_at_peak"]) == (8, 8, 0, 7)
    assert not f["covers_peak_after_loss"] and f["recoverable"]


def test_bad_release_candidate_by_convention_or_env(monkeypatch):
    from drills.scenarios import build_plan

    p = build_plan("bad-release", "prod", None, stacks_dir=stacks())
    assert p.region == "us-west-2" and p.steps[1].params["values"][CANARY_VERSION] == "2026.11.0-bad"
    assert p.steps[0].params["release"]["offline_blocking"] is False and p.steps[-1].action == "expect_caught"
    monkeypatch.setenv("DRILLS_RELEASE_CANDIDATE", "2026.11.0-shuffled")
    assert (
        build_plan("bad-release", "prod", "us-west-2", stacks_dir=stacks()).steps[1].params["values"][CANARY_VERSION]
        == "2026.11.0-shuffled"
    )


def test_cli_commands_help_plan_and_dry_runs(capsys, tmp_path):
    from drills.cli import main

    for cmd, flag in (("release", "--canary-weight"), ("restore", "--adopt"), ("release-report", "--print")):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and flag in capsys.readouterr().out
    for sc in ("bad-release", "artifact-corruption", "node-loss", "restore"):
        assert main(["plan", sc, "--env", "prod", "--region", "us-west-2", "--stacks-dir", str(stacks())]) == 0
    capsys.readouterr()
    state = ["--state-dir", str(tmp_path), "--stacks-dir", str(stacks())]
    assert main(["release", "2026.12.0", "--env", "prod", *state]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "prod-usw2: canary_version=2026.12.0" in out and "--execute --confirm prod" in out
    assert main(["release", "2026.12.0", "--env", "prod", "--execute", *state]) == 3
    assert "confirm with --confirm prod" in capsys.readouterr().err
    assert main(["restore", "--env", "prod", "--region", "eu-west-1", *state]) == 0
    assert "restore-lkg" in capsys.readouterr().out
    assert main(["release", "2026.12.0", "--env", "nope", *state]) == 3
