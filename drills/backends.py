"""Backends: named bundles of adapters, built from (plan, options, clock).

BACKENDS (below) names each; `--backend NAME` picks one. The options are JSON and recorded in the journal, so
`drills rollback` in a later process rebuilds the same backend. The rehearsal's backends (moto_server, its DNS and
health-check models, real Triton processes) reuse the adapters where they fit (Boto3Route53 on its moto_server
endpoint, LocalStackAdapter over its stack copy, TritonHttpProbe with a resolver on its DNS server).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drills.adapters.base import Backend
from drills.clock import Clock
from drills.errors import DrillError, GuardrailError
from drills.model import Plan

BackendFactory = Callable[[Plan, dict[str, Any], Clock], Backend]
# name -> (factory, description): the backends of this tree, filled in below; `register_backend` is for plugins
# named in $DRILLS_PLUGINS (drills.plugins), such as the tests' own backend.
BACKENDS: dict[str, tuple[BackendFactory, str]] = {}


def register_backend(name: str, factory: BackendFactory, description: str = "") -> None:
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is already defined")
    BACKENDS[name] = (factory, description)


def build_backend(name: str, plan: Plan, options: dict[str, Any], clock: Clock) -> Backend:
    if name not in BACKENDS:
        raise GuardrailError("backend", f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name][0](plan, options, clock)


def aws_backend(plan: Plan, options: dict[str, Any], clock: Clock) -> Backend:
    """AWS through boto3 (default credential chain, or options["profile"]) and the Pulumi Automation API on this
    checkout (options["work_dir"], options["org"] for Pulumi Cloud stack names)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from drills.adapters.capacity import EksCapacity, KubernetesPods
    from drills.adapters.faults import CompositeFaults, HealthCheckInversion, KubernetesFaults
    from drills.adapters.kube import EksKube
    from drills.adapters.pod_startup import KubePodStartups
    from drills.adapters.probes import SystemResolver, TritonHttpProbe
    from drills.adapters.pulumi_stack import AutomationStackAdapter
    from drills.adapters.route53 import Boto3Route53
    from drills.adapters.s3 import Boto3S3
    from infra.config import ROOT, STACKS_DIR, load_fleet
    from infra.outputs import OutputError, validate_outputs

    fleet = load_fleet(plan.env, Path(options.get("stacks_dir", STACKS_DIR)))
    try:
        session = boto3.Session(profile_name=options.get("profile"))
        stacks = AutomationStackAdapter(Path(options.get("work_dir", ROOT)), org=options.get("org"))
        out = {r: validate_outputs(s, stacks.outputs(s)) for r, s in fleet.stack_names.items()}
        g_out = stacks.outputs(fleet.global_stack)
        # Route 53's API allows 5 requests/s per account: adaptive retries absorb throttling during polls.
        r53 = session.client(
            "route53",
            region_name=fleet.glob.control_region,
            config=Config(retries={"mode": "adaptive", "max_attempts": 10}),
        )
        zone_id = g_out.get("zone_id") or fleet.glob.zone.zone_id
        if not zone_id:
            name = fleet.glob.zone.name.rstrip(".") + "."
            zones = [z for z in r53.list_hosted_zones_by_name(DNSName=name)["HostedZones"] if z["Name"] == name]
            if not zones:
                raise DrillError(f"no hosted zone {name} in this account")
            zone_id = zones[0]["Id"].split("/")[-1]
        route53 = Boto3Route53(
            r53,
            zone_id,
            fleet.glob.fqdn,
            {r: o.lb_dns_name for r, o in out.items()},
            g_out.get("health_check_ids"),
            # The records' calculated checks follow ALB alarms in each region (infra/health.py).
            cloudwatch_for=lambda region: session.client("cloudwatch", region_name=region),
        )
        s3 = Boto3S3(
            {r: session.client("s3", region_name=r) for r in out},
            {r: o.bucket_name for r, o in out.items()},
            {r: (c.model.name, c.model.version) for r, c in fleet.regions.items()},
            **({"manifest_key": options["manifest_key"]} if options.get("manifest_key") else {}),
        )
        kubes = {r: EksKube(session, r, o.cluster_name) for r, o in out.items()}
        capacity = EksCapacity(
            {r: session.client("eks", region_name=r) for r in out},
            {r: o.cluster_name for r, o in out.items()},
            KubernetesPods(kubes),
        )
        probe_models = edge_probe_models(fleet)
        probes = TritonHttpProbe(
            {r: f"https://{o.lb_dns_name}" for r, o in out.items()},
            probe_models[min(probe_models)],
            clock,
            SystemResolver(fleet.glob.fqdn, route53._region_ips),
            server_name=fleet.glob.fqdn,
            models=probe_models,
        )
        faults = CompositeFaults(KubernetesFaults(kubes), HealthCheckInversion(route53))
    except (BotoCoreError, ClientError, OutputError) as e:
        raise DrillError(f"aws backend could not start, nothing was changed: {e}") from None
    except FileNotFoundError as e:
        if "pulumi" in str(e):
            raise DrillError(
                "aws backend could not start, nothing was changed: the Pulumi CLI is not installed "
                "(the Automation API drives it; https://www.pulumi.com/docs/install/)"
            ) from None
        raise
    except Exception as e:
        if type(e).__module__.startswith("pulumi"):
            raise DrillError(
                f"aws backend could not start, nothing was changed: Pulumi said {type(e).__name__}: {e}"
            ) from None
        raise
    backend = Backend("aws", options, stacks, route53, s3, capacity, probes, faults)
    work_dir, stacks_dir = Path(options.get("work_dir", ROOT)), Path(options.get("stacks_dir", STACKS_DIR))

    def readiness() -> list[Any]:
        # Read when a drill or release starts (engine.readiness_gate), not when the backend is built for a rollback.
        from drills.readiness.checks import evaluate
        from drills.readiness.command import declared_for
        from drills.readiness.view import AwsFleetView

        view = AwsFleetView(plan.env, stacks_dir, work_dir, options.get("profile"), options.get("org"))
        return evaluate(view.snapshot(), declared_for(fleet))

    backend.readiness = readiness
    startups = KubePodStartups(kubes)  # the engine's clock is the wall clock here (SystemClock)
    backend.pod_startups = lambda region, since: [s.as_dict() for s in startups.startups(region, since)]
    return _with_release_adapters(backend, fleet, options, session, out, kubes)


def edge_probe_models(fleet: Any) -> dict[str, str]:
    """Region -> the Triton model its probes infer on: what its pods serve (infra.names.served_models: `<name>_trt`,
    or `<name>_onnx` where the stack declares the GPUs' capability in model.onnx_fallback_for), a model the load
    balancer forwards (infra.names.edge_routes), never the bare `model.name`. A region whose pools differ (some on
    the fallback) gets the TensorRT model: the load balancer splits by target, not by model, so there the fallback
    pods answer a share of those probes 404 (declare the fallback for every capability of such a region)."""
    from infra.names import served_models

    out = {}
    for r, c in sorted(fleet.regions.items()):
        served = sorted(
            {m for cc in c.compute_capabilities for m in served_models(c.model.name, cc, c.model.onnx_fallback_for)}
        )
        trt = [m for m in served if m.endswith("_trt")]
        out[r] = (trt or served)[0]
    return out


def _with_release_adapters(
    backend: Backend, fleet: Any, options: dict[str, Any], session: Any, out: dict[str, Any], kubes: dict[str, Any]
) -> Backend:
    """What releases, restores and the sub-region drills need beyond the core adapters: ALB + Kubernetes serving
    state, version-pinned V2 scoring through the load balancer, Triton metrics from the cluster's Prometheus,
    and the faults "corrupt-artifact" and "gpu-node-loss"; from the same session and stack outputs."""
    from drills.adapters.faults import CompositeFaults
    from drills.release.adapters import (
        AlbKubeServing,
        ArtifactCorruption,
        Ec2NodeLoss,
        KubernetesTritonMetrics,
        TritonScoreProbe,
    )
    from drills.release.planning import VERSION, node_loss_figures

    model = next(iter(fleet.regions.values())).model.name
    backend.serving = AlbKubeServing(
        {r: session.client("elbv2", region_name=r) for r in out}, kubes, fleet.stack_names, model=model
    )
    # The Triton model the pods serve (model_build's repository: ranker_trt, or ranker_onnx where a region runs the
    # fallback).
    backend.scores = TritonScoreProbe(
        {r: f"https://{o.lb_dns_name}" for r, o in out.items()},
        options.get("score_model", f"{model}_trt"),
        server_name=fleet.glob.fqdn,
    )
    backend.metrics = KubernetesTritonMetrics(kubes)

    def served(region: str) -> tuple[str, str]:
        return model, str(backend.stacks.get_config(fleet.stack_names[region], VERSION))

    pools = {r: node_loss_figures(fleet, r)["pool"] for r in fleet.regions}
    backend.faults = CompositeFaults(
        backend.faults,
        ArtifactCorruption(backend.s3, served),
        Ec2NodeLoss(
            {r: session.client("eks", region_name=r) for r in out},
            {r: session.client("ec2", region_name=r) for r in out},
            {r: session.client("autoscaling", region_name=r) for r in out},
            {r: o.cluster_name for r, o in out.items()},
            pools,
        ),
    )
    return backend


def _imported(module: str) -> BackendFactory:
    """`module.backend_factory`, imported only when the backend is chosen: the rehearsals' simulators (moto,
    Triton) are never loaded by a production command."""

    def factory(plan: Plan, options: dict[str, Any], clock: Clock) -> Backend:
        built: Backend = importlib.import_module(module).backend_factory(plan, options, clock)
        return built

    return factory


BACKENDS.update(
    {
        "aws": (
            aws_backend,
            "AWS: boto3 (Route 53, S3, EKS, ELBv2, EC2), Kubernetes API via EKS tokens, Pulumi Automation API; "
            "with the release adapters (ALB weights, version-pinned scoring, Triton metrics)",
        ),
        "rehearsal": (
            _imported("drills.rehearsal.command"),
            "this machine: moto_server, Triton per region (CPU), Route 53 health/DNS and S3 replication models, "
            "stack copy re-applied through the offline plan (drills rehearse)",
        ),
        "rehearsal-release": (
            _imported("drills.rehearsal.release_run"),
            "the rehearsal world with stable/canary tracks (drills rehearse-release)",
        ),
    }
)
