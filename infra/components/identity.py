"""Least-privilege identities for Kubernetes service accounts (IRSA) and the policies they carry.

IRSA rather than EKS Pod Identity: Triton reads S3 through aws-sdk-cpp 1.11.60 (Triton r24.10 to r25.01),
which predates Pod Identity support (1.11.263) but handles web-identity federation (users run Triton on EKS
with IRSA, triton-inference-server/server#8090, given AWS_DEFAULT_REGION, which the Deployment sets). Each role trusts
exactly one service account of one cluster, and each policy names exactly the resources it needs.

"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


def irsa_trust_policy(oidc_provider_arn: str, issuer: str, namespace: str, service_account: str) -> str:
    """Only `system:serviceaccount:<namespace>:<sa>` of this cluster's issuer may assume the role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ],
        },
        sort_keys=True,
    )


def kms_via_s3(regions: str | list[str]) -> dict:
    """A KMS grant usable only through S3 in `regions`: the key decrypts the bucket's objects for this role, but the
    role cannot call kms:Decrypt on the key directly (with a ciphertext obtained some other way)."""
    services = [f"s3.{r}.amazonaws.com" for r in ([regions] if isinstance(regions, str) else sorted(set(regions)))]
    return {"StringEquals": {"kms:ViaService": services[0] if len(services) == 1 else services}}


def model_reader_policy(bucket_arn: str, key_arn: str, region: str | None = None) -> str:
    """Triton's rights: list and read the artifact bucket (current objects, and the earlier object versions a
    restore's fetch pins name, see infra.names.pins_key), decrypt with its key through S3 in the bucket's region
    (by default the key's region: the bucket and its key live in the same region). Nothing else, no writes."""
    region = region or key_arn.split(":")[3]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ListArtifacts", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
                {
                    "Sid": "ReadArtifacts",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                    "Resource": f"{bucket_arn}/*",
                },
                {
                    "Sid": "DecryptArtifacts",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": key_arn,
                    "Condition": kms_via_s3(region),
                },
            ],
        },
        sort_keys=True,
    )


def target_registrar_policy(target_group_arn: str | list[str]) -> str:
    """The AWS Load Balancer Controller here only reconciles the Triton TargetGroupBindings: it may describe
    (ELB and EC2 describe calls do not support resource scoping) and register/deregister pod IPs in exactly their
    target groups. It cannot create load balancers, target groups or security-group rules: Pulumi owns those."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Describe",
                    "Effect": "Allow",
                    "Resource": "*",
                    "Action": [
                        "elasticloadbalancing:DescribeLoadBalancers",
                        "elasticloadbalancing:DescribeListeners",
                        "elasticloadbalancing:DescribeTargetGroups",
                        "elasticloadbalancing:DescribeTargetGroupAttributes",
                        "elasticloadbalancing:DescribeTargetHealth",
                        "elasticloadbalancing:DescribeTags",
                        "ec2:DescribeAvailabilityZones",
                        "ec2:DescribeInstances",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSecurityGroups",
                        "ec2:DescribeSubnets",
                        "ec2:DescribeVpcs",
                    ],
                },
                {
                    "Sid": "RegisterPods",
                    "Effect": "Allow",
                    "Resource": target_group_arn,
                    "Action": [
                        "elasticloadbalancing:RegisterTargets",
                        "elasticloadbalancing:DeregisterTargets",
                    ],
                },
            ],
        },
        sort_keys=True,
    )


def node_autoscaler_policy(cluster_name: str) -> str:
    """Cluster autoscaler: describe calls (which take no resource scoping, but this cluster's node groups), and
    resize/terminate only ASGs tagged as this cluster's (EKS managed node groups tag their ASGs
    `k8s.io/cluster-autoscaler/<cluster>=owned`)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Describe",
                    "Effect": "Allow",
                    "Resource": "*",
                    "Action": [
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                    ],
                },
                {
                    # The only describe call with a resource to scope: this cluster's node groups.
                    "Sid": "DescribeOwnNodegroups",
                    "Effect": "Allow",
                    "Resource": f"arn:aws:eks:*:*:nodegroup/{cluster_name}/*/*",
                    "Action": "eks:DescribeNodegroup",
                },
                {
                    "Sid": "ScaleOwnGroups",
                    "Effect": "Allow",
                    "Resource": "*",
                    "Action": [
                        "autoscaling:SetDesiredCapacity",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                    ],
                    "Condition": {
                        "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
                    },
                },
            ],
        },
        sort_keys=True,
    )


@dataclass
class ServiceAccountRoleArgs:
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]  # without https://
    namespace: str
    service_account: str
    policy: pulumi.Input[str]  # JSON policy document


class ServiceAccountRole(pulumi.ComponentResource):
    """An IAM role assumable by exactly one Kubernetes service account, with one inline policy."""

    def __init__(
        self,
        name: str,
        args: ServiceAccountRoleArgs,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("reco-dr:regional:ServiceAccountRole", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda a: irsa_trust_policy(a[0], a[1], args.namespace, args.service_account)
        )
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust,
            description=f"IRSA for {args.namespace}/{args.service_account}",
            opts=o,
        )
        self.policy = aws.iam.RolePolicy(f"{name}-policy", role=self.role.id, policy=args.policy, opts=o)
        self.arn = self.role.arn
        self.register_outputs({"role_arn": self.arn})
