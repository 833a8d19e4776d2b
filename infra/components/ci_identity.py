"""The identities GitHub Actions uses: AWS roles assumed through GitHub's OIDC provider, and the Pulumi Cloud teams
whose tokens the same OIDC subjects are exchanged for. Declared by the CI-identity program (infra/ci/), which an
administrator applies; the workflows never apply it (the deploy role is denied every change to it, below).

Who may assume what: the `sub` claim of GitHub's OIDC token names the repository and what the job runs for, and
each role's trust policy admits exact subjects only (StringEquals, never StringLike or a wildcard):

    role / Pulumi team            subjects (repo = the configured `<owner>/<repo>`)           workflows
    reco-dr-ci-preview            repo:<repo>:pull_request, repo:<repo>:ref:refs/heads/main    preview.yml, drift.yml,
                                                                                              readiness.yml
    reco-dr-ci-deploy-<env>       repo:<repo>:environment:<env>                               up.yml, jobs of <env>

A pull request's job (any branch of this repository; forks get no OIDC token) can therefore only ever obtain the
read-only role, whatever its workflow file says: `environment:<env>` is the subject of jobs that name a GitHub
environment, and the `staging`/`prod` environments admit `main` only (their deployment-branch rule, set in the
repository's settings: that rule is what makes the environment subject mean "main, reviewed"). The audience is
`sts.amazonaws.com` for AWS; Pulumi Cloud checks `urn:pulumi:org:<org>` on its side.

Scopes:
- preview: Describe/Get/List on the services the fleet declares resources in (SERVICES), which is what
  `pulumi preview --refresh` reads; no object data (no s3:GetObject, no kms:Decrypt, no log events). The state
  lives in Pulumi Cloud, read with the preview team's token (permission set "Stack Read": state, previews, secrets'
  decryption), not with AWS rights.
  Beside it, what `python -m drills readiness` reads that a refresh does not (readiness.yml runs it on main with this
  role, `readiness_read_policy`): S3 replication metrics, and the served manifests and engine records, nothing else
  of the artifact buckets (s3:GetObject on those keys of the fleet's buckets, kms:Decrypt only through S3 for those
  buckets). Pull requests get these too (one role for both subjects); manifests carry hashes and versions, no model.
- deploy-<env>: everything on those services, IAM limited to roles, role policies, OIDC providers and the
  service-linked roles EKS and ELB create; no IAM users or access keys; only the fleet's regions (global services
  aside); and an explicit deny of every change to the CI identity itself (the roles `reco-dr-ci-*` and GitHub's
  OIDC provider), so a merged workflow cannot widen its own trust or rights. The deploy role is per environment
  because each GitHub environment is its own subject; its rights are account-wide for those services (Pulumi's
  auto-named resources carry no name prefix to scope them by).

The documents are pure functions over plain strings, so tests read exactly what IAM will evaluate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components.replication import kms_context
from infra.names import GITHUB_OIDC_ISSUER, PREVIEW_ROLE, ROLE_PREFIX, deploy_role_name

GITHUB_OIDC_HOST = GITHUB_OIDC_ISSUER.removeprefix("https://")
GITHUB_OIDC_URL = f"https://{GITHUB_OIDC_HOST}"
STS_AUDIENCE = "sts.amazonaws.com"  # aws-actions/configure-aws-credentials' default audience
MAIN_REF = "refs/heads/main"

# Seconds a session may last: a preview job's timeout is 30 minutes; an `up` job's is 120 (an EKS cluster and its
# node groups), and credentials that expire halfway through `pulumi up` leave pending operations in the state.
PREVIEW_SESSION_SECONDS = 3600
DEPLOY_SESSION_SECONDS = 7200

# The pulumi_aws modules the fleet's programs declare resources in -> the IAM service prefixes of the API calls
# that create, read and change them (`aws.cloudwatch` holds both metric alarms and log groups).
# tests/infra/test_ci_identity.py scans infra/ for every `aws.<module>.<Resource>(`: a new module fails there
# until it is listed here, so neither role silently lacks the rights a new resource needs.
SERVICES: dict[str, tuple[str, ...]] = {
    "cloudwatch": ("cloudwatch", "logs"),
    "ec2": ("ec2",),
    "eks": ("eks",),
    "iam": ("iam",),
    "kms": ("kms",),
    "lb": ("elasticloadbalancing",),
    "route53": ("route53",),
    "s3": ("s3",),
    "sns": ("sns",),
    "vpc": ("ec2",),
    # The load balancer's web ACL (infra/config.py LoadBalancer.waf), declared when a stack turns WAF on.
    "wafv2": ("wafv2",),
}

# What `pulumi preview --refresh` reads, per IAM service prefix: configuration and metadata, never data.
READ_ACTIONS: dict[str, tuple[str, ...]] = {
    "cloudwatch": ("cloudwatch:Describe*", "cloudwatch:List*"),
    "ec2": ("ec2:Describe*",),
    "eks": ("eks:Describe*", "eks:List*"),
    "elasticloadbalancing": ("elasticloadbalancing:Describe*",),
    "iam": ("iam:Get*", "iam:List*"),
    "kms": ("kms:Describe*", "kms:Get*", "kms:List*"),
    # Not logs:Get* (GetLogEvents reads the events themselves).
    "logs": ("logs:Describe*", "logs:List*"),
    "route53": ("route53:Get*", "route53:List*"),
    # Bucket configuration only; s3:ListBucket is what HeadBucket needs (object keys, never their contents).
    "s3": (
        "s3:GetAccelerateConfiguration",
        "s3:GetBucket*",
        "s3:GetEncryptionConfiguration",
        "s3:GetLifecycleConfiguration",
        "s3:GetReplicationConfiguration",
        "s3:ListAllMyBuckets",
        "s3:ListBucket",
    ),
    "sns": ("sns:Get*", "sns:List*"),
    # Not wafv2:Get*: GetSampledRequests returns sampled client requests, headers included.
    "wafv2": (
        "wafv2:GetIPSet",
        "wafv2:GetLoggingConfiguration",
        "wafv2:GetRuleGroup",
        "wafv2:GetWebACL",
        "wafv2:GetWebACLForResource",
        "wafv2:List*",
    ),
}

# IAM for the deploy role: the roles, role policies and OIDC providers the stacks declare (IRSA, replication, EKS
# cluster and node roles), reading the AWS managed policies they attach, and passing their roles to the services.
# Not users, groups, access keys, login profiles or managed policies of our own.
DEPLOY_IAM_ACTIONS = (
    "iam:AddClientIDToOpenIDConnectProvider",
    "iam:AttachRolePolicy",
    "iam:CreateOpenIDConnectProvider",
    "iam:CreateRole",
    "iam:DeleteOpenIDConnectProvider",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:Get*",
    "iam:List*",
    "iam:PassRole",
    "iam:PutRolePolicy",
    "iam:RemoveClientIDFromOpenIDConnectProvider",
    "iam:TagOpenIDConnectProvider",
    "iam:TagRole",
    "iam:UntagOpenIDConnectProvider",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateOpenIDConnectProviderThumbprint",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
)
# The service-linked roles AWS creates on the first cluster, node group and load balancer of an account.
SERVICE_LINKED_ROLE_SERVICES = (
    "autoscaling.amazonaws.com",
    "eks-nodegroup.amazonaws.com",
    "eks.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
)
# Services whose API is global (its calls carry no region of the fleet, or us-east-1 whatever the resource).
GLOBAL_SERVICES = ("iam", "route53", "sts")

# Keys of a published version that readiness reads (drills/adapters/s3.py current_manifest, model_build/manifest.py
# engines_available): the manifest, and the records of engines added by a build Job. Never the model files.
READINESS_OBJECT_KEYS = ("manifest.json", "engine_records/*")


# ---------------------------------------------------------------- subjects and names
def pull_request_subject(repository: str) -> str:
    return f"repo:{repository}:pull_request"


def branch_subject(repository: str, ref: str = MAIN_REF) -> str:
    return f"repo:{repository}:ref:{ref}"


def environment_subject(repository: str, environment: str) -> str:
    return f"repo:{repository}:environment:{environment}"


def preview_subjects(repository: str) -> tuple[str, ...]:
    """Pull requests of this repository (preview.yml) and main itself (drift.yml: schedules run on main)."""
    return (pull_request_subject(repository), branch_subject(repository))


def deploy_subjects(repository: str, environment: str) -> tuple[str, ...]:
    """Only jobs that name the GitHub environment `environment` (up.yml), which admits `main` only."""
    return (environment_subject(repository, environment),)


# ---------------------------------------------------------------- policy documents
def github_trust_policy(oidc_provider_arn: str, subjects: Sequence[str]) -> str:
    """Only GitHub's OIDC tokens for STS whose `sub` is exactly one of `subjects` may assume the role."""
    if not subjects:
        raise ValueError("a GitHub OIDC trust policy needs at least one subject")
    wild = [s for s in subjects if "*" in s or "?" in s]
    if wild:
        raise ValueError(f"subjects are exact, never patterns: {wild}")
    sub: str | list[str] = subjects[0] if len(subjects) == 1 else sorted(subjects)
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "GitHubActionsOidc",
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                            f"{GITHUB_OIDC_HOST}:sub": sub,
                        }
                    },
                }
            ],
        },
        sort_keys=True,
    )


def iam_prefixes(modules: Iterable[str] = SERVICES) -> list[str]:
    return sorted({p for m in modules for p in SERVICES[m]})


def read_only_policy() -> str:
    """The preview role's rights: read the configuration of every resource the stacks declare."""
    actions = sorted({a for p in iam_prefixes() for a in READ_ACTIONS[p]})
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "ReadFleetConfiguration", "Effect": "Allow", "Action": actions, "Resource": "*"}],
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class ArtifactReads:
    """One regional artifact bucket as readiness reads it: the bucket (infra.components.artifacts.bucket_name), its
    region, and the model whose version prefixes `<model>/<version>/` it serves."""

    region: str
    bucket: str
    model: str


def readiness_read_policy(account_id: str, artifacts: Sequence[ArtifactReads]) -> str:
    """What `python -m drills readiness` reads beyond `read_only_policy` (drills/readiness/view.py AwsFleetView): S3
    replication metrics (CloudWatch has no resource-level permissions for them, so the regions bound them), the served
    manifest and engine records of each bucket's model, and their decryption, only through S3 for those buckets
    (SSE-KMS with S3 Bucket Keys: the encryption context is the bucket's ARN). EKS node groups, capacity reservations,
    the Route 53 health checks and the metric list are Describe/Get/List calls the refresh policy already allows."""
    if not artifacts:
        raise ValueError("the readiness policy needs the fleet's artifact buckets")
    regions = sorted({a.region for a in artifacts})
    statements: list[dict] = [
        {
            "Sid": "ReadinessReplicationMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:GetMetricStatistics",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": regions}},
        },
        {
            "Sid": "ReadinessManifests",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": sorted(
                f"arn:aws:s3:::{a.bucket}/{a.model}/*/{key}" for a in artifacts for key in READINESS_OBJECT_KEYS
            ),
        },
    ]
    for region in regions:
        buckets = sorted({f"arn:aws:s3:::{a.bucket}" for a in artifacts if a.region == region})
        statements.append(
            {
                "Sid": "ReadinessDecrypt" + "".join(p.capitalize() for p in region.split("-")),
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": f"arn:aws:kms:{region}:{account_id}:key/*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [c for b in buckets for c in kms_context(b)]},
                },
            }
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def ci_identity_arns() -> list[str]:
    """The CI identity's own IAM resources, in any account of the partition."""
    return [f"arn:aws:iam::*:role/{ROLE_PREFIX}*", f"arn:aws:iam::*:oidc-provider/{GITHUB_OIDC_HOST}"]


def deploy_policy(regions: Sequence[str]) -> str:
    """A deploy role's rights: `pulumi up` of the fleet's stacks, and nothing on the CI identity itself."""
    if not regions:
        raise ValueError("the deploy policy needs the fleet's regions")
    services = [p for p in iam_prefixes() if p != "iam"]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "FleetServices",
                    "Effect": "Allow",
                    "Action": [f"{p}:*" for p in services],
                    "Resource": "*",
                },
                {"Sid": "FleetRoles", "Effect": "Allow", "Action": list(DEPLOY_IAM_ACTIONS), "Resource": "*"},
                {
                    "Sid": "ServiceLinkedRoles",
                    "Effect": "Allow",
                    "Action": "iam:CreateServiceLinkedRole",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"iam:AWSServiceName": list(SERVICE_LINKED_ROLE_SERVICES)}},
                },
                {
                    # Reads stay allowed; every change, PassRole included, is denied whatever else allows it.
                    "Sid": "NeverTheCiIdentity",
                    "Effect": "Deny",
                    "NotAction": ["iam:Get*", "iam:List*"],
                    "Resource": ci_identity_arns(),
                },
                {
                    "Sid": "OnlyFleetRegions",
                    "Effect": "Deny",
                    "NotAction": [f"{s}:*" for s in GLOBAL_SERVICES],
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"aws:RequestedRegion": sorted(set(regions))}},
                },
            ],
        },
        sort_keys=True,
    )


# ---------------------------------------------------------------- Pulumi Cloud
def pulumi_cloud_teams(
    repository: str, org: str, stacks_by_env: dict[str, Sequence[str]], ci_stacks: Sequence[str]
) -> dict[str, dict]:
    """The Pulumi Cloud side of the same design, for an administrator to set up (Settings -> Access Management):
    a team per role, its stack permission, and the OIDC issuer policy (token type `team`) that admits exactly the
    role's subjects for that team. The workflows request these teams' tokens with pulumi/auth-actions; a subject
    outside a team's policy gets no token, so a pull request can never obtain a deploy team's token. Team tokens
    through OIDC need the Enterprise or Business Critical edition."""
    audience = f"urn:pulumi:org:{org}"
    teams: dict[str, dict] = {
        PREVIEW_ROLE: {
            "stack_permission": "Stack Read",
            "stacks": sorted({*(s for ss in stacks_by_env.values() for s in ss), *ci_stacks}),
            "oidc_policy": {"aud": audience, "sub": list(preview_subjects(repository))},
        }
    }
    for env, stacks in sorted(stacks_by_env.items()):
        teams[deploy_role_name(env)] = {
            "stack_permission": "Stack Write",
            "stacks": sorted(stacks),
            "oidc_policy": {"aud": audience, "sub": list(deploy_subjects(repository, env))},
        }
    return teams


# ---------------------------------------------------------------- the component
@dataclass(frozen=True)
class CiIdentityArgs:
    repository: str  # `<owner>/<repo>` as the OIDC `sub` claim spells it (validated by infra.config.CiConfig)
    environments: tuple[str, ...]  # GitHub environments = the fleet's environments
    regions: tuple[str, ...]  # every region the fleet's stacks touch
    oidc_provider_arn: str | None = None  # the account's existing GitHub provider; None: declare it here
    # The artifact buckets readiness reads (readiness.yml) in account `account_id`; none: no readiness policy.
    readiness: tuple[ArtifactReads, ...] = ()
    account_id: str | None = None


class CiIdentity(pulumi.ComponentResource):
    """GitHub's OIDC provider (or a reference to the account's), the preview role and one deploy role per
    environment, each with its inline policy."""

    def __init__(
        self, name: str, args: CiIdentityArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:ci:CiIdentity", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        if args.oidc_provider_arn is None:
            # One per account and URL: other repositories' roles may trust it too, so it is protected.
            self.oidc_provider: aws.iam.OpenIdConnectProvider | None = aws.iam.OpenIdConnectProvider(
                f"{name}-github",
                url=GITHUB_OIDC_URL,
                client_id_lists=[STS_AUDIENCE],
                opts=pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(protect=True)),
            )
            provider_arn: pulumi.Output[str] = self.oidc_provider.arn
        else:
            self.oidc_provider = None
            provider_arn = pulumi.Output.from_input(args.oidc_provider_arn)
        self.oidc_provider_arn = provider_arn

        def trusting(subjects: tuple[str, ...]) -> pulumi.Output[str]:
            return provider_arn.apply(lambda arn: github_trust_policy(arn, subjects))

        self.preview_role = aws.iam.Role(
            f"{name}-preview",
            name=PREVIEW_ROLE,
            assume_role_policy=trusting(preview_subjects(args.repository)),
            max_session_duration=PREVIEW_SESSION_SECONDS,
            description=f"pulumi preview of {args.repository}: pull requests, drift and readiness checks, read-only",
            opts=o,
        )
        aws.iam.RolePolicy(f"{name}-preview-read", role=self.preview_role.id, policy=read_only_policy(), opts=o)
        if args.readiness:
            if args.account_id is None:
                raise ValueError("the readiness policy needs the account id (its buckets' keys are in it)")
            # A policy of its own: the refresh policy above stays configuration-only, this one names every object
            # read it allows.
            aws.iam.RolePolicy(
                f"{name}-preview-readiness",
                role=self.preview_role.id,
                policy=readiness_read_policy(args.account_id, args.readiness),
                opts=o,
            )

        self.deploy_roles: dict[str, aws.iam.Role] = {}
        for env in args.environments:
            role = aws.iam.Role(
                f"{name}-deploy-{env}",
                name=deploy_role_name(env),
                assume_role_policy=trusting(deploy_subjects(args.repository, env)),
                max_session_duration=DEPLOY_SESSION_SECONDS,
                description=f"pulumi up of {args.repository}'s {env} stacks, GitHub environment {env} only",
                opts=o,
            )
            aws.iam.RolePolicy(f"{name}-deploy-{env}-policy", role=role.id, policy=deploy_policy(args.regions), opts=o)
            self.deploy_roles[env] = role

        self.register_outputs(
            {
                "oidc_provider_arn": provider_arn,
                "preview_role_arn": self.preview_role.arn,
                "deploy_role_arns": {env: r.arn for env, r in self.deploy_roles.items()},
            }
        )
