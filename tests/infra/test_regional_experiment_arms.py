"""A/B experiments on the regional stack: the arms it serves (infra/arms.py), their pods (infra/components/triton.py),
target groups and arm header rules (infra/components/load_balancer.py), and what an experiment adds to a region."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes_validate
import pulumi
import pytest
import yaml

from infra.arms import (
    NO_ARMS,
    ArmRoute,
    arm_aws_resources,
    arm_resource_count,
    arm_track,
    environment_experiments,
    region_arms,
    regional_arms,
)
from infra.components import network_policy as NP
from infra.components import triton as T
from infra.config import STACKS_DIR, ConfigError, RegionConfig, load_stack, read_stack_file
from infra.experiments import Experiment, parse_experiments
from infra.health import deep_health_target_group_name
from infra.mocks import Plan, run_program
from infra.names import (
    ARM_HEADER,
    ARM_PRIORITY_BASE,
    TRACK_HEADER,
    app_name,
    arm_target_group_name,
    pin_paths,
    pins_key,
)
from tests.infra.test_edge_listener import answer

STACK = "prod-use1"
STABLE_V, CANDIDATE_V, OTHER_V = "2026.11.0", "2026.12.0", "2026.12.1"
DIGESTS = {CANDIDATE_V: "1" * 64, OTHER_V: "2" * 64}
START, END = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 20, tzinfo=UTC)
NOW = datetime(2026, 12, 5, tzinfo=UTC)
RULE = "aws:lb/listenerRule:ListenerRule"
TG = "aws:lb/targetGroup:TargetGroup"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
TGB = "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding"
INFER = "/v2/models/ranker_trt/infer"


def experiment(
    id: str = "rank-v2", control: str = STABLE_V, candidate: str = CANDIDATE_V, holdout: int = 10, **window
) -> dict:
    return {
        "id": id,
        "arms": [
            {"name": "control", "version": control, "weight": 50, "control": True},
            {"name": "candidate", "version": candidate, "weight": 50},
        ],
        "holdout": holdout,
        "start": window.get("start", START).isoformat(),
        "end": window.get("end", END).isoformat(),
    }


def experiments(*values: dict) -> tuple[Experiment, ...]:
    return parse_experiments(list(values))


def pinned_values() -> dict:
    """prod-use1's config with the candidates' digests pinned (check_fleet's rule for an experiment's versions)."""
    v = copy.deepcopy(read_stack_file(STACK))
    v["model"]["digests"] = {**v["model"]["digests"], **DIGESTS}
    return v


def _cfg() -> RegionConfig:
    cfg = load_stack(STACK)
    assert isinstance(cfg, RegionConfig)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"digests": {**cfg.model.digests, **DIGESTS}})})


@pytest.fixture(scope="module")
def running() -> Plan:
    """prod-use1 while a running experiment compares the stable version (control, holdout 10) with a candidate."""
    return run_program(STACK, values=pinned_values(), experiments=experiments(experiment()), now=NOW)


@pytest.fixture(scope="module")
def ended() -> Plan:
    return run_program(STACK, values=pinned_values(), experiments=experiments(experiment()), now=END)


@pytest.fixture(scope="module")
def without() -> Plan:
    return run_program(STACK, values=pinned_values(), experiments=(), now=NOW)


def _by_key(plan: Plan) -> dict[tuple[str, str], dict]:
    return {(r.type, r.name): r.inputs for r in plan.resources}


# ---------------------------------------------------------------- the pure plan
def test_region_arms_of_a_running_experiment():
    arms = region_arms(experiments(experiment()), NOW, STABLE_V)
    assert arms.versions == (CANDIDATE_V,)
    # Sorted header values, priorities from ARM_PRIORITY_BASE; control and holdout to the stable target group.
    assert arms.routes == (
        ArmRoute(ARM_PRIORITY_BASE, "rank-v2.candidate", CANDIDATE_V, CANDIDATE_V),
        ArmRoute(ARM_PRIORITY_BASE + 1, "rank-v2.control", STABLE_V, None),
        ArmRoute(ARM_PRIORITY_BASE + 2, "rank-v2.holdout", STABLE_V, None),
    )
    assert arms.target_group_names(STACK) == {CANDIDATE_V: arm_target_group_name(STACK, CANDIDATE_V)}


def test_region_arms_before_the_start_are_warm_and_after_the_end_are_gone():
    e = experiments(experiment())
    assert region_arms(e, START - timedelta(days=3), STABLE_V).versions == (CANDIDATE_V,)
    assert region_arms(e, END - timedelta(seconds=1), STABLE_V).versions == (CANDIDATE_V,)
    assert region_arms(e, END, STABLE_V) == NO_ARMS
    assert region_arms((), NOW, STABLE_V) == NO_ARMS


def test_region_arms_where_no_arm_is_the_stable_version():
    e = experiments(experiment(control=CANDIDATE_V, candidate=OTHER_V, holdout=0))
    arms = region_arms(e, NOW, STABLE_V)
    assert arms.versions == (CANDIDATE_V, OTHER_V)
    assert [(r.header, r.target) for r in arms.routes] == [
        ("rank-v2.candidate", OTHER_V),
        ("rank-v2.control", CANDIDATE_V),
    ]


def test_region_arms_take_a_utc_time_only():
    with pytest.raises(ValueError, match="UTC"):
        region_arms(experiments(experiment()), NOW.replace(tzinfo=None), STABLE_V)


def test_arm_tracks_and_names_never_meet_the_stable_or_canary_ones():
    t = arm_track(CANDIDATE_V)
    assert t.startswith("arm-") and len(t) == 12 and t not in ("stable", "canary")
    # The hash the target group's name ends with.
    assert arm_target_group_name(STACK, CANDIDATE_V).endswith(t.removeprefix("arm-"))
    assert app_name(t) == f"triton-{t}"
    assert T.deployment_name("h100", t) == f"triton-h100-{t}"
    assert (T.deployment_name("h100", "canary"), app_name("canary")) == ("triton-h100-canary", "triton-canary")
    assert arm_track(CANDIDATE_V) != arm_track(OTHER_V)


def test_an_unpinned_arm_version_is_a_config_error_naming_the_digests():
    cfg = load_stack(STACK)
    assert isinstance(cfg, RegionConfig) and CANDIDATE_V not in cfg.model.digests
    with pytest.raises(ConfigError, match=r"model\.digests.*2026\.12\.0.* not pinned") as e:
        regional_arms(STACK, cfg, experiments(experiment()), NOW)
    assert e.value.stack == STACK and e.value.key == "model.digests"
    # Ended, it needs no pods: nothing to pin.
    assert regional_arms(STACK, cfg, experiments(experiment()), END) == NO_ARMS
    assert regional_arms(STACK, _cfg(), experiments(experiment()), NOW).versions == (CANDIDATE_V,)


def test_the_program_refuses_an_unpinned_arm_version_before_declaring_anything():
    with pytest.raises(pulumi.RunError, match=r"stack prod-use1: reco-dr:model\.digests") as e:
        run_program(STACK, experiments=experiments(experiment()), now=NOW)
    assert not [r for r in e.value.plan.resources if r.custom]  # type: ignore[attr-defined]  # run_program attaches it


# ---------------------------------------------------------------- the regional program with a running experiment
def test_one_arm_target_group_like_the_canarys(running):
    tgs = {t.inputs["name"]: t for t in running.of_type(TG)}
    arm = tgs[arm_target_group_name(STACK, CANDIDATE_V)]
    stable = tgs["reco-dr-prod-use1-triton"]
    assert sorted(tgs) == sorted(
        ["reco-dr-prod-use1-triton", deep_health_target_group_name(STACK), arm_target_group_name(STACK, CANDIDATE_V)]
    )
    for k in ("port", "protocol", "targetType", "vpcId", "deregistrationDelay", "healthCheck"):
        assert arm.inputs[k] == stable.inputs[k], k
    assert len(arm.inputs["name"]) <= 32


def test_arm_deployments_serve_the_candidate_per_gpu_pool(running, as_manifest):
    cfg = _cfg()
    track = arm_track(CANDIDATE_V)
    deps = {d.inputs["metadata"]["name"]: as_manifest(d) for d in running.of_type(DEPLOYMENT)}
    stable_names = [f"triton-{p.name}" for p in cfg.gpu_pools]
    assert sorted(deps) == sorted(stable_names + [f"triton-{p.name}-{track}" for p in cfg.gpu_pools])
    bucket = running.outputs["bucket_name"]
    for p in cfg.gpu_pools:
        stable, arm = deps[f"triton-{p.name}"], deps[f"triton-{p.name}-{track}"]
        kubernetes_validate.validate(arm, f"{cfg.kubernetes_version}.0", strict=True)
        spec = arm["spec"]["template"]["spec"]
        fetch, verify = spec["initContainers"]
        local = f"/models/ranker/{CANDIDATE_V}"
        assert fetch["command"][4:] == [
            bucket,
            f"ranker/{CANDIDATE_V}/",
            local,
            pins_key("ranker", cfg.region),
            CANDIDATE_V,
        ]
        served = T.pod_models(p, cfg.model)
        assert verify["command"][3:] == [local, "/models/serving", DIGESTS[CANDIDATE_V], *served]
        # Triton only: the deep-health sidecar is the stable pods' (the region's health is its stable version).
        assert [c["name"] for c in spec["containers"]] == ["triton"]
        assert spec["nodeSelector"] == stable["spec"]["template"]["spec"]["nodeSelector"]
        labels = arm["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == f"triton-{track}"
        assert (labels["reco-dr/track"], labels["reco-dr/model-version"]) == (track, CANDIDATE_V)
        assert arm["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": f"triton-{track}",
            "app.kubernetes.io/instance": f"triton-{p.name}-{track}",
        }
        # The stable Deployment is untouched and serves the stable version.
        assert stable["spec"]["template"]["metadata"]["labels"]["reco-dr/model-version"] == STABLE_V
    hpas = {
        h.inputs["metadata"]["name"]: h.inputs["spec"]
        for h in running.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    pdbs = {x.inputs["metadata"]["name"] for x in running.of_type("kubernetes:policy/v1:PodDisruptionBudget")}
    for p in cfg.gpu_pools:
        h = hpas[f"triton-{p.name}-{track}"]
        assert h["minReplicas"] == 1 and h["scaleTargetRef"]["name"] == f"triton-{p.name}-{track}"
        assert f"triton-{p.name}-{track}" in pdbs


def test_the_arm_service_and_binding_register_only_the_arm_pods(running):
    track = arm_track(CANDIDATE_V)
    arm_tg = next(t for t in running.of_type(TG) if t.inputs["name"] == arm_target_group_name(STACK, CANDIDATE_V))
    tgbs = {t.inputs["metadata"]["name"]: t for t in running.of_type(TGB)}
    assert sorted(tgbs) == sorted(["triton", "triton-deep-health", f"triton-{track}"])
    tgb = tgbs[f"triton-{track}"]
    assert tgb.inputs["spec"] == {
        "serviceRef": {"name": f"triton-{track}", "port": 8000},
        "targetGroupARN": arm_tg.state["arn"],
        "targetType": "ip",
    }
    assert "lb-controller" in tgb.options["depends_on"]
    svcs = {s.inputs["metadata"]["name"]: s.inputs["spec"] for s in running.of_type("kubernetes:core/v1:Service")}
    assert svcs[f"triton-{track}"]["selector"] == {"app.kubernetes.io/name": f"triton-{track}"}
    assert svcs["triton"]["selector"] == {"app.kubernetes.io/name": "triton"}
    # The stable selector never matches an arm pod.
    for d in running.of_type(DEPLOYMENT):
        labels = d.inputs["spec"]["template"]["metadata"]["labels"]
        is_arm = labels["reco-dr/track"] == track
        assert (labels["app.kubernetes.io/name"] == "triton") is not is_arm


def test_three_arm_rules_in_sorted_order(running):
    tgs = {t.inputs["name"]: t.state["arn"] for t in running.of_type(TG)}
    stable, arm = tgs["reco-dr-prod-use1-triton"], tgs[arm_target_group_name(STACK, CANDIDATE_V)]
    rules = sorted((r for r in running.of_type(RULE) if r.name.startswith("ingress-arm-")), key=lambda r: r.name)
    assert [r.name for r in rules] == ["ingress-arm-0", "ingress-arm-1", "ingress-arm-2"]
    got = [
        (
            r.inputs["priority"],
            r.inputs["conditions"],
            r.inputs["actions"],
        )
        for r in rules
    ]

    def rule(priority: int, header: str, arn: str) -> tuple:
        return (
            priority,
            [
                {"httpHeader": {"httpHeaderName": ARM_HEADER, "values": [header]}},
                {"pathPattern": {"values": list(pin_paths("ranker"))}},
            ],
            [{"type": "forward", "targetGroupArn": arn}],
        )

    assert got == [
        rule(30, "rank-v2.candidate", arm),
        rule(31, "rank-v2.control", stable),
        rule(32, "rank-v2.holdout", stable),
    ]
    # Not restricted to the release tooling's addresses (no source-ip condition), one priority per rule.
    assert len({r.inputs["priority"] for r in running.of_type(RULE)}) == len(running.of_type(RULE))


def test_the_listener_sends_each_cell_to_its_version(running):
    tgs = {t.inputs["name"]: t.state["arn"] for t in running.of_type(TG)}
    stable, arm = tgs["reco-dr-prod-use1-triton"], tgs[arm_target_group_name(STACK, CANDIDATE_V)]
    for path in pin_paths("ranker"):
        assert answer(running, "POST", path, {ARM_HEADER: "rank-v2.candidate"}) == ("forward", {arm: 1})
        assert answer(running, "POST", path, {ARM_HEADER: "rank-v2.control"}) == ("forward", {stable: 1})
        assert answer(running, "POST", path, {ARM_HEADER: "rank-v2.holdout"}) == ("forward", {stable: 1})
    # A value no rule names, and no header at all: the ordinary route (the stable version), never refused.
    assert answer(running, "POST", INFER, {ARM_HEADER: "rank-v1.candidate"}) == ("forward", {stable: 1})
    assert answer(running, "POST", INFER) == ("forward", {stable: 1})
    # Only the inference paths: the model's metadata and health go the ordinary way; other paths stay 404.
    assert answer(running, "GET", "/v2/models/ranker_trt", {ARM_HEADER: "rank-v2.candidate"}) == (
        "forward",
        {stable: 1},
    )
    assert answer(running, "POST", "/v2/models/ranker_py/infer", {ARM_HEADER: "rank-v2.candidate"}) == ("fixed", "404")
    # The track header is still refused before any arm rule.
    assert answer(running, "POST", INFER, {ARM_HEADER: "rank-v2.candidate", TRACK_HEADER: "canary"}) == (
        "fixed",
        "403",
    )


def test_the_lb_controller_may_register_pods_in_the_arm_target_group(running):
    tgs = {t.inputs["name"]: t.state["arn"] for t in running.of_type(TG)}
    role = running.one("aws:iam/role:Role", "lb-controller-role")
    (pol,) = [p for p in running.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    reg = next(s for s in json.loads(pol.inputs["policy"])["Statement"] if s["Sid"] == "RegisterPods")
    assert sorted(reg["Resource"]) == sorted(tgs.values())
    assert tgs[arm_target_group_name(STACK, CANDIDATE_V)] in reg["Resource"]


def test_the_network_policies_admit_the_arm_pods(running):
    track = arm_track(CANDIDATE_V)
    pols = {r.inputs["metadata"]["name"]: r for r in running.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    for name in ("triton-http-from-load-balancer", "triton-metrics-from-prometheus"):
        assert pols[name].inputs["spec"]["podSelector"] == NP.triton_pods([track])
        assert pols[name].inputs["spec"]["podSelector"]["matchExpressions"][0]["values"] == ["stable", "canary", track]
        # Waiting on the namespace only: the arm pods are ready once these admit the load balancer's health checks.
        assert pols[name].options["depends_on"] == ["triton-ns"]


def test_the_experiment_adds_exactly_the_arm_resources_and_changes_only_their_admission(running, without):
    cfg = _cfg()
    arms = region_arms(experiments(experiment()), NOW, STABLE_V)
    base, now = _by_key(without), _by_key(running)
    added = set(now) - set(base)
    assert not set(base) - set(now)
    k8s_added = [k for k in added if k[0].startswith("kubernetes:")]
    aws_added = [k for k in added if k[0].startswith("aws:")]
    assert len(k8s_added) == arm_resource_count(len(arms.versions), len(cfg.gpu_pools)) == 2 * 3 + 2
    assert len(aws_added) == arm_aws_resources(arms) == 1 + 3
    assert len(added) == len(k8s_added) + len(aws_added)
    # Everything the region had keeps its name and its inputs, but who the controller and the policies admit.
    changed = sorted(k[1] for k in base if base[k] != now[k])
    assert changed == [
        "lb-controller-policy",
        "triton-network-triton-http-from-load-balancer",
        "triton-network-triton-metrics-from-prometheus",
    ]


# ---------------------------------------------------------------- ended, or none
def test_an_ended_experiment_declares_nothing(ended, without):
    assert _by_key(ended) == _by_key(without)
    assert not [r for r in ended.resources if "arm" in r.name]


def test_no_experiment_leaves_the_region_as_it_was(without, use1):
    """The shipped stacks (no experiment in prod-global): the program reads the global stack file and adds nothing;
    a digest pinned for a version nobody serves changes nothing either."""
    assert environment_experiments("prod") == ()
    assert _by_key(use1) == _by_key(without)
    assert not [r for r in without.resources if "arm" in r.name]


# ---------------------------------------------------------------- the program reads the global stack file
def test_the_program_reads_the_environments_experiments_and_the_clock(tmp_path: Path):
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS_DIR, stacks)
    now = datetime.now(UTC)
    glob = stacks / "Pulumi.prod-global.yaml"
    doc = yaml.safe_load(glob.read_text())
    doc["config"]["reco-dr:experiments"] = [
        experiment(start=now - timedelta(days=1), end=now + timedelta(days=30)),
        experiment(id="rank-v1", candidate=OTHER_V, start=now - timedelta(days=40), end=now - timedelta(days=10)),
    ]
    glob.write_text(yaml.safe_dump(doc, sort_keys=False))
    regional = stacks / f"Pulumi.{STACK}.yaml"
    doc = yaml.safe_load(regional.read_text())
    doc["config"]["reco-dr:model"]["digests"].update(DIGESTS)
    regional.write_text(yaml.safe_dump(doc, sort_keys=False))

    plan = run_program(STACK, stacks_dir=stacks)
    headers = sorted(
        r.inputs["conditions"][0]["httpHeader"]["values"][0]
        for r in plan.of_type(RULE)
        if r.name.startswith("ingress-arm-")
    )
    # The running experiment's cells; the ended one's none.
    assert headers == ["rank-v2.candidate", "rank-v2.control", "rank-v2.holdout"]
    assert [t.inputs["name"] for t in plan.of_type(TG) if t.name.startswith("ingress-triton-arm-")] == [
        arm_target_group_name(STACK, CANDIDATE_V)
    ]
