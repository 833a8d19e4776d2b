"""What the regional cluster provides for model_build's TensorRT engine Jobs (model_build/k8s_jobs.py):
namespace `model-build`, service account `engine-builder` with an IRSA role, and ConfigMap
`reco-dr-artifacts` naming the regional bucket. Engines must be built on a GPU of their compute capability,
so the Jobs run on this region's GPU pools; this component only grants them what they touch in the bucket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.components.identity import ServiceAccountRole, ServiceAccountRoleArgs, kms_via_s3
from infra.config import Model

NAMESPACE = "model-build"
SERVICE_ACCOUNT = "engine-builder"
CONFIGMAP = "reco-dr-artifacts"


def engine_builder_policy(bucket_arn: str, key_arn: str, model: Model) -> str:
    """Read any published version of the model and the timing caches; write only engines, engine records and
    timing caches (never the graph, the manifest or Triton configs, which the publish step owns), and never into a
    version this region serves (`version`, `canary_version`): engines are added before a version serves."""
    serving = [v for v in (model.version, model.canary_version) if v]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "List",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    "Condition": {"StringLike": {"s3:prefix": [f"{model.name}/*", "timing-cache/*"]}},
                },
                {
                    "Sid": "Read",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": [f"{bucket_arn}/{model.name}/*", f"{bucket_arn}/timing-cache/*"],
                },
                {
                    "Sid": "WriteEngines",
                    "Effect": "Allow",
                    "Action": "s3:PutObject",
                    "Resource": [
                        f"{bucket_arn}/{model.name}/*/{model.name}_trt/1/*",
                        f"{bucket_arn}/{model.name}/*/engine_records/*",
                        f"{bucket_arn}/timing-cache/*",
                    ],
                },
                {
                    "Sid": "NoWritesToServingVersions",
                    "Effect": "Deny",
                    "Action": "s3:PutObject",
                    "Resource": [f"{bucket_arn}/{model.name}/{v}/*" for v in serving],
                },
                {
                    "Sid": "Kms",
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": key_arn,
                    # Only through S3 in the key's (and bucket's) region: no direct use of the key.
                    "Condition": kms_via_s3(key_arn.split(":")[3]),
                },
            ],
        },
        sort_keys=True,
    )


def manifests(bucket: str, role_arn: str) -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SERVICE_ACCOUNT,
                "namespace": NAMESPACE,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
            "data": {"bucket": bucket},
        },
    ]


@dataclass
class EngineBuildAccessArgs:
    model: Model
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]


class EngineBuildAccess(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: EngineBuildAccessArgs,
        aws_provider: aws.Provider,
        k8s_provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("reco-dr:regional:EngineBuildAccess", name, None, opts)
        policy = pulumi.Output.all(args.bucket_arn, args.key_arn).apply(
            lambda a: engine_builder_policy(a[0], a[1], args.model)
        )
        role = ServiceAccountRole(
            f"{name}-irsa",
            ServiceAccountRoleArgs(
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy=policy,
            ),
            aws_provider,
            pulumi.ResourceOptions(parent=self),
        )
        ms = pulumi.Output.all(args.bucket_name, role.arn).apply(lambda a: manifests(a[0], a[1]))
        ns = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": NAMESPACE}, opts=pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        )
        o = pulumi.ResourceOptions(parent=self, provider=k8s_provider, depends_on=[ns])
        k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=ms.apply(lambda m: m[1]["metadata"]), opts=o)
        k8s.core.v1.ConfigMap(
            f"{name}-bucket",
            metadata=ms.apply(lambda m: m[2]["metadata"]),
            data=ms.apply(lambda m: m[2]["data"]),
            opts=o,
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
