"""Explicit providers: one `aws.Provider` per region and one `k8s.Provider` per cluster.

The program never relies on a default provider: a resource that forgot its provider would otherwise land in
whatever region the operator's shell points at, which for a multi-region DR fleet is the one mistake that
silently breaks the design. Tests check every recorded resource carries one of these.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import PROJECT, RegionConfig


def default_tags(stack: str, cfg: RegionConfig) -> dict[str, str]:
    """Tags every AWS resource of the stack carries (cost allocation, and finding a region's leftovers)."""
    return {
        "project": PROJECT,
        "stack": stack,
        "env": cfg.env,
        "region-role": "serving",
        "managed-by": "pulumi",
    }


def aws_provider(stack: str, cfg: RegionConfig) -> aws.Provider:
    return aws.Provider(
        f"aws-{cfg.region}",
        region=cfg.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=default_tags(stack, cfg)),
    )


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no long-lived token in state)."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"],
            "interactiveMode": "Never",
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "users": [{"name": cluster_name, "user": user}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
        },
        sort_keys=True,
    )


def k8s_provider(
    name: str,
    cluster_name: pulumi.Input[str],
    endpoint: pulumi.Input[str],
    ca_data: pulumi.Input[str],
    region: str,
    depends_on: list[pulumi.Resource] | None = None,
) -> k8s.Provider:
    config = pulumi.Output.all(cluster_name, endpoint, ca_data).apply(lambda a: kubeconfig(a[0], a[1], a[2], region))
    return k8s.Provider(
        name,
        kubeconfig=config,
        # Server-side apply lets the AWS Load Balancer Controller and HPA own the fields they manage.
        enable_server_side_apply=True,
        opts=pulumi.ResourceOptions(depends_on=depends_on or []),
    )
