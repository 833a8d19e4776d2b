"""Triton serving: manifests valid under kubernetes-validate (strict), probes, GPUs, placement, scaling."""

from __future__ import annotations

import kubernetes_validate
import pytest

from infra.capacity import replica_bounds
from infra.components import triton as T
from infra.components.gpu_pools import device_plugin_daemonset
from infra.config import RegionConfig, load_stack
from infra.health import DEEP_HEALTH_PORT, deep_health_target_group_name
from infra.names import pins_key
from tests.signing import with_canary

K8S_KINDS = [
    "core/v1:ConfigMap",
    "apps/v1:Deployment",
    "apps/v1:DaemonSet",
    "autoscaling/v2:HorizontalPodAutoscaler",
    "policy/v1:PodDisruptionBudget",
    "core/v1:Service",
    "core/v1:Namespace",
    "core/v1:ServiceAccount",
]


def _use1() -> RegionConfig:
    cfg = load_stack("prod-use1")
    assert isinstance(cfg, RegionConfig)
    return cfg


def _validate(manifest: dict, version: str) -> None:
    kubernetes_validate.validate(manifest, f"{version}.0", strict=True)


def test_pure_manifests_are_valid_strict():
    cfg = _use1()
    v = cfg.kubernetes_version
    for p in cfg.gpu_pools:
        _validate(T.deployment_manifest(p, cfg.triton, cfg.model, "bucket", cfg.region), v)
        _validate(T.pdb_manifest(p), v)
        _validate(T.hpa_manifest(p, cfg.triton), v)
    for m in (
        T.service_manifest(),
        T.namespace_manifest(),
        T.service_account_manifest("arn:aws:iam::1:role/x"),
        device_plugin_daemonset(["a"]),
    ):
        _validate(m, v)


def test_declared_kubernetes_objects_are_valid_strict(regional, as_manifest):
    """What the program actually hands the provider, not only what the builders return."""
    _stack, plan, cfg = regional
    seen = 0
    for kind in K8S_KINDS:
        for rec in plan.of_type(f"kubernetes:{kind}"):
            _validate(as_manifest(rec), cfg.kubernetes_version)
            seen += 1
    assert seen >= 6


def test_strict_validation_catches_a_typo():
    cfg = _use1()
    m = T.deployment_manifest(cfg.gpu_pools[0], cfg.triton, cfg.model, "bucket", cfg.region)
    m["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(m, cfg.kubernetes_version)


def test_one_deployment_per_gpu_pool(regional, as_manifest):
    _stack, plan, cfg = regional
    deps = {d.inputs["metadata"]["name"]: as_manifest(d) for d in plan.of_type("kubernetes:apps/v1:Deployment")}
    assert sorted(deps) == sorted(f"triton-{p.name}" for p in cfg.gpu_pools)
    groups = {
        r.inputs["labels"]["reco-dr/gpu-pool"]: r
        for r in plan.of_type("aws:eks/nodeGroup:NodeGroup")
        if "labels" in r.inputs and "reco-dr/gpu-pool" in r.inputs["labels"]
    }
    bucket = plan.outputs["bucket_name"]
    for p in cfg.gpu_pools:
        d = deps[f"triton-{p.name}"]
        spec = d["spec"]["template"]["spec"]
        # Triton, and the deep-health sidecar answering the Route 53 deep check (tests/infra/test_deep_health.py).
        c, deep = spec["containers"]
        assert (c["name"], deep["name"]) == ("triton", "deep-health")
        assert c["image"] == cfg.triton.image
        # Triton reads only the serving repository verify-model builds from the verified copy of the version's
        # prefix, and loads exactly the pool's model, explicitly: the TensorRT model, or the ONNX fallback where the
        # stack declares it for the pool's compute capability; never the python-backend model.
        served = [f"{cfg.model.name}_onnx" if p.gpu.compute_capability in cfg.model.onnx_fallback_for else "ranker_trt"]
        assert "--model-repository=/models/serving" in c["args"] and "--model-control-mode=explicit" in c["args"]
        assert [a for a in c["args"] if a.startswith("--load-model=")] == [f"--load-model={m}" for m in served]
        assert "--exit-on-error=true" in c["args"] and not any("_py" in a for a in c["args"])
        fetch, verify = spec["initContainers"]
        local = f"/models/{cfg.model.name}/{cfg.model.version}"
        # The fetch script's argv: bucket, the version's prefix, the local copy, the region's fetch pins, the version.
        assert fetch["command"][:4] == ["/bin/sh", "-c", T.FETCH_SCRIPT, "fetch-model"]
        assert fetch["command"][4:] == [
            bucket,
            f"{cfg.model.name}/{cfg.model.version}/",
            local,
            pins_key(cfg.model.name, cfg.region),
            cfg.model.version,
        ]
        assert verify["image"] == cfg.triton.image and verify["command"][:2] == ["python3", "-c"]
        # The manifest digest the stack pins for the version: the pod serves no other manifest.
        assert verify["command"][3:] == [local, "/models/serving", cfg.model.digests[cfg.model.version], *served]
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
        assert {pt["containerPort"] for pt in c["ports"]} == {8000, 8001, 8002}
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        # The selector matches the labels the pool's node group puts on its nodes, and no other pool's.
        labels = groups[p.name].inputs["labels"]
        assert all(labels.get(k) == v for k, v in spec["nodeSelector"].items())
        assert spec["nodeSelector"]["reco-dr/compute-capability"] == p.gpu.compute_capability
        zones = [t for t in spec["topologySpreadConstraints"] if t["topologyKey"] == "topology.kubernetes.io/zone"]
        assert zones and zones[0]["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
        assert spec["serviceAccountName"] == "triton"
        assert "replicas" not in d["spec"]  # the HPA owns it
        assert {"name": "AWS_REGION", "value": cfg.region} in c["env"]


def test_hpa_and_pdb_per_pool(regional):
    _stack, plan, cfg = regional
    hpas = {
        h.inputs["metadata"]["name"]: h.inputs["spec"]
        for h in plan.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    pdbs = {
        p.inputs["metadata"]["name"]: p.inputs["spec"] for p in plan.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    }
    for p in cfg.gpu_pools:
        h = hpas[f"triton-{p.name}"]
        assert h["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"triton-{p.name}"}
        assert 1 <= h["minReplicas"] <= h["maxReplicas"] <= p.max * p.gpu.gpus
        assert h["maxReplicas"] == min(cfg.triton.max_replicas, p.max * p.gpu.gpus)
        assert h["minReplicas"] == min(cfg.triton.min_replicas, h["maxReplicas"])
        assert h["metrics"][0]["pods"]["metric"]["name"] == "nv_gpu_utilization"
        assert pdbs[f"triton-{p.name}"]["maxUnavailable"] == 1


def test_replica_bounds_capped_by_pool_gpus():
    cfg = _use1()
    pool = cfg.gpu_pools[0].model_copy(update={"max": 1})  # p5: 8 GPUs per node
    t = cfg.triton.model_copy(update={"min_replicas": 12, "max_replicas": 16})
    assert replica_bounds(pool, t) == (8, 8)


def test_service_and_target_group_binding(regional):
    _stack, plan, _cfg = regional
    svc = plan.one("kubernetes:core/v1:Service")
    assert svc.inputs["spec"]["selector"] == {"app.kubernetes.io/name": "triton"}
    for d in plan.of_type("kubernetes:apps/v1:Deployment"):
        assert d.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "triton"
    tgb = plan.one("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding", "triton-tgb")
    tg = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-triton")
    assert tgb.inputs["spec"] == {
        "serviceRef": {"name": "triton", "port": 8000},
        "targetGroupARN": tg.state["arn"],
        "targetType": "ip",
    }
    assert "lb-controller" in tgb.options["depends_on"]
    # The same pods, by the same Service, on the deep-health sidecar's port: the deep-health target group.
    deep = plan.one("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding", "triton-deep-health-tgb")
    deep_tg = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-deep-health")
    assert deep.inputs["metadata"]["name"] == "triton-deep-health"
    assert deep.inputs["spec"] == {
        "serviceRef": {"name": "triton", "port": DEEP_HEALTH_PORT},
        "targetGroupARN": deep_tg.state["arn"],
        "targetType": "ip",
    }
    assert "lb-controller" in deep.options["depends_on"]
    ports = {x["name"]: (x["port"], x["targetPort"]) for x in svc.inputs["spec"]["ports"]}
    assert ports == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
        "metrics": (8002, "metrics"),
        "deep-health": (DEEP_HEALTH_PORT, "deep-health"),
    }


def test_service_account_carries_the_triton_role(regional):
    _stack, plan, _cfg = regional
    sa = plan.one("kubernetes:core/v1:ServiceAccount", "triton-sa")
    role = plan.one("aws:iam/role:Role", "triton-role")
    assert sa.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role.state["arn"]
    ns = plan.one("kubernetes:core/v1:Namespace", "triton-ns")
    assert ns.inputs["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"


def test_controllers_are_pinned_helm_releases(use1):
    charts = {r.inputs["chart"]: r.inputs for r in use1.of_type("kubernetes:helm.sh/v3:Release")}
    assert set(charts) == {"aws-load-balancer-controller", "cluster-autoscaler", "prometheus", "prometheus-adapter"}
    assert all(c["version"] and c["version"][0].isdigit() for c in charts.values())
    lbc = charts["aws-load-balancer-controller"]["values"]
    assert lbc["clusterName"] == "reco-dr-prod-use1" and lbc["region"] == "us-east-1"
    assert (
        lbc["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
        == use1.one("aws:iam/role:Role", "lb-controller-role").state["arn"]
    )
    ca = charts["cluster-autoscaler"]["values"]
    assert ca["autoDiscovery"]["clusterName"] == "reco-dr-prod-use1" and ca["image"]["tag"] == "v1.33.0"
    rule = charts["prometheus-adapter"]["values"]["rules"]["custom"][0]
    assert rule["name"]["as"] == "nv_gpu_utilization"


# ---------------------------------------------------------------- gray release: stable and canary side by side
@pytest.fixture(scope="module")
def canary_plan():
    """prod-use1 with a canary at 10%: the program as a release step leaves it (config change, then up)."""
    import copy

    from infra.config import read_stack_file
    from infra.mocks import run_program

    v = copy.deepcopy(read_stack_file("prod-use1"))
    with_canary(v["model"], "2026.12.0", 10)
    # The header pins exist only for the release tooling's addresses (issue 15, the edge).
    v["load_balancer"]["release_tooling_cidrs"] = ["198.51.100.0/24"]
    return run_program("prod-use1", values=v), load_stack("prod-use1")


def test_no_canary_declares_exactly_the_stable_track(use1):
    assert [d.inputs["metadata"]["name"] for d in use1.of_type("kubernetes:apps/v1:Deployment")] == [
        "triton-h100",
        "triton-l40s",
    ]
    assert not [r for r in use1.of_type("aws:lb/listenerRule:ListenerRule") if r.name.startswith("ingress-pin-")]
    for d in use1.of_type("kubernetes:apps/v1:Deployment"):
        assert d.inputs["spec"]["template"]["metadata"]["labels"]["reco-dr/track"] == "stable"


def test_canary_deployments_serve_their_own_immutable_prefix(canary_plan, as_manifest):
    plan, cfg = canary_plan
    deps = {d.inputs["metadata"]["name"]: as_manifest(d) for d in plan.of_type("kubernetes:apps/v1:Deployment")}
    bucket = plan.outputs["bucket_name"]
    assert sorted(deps) == sorted(
        [f"triton-{p.name}" for p in cfg.gpu_pools] + [f"triton-{p.name}-canary" for p in cfg.gpu_pools]
    )
    for p in cfg.gpu_pools:
        stable, canary = deps[f"triton-{p.name}"], deps[f"triton-{p.name}-canary"]
        _validate(canary, cfg.kubernetes_version)
        # fetch-model's argv after the script: bucket, prefix, local copy, pins key, version.
        stable_fetch = stable["spec"]["template"]["spec"]["initContainers"][0]["command"][4:]
        canary_fetch = canary["spec"]["template"]["spec"]["initContainers"][0]["command"][4:]
        assert stable_fetch[:2] == [bucket, f"ranker/{cfg.model.version}/"] and stable_fetch[-1] == cfg.model.version
        assert canary_fetch[:2] == [bucket, "ranker/2026.12.0/"] and canary_fetch[-1] == "2026.12.0"
        assert (
            "/models/ranker/2026.12.0" in canary["spec"]["template"]["spec"]["initContainers"][1]["command"]
            and "--model-repository=/models/serving" in canary["spec"]["template"]["spec"]["containers"][0]["args"]
        )
        # The canary's pods never match the stable selector (so the stable Service and target group never see them).
        sl, cl = stable["spec"]["template"]["metadata"]["labels"], canary["spec"]["template"]["metadata"]["labels"]
        assert cl["app.kubernetes.io/name"] == "triton-canary" and sl["app.kubernetes.io/name"] == "triton"
        assert (cl["reco-dr/track"], cl["reco-dr/model-version"]) == ("canary", "2026.12.0")
        assert (sl["reco-dr/track"], sl["reco-dr/model-version"]) == ("stable", cfg.model.version)
        assert canary["spec"]["template"]["spec"]["nodeSelector"] == stable["spec"]["template"]["spec"]["nodeSelector"]
        assert "--metrics-config=summary_latencies=true" in canary["spec"]["template"]["spec"]["containers"][0]["args"]
    hpas = {
        h.inputs["metadata"]["name"]: h.inputs["spec"]
        for h in plan.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    }
    assert (
        hpas["triton-h100-canary"]["minReplicas"] == 1
        and hpas["triton-h100-canary"]["scaleTargetRef"]["name"] == "triton-h100-canary"
    )
    pdbs = {x.inputs["metadata"]["name"] for x in plan.of_type("kubernetes:policy/v1:PodDisruptionBudget")}
    assert {"triton-h100-canary", "triton-l40s-canary"} <= pdbs


def test_weighted_target_groups_split_the_listener(canary_plan):
    plan, _cfg = canary_plan
    tgs = {t.inputs["name"]: t for t in plan.of_type("aws:lb/targetGroup:TargetGroup")}
    deep = tgs.pop(deep_health_target_group_name("prod-use1"))  # the stable pods' sidecars, canary or not
    assert sorted(tgs) == ["reco-dr-prod-use1-canary", "reco-dr-prod-use1-triton"]
    stable, canary = tgs["reco-dr-prod-use1-triton"], tgs["reco-dr-prod-use1-canary"]
    assert canary.inputs["healthCheck"] == stable.inputs["healthCheck"] and canary.inputs["targetType"] == "ip"
    # Every forwarding rule of the edge splits by weight (the listener's default action answers 404).
    routes = [r for r in plan.of_type("aws:lb/listenerRule:ListenerRule") if r.name.startswith("ingress-route-")]
    assert routes
    for route in routes:
        (action,) = route.inputs["actions"]
        assert action["type"] == "forward" and action["forward"]["stickiness"]["enabled"] is False
        assert {g["arn"]: g["weight"] for g in action["forward"]["targetGroups"]} == {
            stable.state["arn"]: 90,
            canary.state["arn"]: 10,
        }
    rules = {
        r.inputs["conditions"][0]["httpHeader"]["values"][0]: r.inputs
        for r in plan.of_type("aws:lb/listenerRule:ListenerRule")
        if r.name.startswith("ingress-pin-")
    }
    assert sorted(rules) == ["canary", "stable"]
    assert rules["canary"]["actions"][0]["targetGroupArn"] == canary.state["arn"]
    assert rules["stable"]["actions"][0]["targetGroupArn"] == stable.state["arn"]
    assert all(r["conditions"][0]["httpHeader"]["httpHeaderName"] == "X-Reco-Track" for r in rules.values())
    # Each track's Service into its own target group, and the stable Service's deep-health port into the deep-health
    # target group (a canary is judged by the release gates, not by the region's deep check).
    tgbs = {
        t.inputs["metadata"]["name"]: t.inputs["spec"]
        for t in plan.of_type("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding")
    }
    assert tgbs == {
        "triton": {
            "serviceRef": {"name": "triton", "port": 8000},
            "targetGroupARN": stable.state["arn"],
            "targetType": "ip",
        },
        "triton-canary": {
            "serviceRef": {"name": "triton-canary", "port": 8000},
            "targetGroupARN": canary.state["arn"],
            "targetType": "ip",
        },
        "triton-deep-health": {
            "serviceRef": {"name": "triton", "port": DEEP_HEALTH_PORT},
            "targetGroupARN": deep.state["arn"],
            "targetType": "ip",
        },
    }
    svcs = {
        s.inputs["metadata"]["name"]: s.inputs["spec"]["selector"] for s in plan.of_type("kubernetes:core/v1:Service")
    }
    assert svcs == {
        "triton": {"app.kubernetes.io/name": "triton"},
        "triton-canary": {"app.kubernetes.io/name": "triton-canary"},
    }
    # The load balancer controller may register pods in these three target groups, nothing else.
    role = plan.one("aws:iam/role:Role", "lb-controller-role")
    (pol,) = [p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    import json

    reg = next(s for s in json.loads(pol.inputs["policy"])["Statement"] if s["Sid"] == "RegisterPods")
    assert sorted(reg["Resource"]) == sorted([stable.state["arn"], canary.state["arn"], deep.state["arn"]])


def test_canary_resources_are_exactly_what_a_promotion_deletes(canary_plan, use1, tmp_path):
    from drills.release.planning import canary_deletes
    from infra.config import load_fleet
    from tests.drills.drills_support import copy_stacks

    plan, _cfg = canary_plan
    extra = {(r.type, r.name) for r in plan.resources} - {(r.type, r.name) for r in use1.resources}
    # A fleet whose stacks declare the release tooling's range, as canary_plan does: the header pins count too.
    fleet = load_fleet("prod", copy_stacks(tmp_path / "stacks"))
    assert len(extra) == canary_deletes(fleet, "us-east-1")
    assert canary_deletes(load_fleet("prod"), "us-east-1") == len(extra) - 2  # without the range: no pins


def test_canary_weight_zero_keeps_the_candidate_out_of_user_traffic():
    import copy

    from infra.components.load_balancer import forward_weights
    from infra.config import read_stack_file
    from infra.mocks import run_program

    assert forward_weights(0) == (100, 0) and forward_weights(100) == (0, 100)
    with pytest.raises(ValueError):
        forward_weights(101)
    v = copy.deepcopy(read_stack_file("prod-usw2"))
    with_canary(v["model"], "2026.12.0", 0)
    plan = run_program("prod-usw2", values=v)
    routes = [r for r in plan.of_type("aws:lb/listenerRule:ListenerRule") if r.name.startswith("ingress-route-")]
    assert routes
    for route in routes:
        (action,) = route.inputs["actions"]
        assert sorted(g["weight"] for g in action["forward"]["targetGroups"]) == [0, 100]
