"""The release plugin (loaded by drills.plugins.load_plugins): registers the `release`, `restore` and
`release-report` commands, the scenarios bad-release, artifact-corruption, node-loss and restore, their actions
and checks, and gives the `aws` backend the adapters a release needs.

The `aws` backend is wrapped, not edited: its factory is called as registered, then the release adapters are
attached (ALB + Kubernetes serving state, version-pinned V2 scoring through the load balancer, Triton metrics
through the API server's pod proxy) and its faults gain "corrupt-artifact" and "gpu-node-loss". The journal
records the backend by name and options, so `drills rollback` rebuilds the same wrapped backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drills.backends import BACKENDS, register_backend
from drills.release import actions as _actions  # noqa: F401 - registers the actions
from drills.release import checks as _checks  # noqa: F401 - registers the checks
from drills.release import rehearsal as _rehearsal
from drills.release import scenarios as _scenarios  # noqa: F401 - registers the scenarios
from drills.release.commands import register as _register_commands


def attach_aws(backend: Any, plan: Any, options: dict[str, Any]) -> Any:
    """Release adapters for AWS, from the same stack outputs and credentials the `aws` backend used."""
    import boto3

    from drills.adapters.faults import CompositeFaults
    from drills.adapters.kube import EksKube
    from drills.release.adapters import (
        AlbKubeServing,
        ArtifactCorruption,
        Ec2NodeLoss,
        KubernetesTritonMetrics,
        TritonScoreProbe,
    )
    from drills.release.planning import VERSION, node_loss_figures
    from infra.config import STACKS_DIR, load_fleet
    from infra.outputs import validate_outputs

    fleet = load_fleet(plan.env, Path(options.get("stacks_dir", STACKS_DIR)))
    session = boto3.Session(profile_name=options.get("profile"))
    out = {r: validate_outputs(s, backend.stacks.outputs(s)) for r, s in fleet.stack_names.items()}
    kubes = {r: EksKube(session, r, o.cluster_name) for r, o in out.items()}
    model = next(iter(fleet.regions.values())).model.name
    backend.serving = AlbKubeServing({r: session.client("elbv2", region_name=r) for r in out}, kubes, fleet.stack_names)
    # The Triton model the pods serve (model_build's repository: ranker_trt, or ranker_onnx where a region runs the fallback).
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


def _wrap_aws() -> None:
    if "aws" not in BACKENDS or getattr(BACKENDS["aws"][0], "_release_wrapped", False):
        return
    factory, text = BACKENDS["aws"]

    def aws_with_release(plan: Any, options: dict[str, Any], clock: Any) -> Any:
        return attach_aws(factory(plan, options, clock), plan, options)

    aws_with_release._release_wrapped = True  # type: ignore[attr-defined]
    register_backend(
        "aws",
        aws_with_release,
        text + "; with the release adapters (ALB weights, version-pinned scoring, Triton metrics)",
    )


_register_commands()
_wrap_aws()
_rehearsal.register()
