"""The EKS control plane, its node role, the CPU system node group, the managed add-ons and the OIDC
provider that service-account roles (IRSA) trust."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import pulumi
import pulumi_aws as aws

from infra.components.gpu_pools import node_group_launch_template, node_launch_template
from infra.components.identity import irsa_trust_policy
from infra.components.kms import account_key_policy, rotating_key
from infra.config import NodePool

CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
NODE_POLICIES = {
    "worker": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "ecr": "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
}
# The VPC CNI's rights (create and attach ENIs, assign IPs) on their own IRSA role for kube-system/aws-node, not on
# the node role: every pod that reached the node role's credentials would otherwise hold them too.
CNI_POLICY = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
CNI_NAMESPACE = "kube-system"
CNI_SERVICE_ACCOUNT = "aws-node"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# Managed add-ons; no version pinned so EKS installs the default for the cluster's Kubernetes version,
# which moves with `kubernetes_version` instead of drifting out of its support window.
ADDONS = ["vpc-cni", "kube-proxy", "coredns"]
# Add-on configuration (the add-on's JSON schema). The VPC CNI enforces Kubernetes NetworkPolicies only when asked
# to: its network policy agent (eBPF, VPC CNI >= 1.14, EKS >= 1.25) is what makes the Triton namespace's policies
# (infra/components/network_policy.py) more than declarations. It allows the node's own address, so kubelet probes
# still reach the pods.
ADDON_CONFIG: dict[str, dict[str, str]] = {"vpc-cni": {"enableNetworkPolicy": "true"}}
SYSTEM_LABELS = {"reco-dr/pool": "system"}
VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"  # get/list/watch, no Secrets


def oidc_issuer_url(identities: Sequence[aws.eks.outputs.ClusterIdentity]) -> str:
    """The cluster's OIDC issuer URL, which EKS reports once the cluster exists."""
    oidcs = identities[0].oidcs
    assert oidcs is not None, "EKS reports an OIDC identity for every cluster"
    issuer = oidcs[0].issuer
    assert issuer is not None, "EKS reports an OIDC issuer for every cluster"
    return issuer


def cluster_name(stack: str) -> str:
    return f"reco-dr-{stack}"


def service_assume_policy(service: str) -> str:
    """Trust policy for an AWS service principal (EKS control plane, EC2 nodes)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": ["sts:AssumeRole", "sts:TagSession"]
                    if service == "eks.amazonaws.com"
                    else "sts:AssumeRole",
                }
            ],
        },
        sort_keys=True,
    )


@dataclass
class ClusterArgs:
    name: str
    kubernetes_version: str
    service_cidr: str
    private_subnet_ids: Sequence[pulumi.Input[str]]
    system_pool: NodePool
    logs_key_arn: pulumi.Input[str]  # the region's log key (infra.components.kms.LogsKey)
    account_id: str  # for the secrets key's explicit policy (infra.components.kms)
    # The API server's public endpoint admits these blocks only (`cluster.endpoint_public_access_cidrs`); none:
    # no public endpoint, the private one (always on) is the only way in.
    endpoint_public_access_cidrs: Sequence[str] = ()
    log_retention_days: int = 90
    # IAM roles that may read (EKS access policy AmazonEKSViewPolicy) these namespaces only: role ARN -> namespaces.
    viewers: Mapping[str, Sequence[str]] = field(default_factory=dict)


class Cluster(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ClusterArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:Cluster", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)

        role = aws.iam.Role(
            f"{name}-control-plane", assume_role_policy=service_assume_policy("eks.amazonaws.com"), opts=o
        )
        attach = aws.iam.RolePolicyAttachment(
            f"{name}-control-plane", role=role.name, policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=o
        )
        # Envelope encryption of Kubernetes secrets with a customer-managed key.
        self.secrets_key = rotating_key(
            f"{name}-secrets", f"EKS secrets encryption for {args.name}", account_key_policy(args.account_id), o
        )
        # Created before the cluster so Pulumi owns its retention instead of EKS creating it unbounded.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{args.name}/cluster",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.logs_key_arn,
            opts=o,
        )

        self.cluster = aws.eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=args.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=args.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=bool(args.endpoint_public_access_cidrs),
                public_access_cidrs=list(args.endpoint_public_access_cidrs) or None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                # The identity running `pulumi up` administers the cluster; others get access entries.
                bootstrap_cluster_creator_admin_permissions=True,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            kubernetes_network_config=aws.eks.ClusterKubernetesNetworkConfigArgs(service_ipv4_cidr=args.service_cidr),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[attach, logs]),
        )

        # IRSA: Triton's S3 client is aws-sdk-cpp 1.11.60 (Triton r24.10 to r25.01), older than the 1.11.263
        # that EKS Pod Identity needs, while web-identity federation works with it. One mechanism for all.
        issuer = self.cluster.identities.apply(oidc_issuer_url)
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], opts=o
        )
        self.oidc_issuer = issuer.apply(lambda u: u.removeprefix("https://"))

        self.node_role = aws.iam.Role(
            f"{name}-nodes", assume_role_policy=service_assume_policy("ec2.amazonaws.com"), opts=o
        )
        node_attach = [
            aws.iam.RolePolicyAttachment(f"{name}-nodes-{k}", role=self.node_role.name, policy_arn=v, opts=o)
            for k, v in NODE_POLICIES.items()
        ]
        self.cni_role = aws.iam.Role(
            f"{name}-vpc-cni",
            assume_role_policy=pulumi.Output.all(self.oidc_provider.arn, self.oidc_issuer).apply(
                lambda a: irsa_trust_policy(a[0], a[1], CNI_NAMESPACE, CNI_SERVICE_ACCOUNT)
            ),
            description=f"IRSA for {CNI_NAMESPACE}/{CNI_SERVICE_ACCOUNT} (VPC CNI)",
            opts=o,
        )
        cni_attach = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni", role=self.cni_role.name, policy_arn=CNI_POLICY, opts=o
        )

        pre = [
            aws.eks.Addon(
                f"{name}-{a}",
                cluster_name=self.cluster.name,
                addon_name=a,
                configuration_values=json.dumps(ADDON_CONFIG[a], sort_keys=True) if a in ADDON_CONFIG else None,
                # EKS annotates aws-node with the role; the role carries its policy before the CNI starts.
                service_account_role_arn=self.cni_role.arn if a == "vpc-cni" else None,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[cni_attach] if a == "vpc-cni" else []
                ),
            )
            for a in ADDONS
            if a != "coredns"
        ]
        p = args.system_pool
        # No disk size set on the system group: the launch template carries only the metadata options (IMDSv2, hop
        # limit 1) and EKS keeps its default disk.
        self.system_launch_template = node_launch_template(f"{name}-system", SYSTEM_AMI_TYPE, None, o)
        self.system_nodes = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster.name,
            node_group_name_prefix="system-",
            node_role_arn=self.node_role.arn,
            subnet_ids=args.private_subnet_ids,
            ami_type=SYSTEM_AMI_TYPE,
            instance_types=[p.instance_type],
            launch_template=node_group_launch_template(self.system_launch_template),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=p.min, desired_size=p.desired, max_size=p.max),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=SYSTEM_LABELS,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[*node_attach, cni_attach, *pre],
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )
        aws.eks.Addon(
            f"{name}-coredns",
            cluster_name=self.cluster.name,
            addon_name="coredns",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.system_nodes]),
        )

        # Read-only access entries (authentication_mode API: no aws-auth ConfigMap), each scoped to its namespaces.
        for i, (principal, namespaces) in enumerate(sorted(args.viewers.items())):
            entry = aws.eks.AccessEntry(
                f"{name}-viewer-{i}", cluster_name=self.cluster.name, principal_arn=principal, type="STANDARD", opts=o
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-viewer-{i}",
                cluster_name=self.cluster.name,
                principal_arn=principal,
                policy_arn=VIEW_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(
                    type="namespace", namespaces=sorted(namespaces)
                ),
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[entry]),
            )

        self.name = self.cluster.name
        self.arn = self.cluster.arn
        self.endpoint = self.cluster.endpoint
        # EKS reports both once the cluster exists (the provider types them as optional).
        self.ca_data = cast("pulumi.Output[str]", self.cluster.certificate_authority.apply(lambda c: c.data))
        self.security_group_id = cast(
            "pulumi.Output[str]", self.cluster.vpc_config.apply(lambda v: v.cluster_security_group_id)
        )
        self.node_ready = [*node_attach, cni_attach, *pre]
        self.register_outputs(
            {
                "name": self.name,
                "arn": self.arn,
                "endpoint": self.endpoint,
                "oidc_provider_arn": self.oidc_provider.arn,
                "security_group_id": self.security_group_id,
            }
        )
