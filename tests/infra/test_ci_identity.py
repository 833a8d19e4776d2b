"""The CI identity program (infra/ci/) under Pulumi mocks: who may assume which role, what each role may do, and
the workflows held to the roles and Pulumi teams it declares.

Trust policies are judged by evaluating them (`admits`: StringEquals and StringLike as IAM evaluates them) on the
OIDC claims a job would present, so "a pull request cannot assume the deploy role" is checked as IAM would decide
it, not only as the JSON reads.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import mocks as m
from infra import pulumi_runtime
from infra.ci import program
from infra.components import ci_identity as ci
from infra.config import (
    CI_PROJECT,
    ROOT,
    ConfigError,
    GlobalConfig,
    RegionConfig,
    envs,
    list_stacks,
    load_stack,
    parse_ci,
    read_ci_stack_file,
)
from infra.names import role_arn

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
REPO = "example-org/reco-dr"  # infra/ci/Pulumi.ci.yaml
HOST = "token.actions.githubusercontent.com"
WORKFLOWS = ROOT / ".github" / "workflows"


# ---------------------------------------------------------------- running the program
def run_ci(values: dict[str, Any] | None = None, stack: str = "ci") -> m.Plan:
    """infra/ci/program.py main() as the engine runs it, under infra.mocks (account m.ACCOUNT_ID)."""
    values = read_ci_stack_file(stack) if values is None else values
    mocks = m.RecordingMocks(stack)
    plan = m.Plan(stack, mocks.resources, mocks.calls)
    pulumi_runtime.reset()
    pulumi.runtime.set_all_config({f"{CI_PROJECT}:{k}": str(v) for k, v in values.items()})
    # infra.mocks' monitor tells the mocks each resource's full URN, as run_program does for the fleet.
    root = pulumi_runtime.install_mocks(mocks, project=CI_PROJECT, stack=stack, monitor=m._RecordingMonitor(mocks))
    pulumi.runtime.register_stack_transformation(mocks.capture_options)
    pulumi_runtime.run_program(program.main)
    plan.outputs = pulumi_runtime.resolve(dict(root.outputs)) if root is not None else {}
    return plan


@pytest.fixture(scope="module")
def plan() -> m.Plan:
    return run_ci()


def role_named(plan: m.Plan, name: str) -> m.ResourceRecord:
    found = [r for r in plan.of_type(ROLE) if r.inputs.get("name") == name]
    assert len(found) == 1, f"roles named {name}: {[r.name for r in found]}"
    return found[0]


def trust_of(plan: m.Plan, name: str) -> dict:
    return json.loads(role_named(plan, name).inputs["assumeRolePolicy"])


def policies_of(plan: m.Plan, name: str) -> dict[str, dict]:
    """{RolePolicy resource name: document} of role `name`'s inline policies."""
    role = role_named(plan, name)
    return {p.name: json.loads(p.inputs["policy"]) for p in plan.of_type(ROLE_POLICY) if p.inputs["role"] == role.id}


# The preview role's two inline policies: what a refresh reads, and what readiness reads beside it.
PREVIEW_READ, PREVIEW_READINESS = "ci-preview-read", "ci-preview-readiness"


def policy_of(plan: m.Plan, name: str, policy: str | None = None) -> dict:
    """Role `name`'s inline policy (the one it has, or the one named `policy`)."""
    found = policies_of(plan, name)
    if policy is None:
        assert len(found) == 1, f"inline policies of {name}: {sorted(found)}"
        return next(iter(found.values()))
    assert policy in found, f"inline policies of {name}: {sorted(found)}"
    return found[policy]


# ---------------------------------------------------------------- IAM evaluation (the parts these policies use)
def _values(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _condition_holds(op: str, key: str, expected: str | list[str], context: dict[str, str]) -> bool:
    if key not in context:
        return False  # a missing key fails StringEquals and StringLike
    actual = context[key]
    if op == "StringEquals":
        return actual in _values(expected)
    if op == "StringLike":
        return any(fnmatch.fnmatchcase(actual, p) for p in _values(expected))
    if op == "StringNotEquals":
        return actual not in _values(expected)
    raise AssertionError(f"no evaluation for condition operator {op}: add it before using it in a policy")


def _conditions_hold(statement: dict, context: dict[str, str]) -> bool:
    return all(
        _condition_holds(op, key, expected, context)
        for op, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )


def admits(trust: dict, provider_arn: str, claims: dict[str, str]) -> bool:
    """Would IAM let a GitHub OIDC token with `claims` (sub, aud) assume a role with this trust policy?"""
    context = {f"{HOST}:{k}": v for k, v in claims.items()}
    allowed = False
    for st in trust["Statement"]:
        if "sts:AssumeRoleWithWebIdentity" not in _values(st["Action"]):
            continue
        if st.get("Principal") != {"Federated": provider_arn}:
            continue
        if _conditions_hold(st, context):
            if st["Effect"] == "Deny":
                return False
            allowed = True
    return allowed


def _matches(patterns: str | list[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in _values(patterns))


def allows(policy: dict, action: str, resource: str = "*", context: dict[str, str] | None = None) -> bool:
    """Identity-policy evaluation: an explicit Deny wins, then any Allow (Action/NotAction, Resource, Condition)."""
    context = context or {}
    allowed = False
    for st in policy["Statement"]:
        in_action = _matches(st["Action"], action) if "Action" in st else not _matches(st["NotAction"], action)
        if not (in_action and _matches(st["Resource"], resource) and _conditions_hold(st, context)):
            continue
        if st["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def github(sub: str, aud: str = ci.STS_AUDIENCE) -> dict[str, str]:
    return {"sub": sub, "aud": aud}


# ---------------------------------------------------------------- trust: exact subjects
def test_one_github_oidc_provider_for_sts_protected(plan):
    provider = plan.one(OIDC)
    assert provider.inputs["url"] == f"https://{HOST}"
    assert provider.inputs["clientIdLists"] == [ci.STS_AUDIENCE]
    assert provider.options.get("protect") is True, "other repositories' roles may trust the account's provider"
    assert plan.outputs["oidc_provider_arn"] == f"arn:aws:iam::{m.ACCOUNT_ID}:oidc-provider/{HOST}"


def test_roles_one_preview_and_one_deploy_per_environment(plan):
    names = sorted(r.inputs["name"] for r in plan.of_type(ROLE))
    assert names == sorted([ci.PREVIEW_ROLE, *(ci.deploy_role_name(e) for e in envs())])
    assert set(plan.outputs["deploy_role_arns"]) == set(envs()) == {"prod", "staging"}
    for name in names:
        assert role_named(plan, name).state["arn"] == role_arn(m.ACCOUNT_ID, name)


def _the_statement(trust: dict) -> dict:
    assert len(trust["Statement"]) == 1, trust
    return trust["Statement"][0]


@pytest.mark.parametrize(
    "role, subjects",
    [
        (ci.PREVIEW_ROLE, [f"repo:{REPO}:pull_request", f"repo:{REPO}:ref:refs/heads/main"]),
        ("reco-dr-ci-deploy-prod", f"repo:{REPO}:environment:prod"),
        ("reco-dr-ci-deploy-staging", f"repo:{REPO}:environment:staging"),
    ],
)
def test_trust_policy_conditions_are_exact(plan, role, subjects):
    st = _the_statement(trust_of(plan, role))
    assert st["Effect"] == "Allow"
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Principal"] == {"Federated": plan.outputs["oidc_provider_arn"]}
    # StringEquals only: no StringLike, no ForAnyValue/ForAllValues, no other key than aud and sub.
    assert st["Condition"] == {"StringEquals": {f"{HOST}:aud": "sts.amazonaws.com", f"{HOST}:sub": subjects}}
    assert not any("*" in s or "?" in s for s in _values(st["Condition"]["StringEquals"][f"{HOST}:sub"]))


def test_trust_policies_use_no_pattern_operator_anywhere(plan):
    for r in plan.of_type(ROLE):
        text = r.inputs["assumeRolePolicy"]
        assert "StringLike" not in text and "ForAnyValue" not in text and "ForAllValues" not in text, r.name
        subs = _values(_the_statement(json.loads(text))["Condition"]["StringEquals"][f"{HOST}:sub"])
        assert all(s.startswith(f"repo:{REPO}:") for s in subs), subs


# Subjects of jobs that must never get environment {env}'s deploy role.
NOT_THE_ENVIRONMENT = [
    "repo:{repo}:pull_request",  # any pull request of this repository
    "repo:{repo}:ref:refs/heads/main",  # main without the environment's rules (drift)
    "repo:{repo}:ref:refs/heads/feature",  # a pushed branch
    "repo:{repo}:ref:refs/tags/v1.0.0",  # a tag
    "repo:{repo}:environment:{env}-x",  # another environment whose name starts the same
    "repo:{repo}:environment:{ENV}",  # StringEquals is case-sensitive
    "repo:{repo}:environment:{env}:extra",
    "repo:other-org/reco-dr:environment:{env}",  # another owner's repository of the same name
    "repo:example-org/reco-dr-fork:environment:{env}",  # a repository whose name starts the same
    "repo:example-org/other:environment:{env}",  # another repository of the owner
    "repo:{repo}:environment:{other}",  # the other environment
]


def test_a_pull_request_or_another_repository_cannot_assume_the_deploy_role(plan):
    provider = plan.outputs["oidc_provider_arn"]
    for env in envs():
        trust = trust_of(plan, ci.deploy_role_name(env))
        assert admits(trust, provider, github(f"repo:{REPO}:environment:{env}"))
        (other,) = set(envs()) - {env}
        for template in NOT_THE_ENVIRONMENT:
            sub = template.format(repo=REPO, env=env, ENV=env.upper(), other=other)
            assert not admits(trust, provider, github(sub)), f"{ci.deploy_role_name(env)} admits {sub}"
        # The right subject with another audience (a token minted for another relying party) is refused too.
        assert not admits(trust, provider, github(f"repo:{REPO}:environment:{env}", aud="urn:pulumi:org:x"))


def test_the_preview_role_admits_pull_requests_and_main_only(plan):
    provider = plan.outputs["oidc_provider_arn"]
    trust = trust_of(plan, ci.PREVIEW_ROLE)
    assert admits(trust, provider, github(f"repo:{REPO}:pull_request"))
    assert admits(trust, provider, github(f"repo:{REPO}:ref:refs/heads/main"))
    for sub in (
        "repo:other-org/reco-dr:pull_request",
        "repo:example-org/reco-dr-fork:pull_request",
        f"repo:{REPO}:ref:refs/heads/feature",
        f"repo:{REPO}:environment:prod",
    ):
        assert not admits(trust, provider, github(sub)), sub
    # A token from another OIDC provider with the right claims is not this role's principal.
    assert not admits(trust, "arn:aws:iam::123456789012:oidc-provider/example.com", github(f"repo:{REPO}:pull_request"))


def test_an_existing_provider_is_referenced_not_declared():
    arn = f"arn:aws:iam::{m.ACCOUNT_ID}:oidc-provider/{HOST}"
    plan = run_ci({**read_ci_stack_file("ci"), "github_oidc_provider_arn": arn})
    assert plan.of_type(OIDC) == []
    assert plan.outputs["oidc_provider_arn"] == arn
    for r in plan.of_type(ROLE):
        assert _the_statement(json.loads(r.inputs["assumeRolePolicy"]))["Principal"] == {"Federated": arn}


def test_the_immutable_subject_form_is_used_as_given():
    repo = "example-org@123456/reco-dr@789012"
    plan = run_ci({**read_ci_stack_file("ci"), "github_repository": repo})
    st = _the_statement(trust_of(plan, "reco-dr-ci-deploy-prod"))
    assert st["Condition"]["StringEquals"][f"{HOST}:sub"] == f"repo:{repo}:environment:prod"


def test_trust_policy_refuses_patterns_and_nothing():
    with pytest.raises(ValueError, match="exact"):
        ci.github_trust_policy("arn", ["repo:example-org/*:pull_request"])
    with pytest.raises(ValueError, match="at least one"):
        ci.github_trust_policy("arn", [])


def test_every_resource_has_the_explicit_provider(plan):
    for r in plan.resources:
        if r.custom and not r.type.startswith("pulumi:providers:"):
            p = plan.provider_of(r)
            assert p is not None and p.type == "pulumi:providers:aws", f"{r.type} {r.name}"
            assert p.inputs["region"] == "us-east-1"


# ---------------------------------------------------------------- what each role may do
DATA_READS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "kms:Decrypt",
    "logs:GetLogEvents",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
    "wafv2:GetSampledRequests",
)
WRITES = (
    "ec2:CreateVpc",
    "eks:UpdateClusterConfig",
    "iam:PutRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:PassRole",
    "s3:PutBucketPolicy",
    "s3:PutObject",
    "route53:ChangeResourceRecordSets",
    "kms:ScheduleKeyDeletion",
)
# Neither role, ever: other roles, IAM users and their keys, policies of its own.
NEVER = (
    "sts:AssumeRole",
    "iam:CreateUser",
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:CreatePolicy",
    "iam:AttachUserPolicy",
    "organizations:LeaveOrganization",
)


def test_the_preview_role_reads_configuration_only(plan):
    assert set(policies_of(plan, ci.PREVIEW_ROLE)) == {PREVIEW_READ, PREVIEW_READINESS}
    policy = policy_of(plan, ci.PREVIEW_ROLE, PREVIEW_READ)
    actions = [a for st in policy["Statement"] for a in _values(st["Action"])]
    assert all(st["Effect"] == "Allow" and st["Resource"] == "*" for st in policy["Statement"])
    for a in actions:
        verb = a.partition(":")[2]
        assert re.fullmatch(r"(Describe|Get|List)\w*\*?", verb), f"{a} is not a read"
    for action in DATA_READS + WRITES + NEVER:
        assert not allows(policy, action), f"the preview role may {action}"
    # What a refresh of the fleet reads.
    for action in (
        "ec2:DescribeVpcs",
        "eks:DescribeCluster",
        "elasticloadbalancing:DescribeListeners",
        "iam:GetRole",
        "kms:GetKeyPolicy",
        "s3:GetBucketVersioning",
        "s3:GetReplicationConfiguration",
        "route53:ListResourceRecordSets",
        "cloudwatch:DescribeAlarms",
        "logs:DescribeLogGroups",
        "sns:GetTopicAttributes",
    ):
        assert allows(policy, action), f"the preview role cannot {action}"


def _artifacts() -> dict[str, tuple[str, str]]:
    """{bucket ARN: (region, model)} of every regional stack, from the stack files and the program's bucket names."""
    from infra.components.artifacts import bucket_name

    out = {}
    for s in list_stacks():
        cfg = load_stack(s)
        if isinstance(cfg, RegionConfig):
            out[f"arn:aws:s3:::{bucket_name(s, m.ACCOUNT_ID)}"] = (cfg.region, cfg.model.name)
    return out


def test_the_preview_role_reads_what_readiness_reads_and_no_more(plan):
    """`python -m drills readiness` (readiness.yml, this role) calls, per regional stack (drills/readiness/view.py):
    EKS node groups and cluster, EC2 capacity reservations, CloudWatch replication metrics, Route 53 health checks,
    and the bucket's served manifest and engine records through S3 with the bucket's key."""
    policies = policies_of(plan, ci.PREVIEW_ROLE)
    readiness = policies[PREVIEW_READINESS]

    def either(action: str, resource: str = "*", context: dict[str, str] | None = None) -> bool:
        return any(allows(p, action, resource, context) for p in policies.values())

    artifacts = _artifacts()
    assert len(artifacts) == len([s for s in list_stacks() if isinstance(load_stack(s), RegionConfig)]) >= 5
    for action in (
        "eks:ListNodegroups",
        "eks:DescribeNodegroup",
        "eks:DescribeCluster",
        "ec2:DescribeCapacityReservations",
        "cloudwatch:ListMetrics",
        "route53:GetHealthCheck",
    ):
        assert either(action), f"readiness cannot {action}"
    for bucket, (region, model) in artifacts.items():
        in_region = {"aws:RequestedRegion": region}
        assert either("cloudwatch:GetMetricStatistics", context=in_region)
        for key in (f"{model}/3.2.0/manifest.json", f"{model}/3.2.0/engine_records/ranker_sm90.json"):
            assert allows(readiness, "s3:GetObject", f"{bucket}/{key}"), f"{bucket}/{key}"
        via_s3 = {"kms:ViaService": f"s3.{region}.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": bucket}
        key_arn = f"arn:aws:kms:{region}:{m.ACCOUNT_ID}:key/0123abcd"
        assert allows(readiness, "kms:Decrypt", key_arn, via_s3), f"{bucket}: decrypt through S3 with its key"
        # Never the model files, the pointers, another bucket's objects, nor a direct or foreign decrypt.
        for key in (
            f"{model}/3.2.0/{model}_trt/1/model.plan",
            f"{model}/3.2.0/model.onnx",
            f"_lkg/{model}/{region}.json",
        ):
            assert not either("s3:GetObject", f"{bucket}/{key}"), f"{bucket}/{key}"
        assert not either("s3:GetObject", f"arn:aws:s3:::other-bucket/{model}/3.2.0/manifest.json")
        assert not either("s3:GetObjectVersion", f"{bucket}/{model}/3.2.0/manifest.json")
        assert not either("kms:Decrypt", key_arn, {**via_s3, "kms:ViaService": "ssm.us-east-1.amazonaws.com"})
        assert not either("kms:Decrypt", key_arn, {**via_s3, "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::x"})
        assert not either("kms:Decrypt", key_arn, {"kms:EncryptionContext:aws:s3:arn": bucket})
        other_account = f"arn:aws:kms:{region}:999999999999:key/0123abcd"
        assert not either("kms:Decrypt", other_account, via_s3)
    assert not either("cloudwatch:GetMetricStatistics", context={"aws:RequestedRegion": "ap-south-1"})
    # Reads only: no write, and none of the other data reads.
    for action in WRITES + NEVER + ("logs:GetLogEvents", "secretsmanager:GetSecretValue", "cloudwatch:GetMetricData"):
        assert not allows(readiness, action, context={"aws:RequestedRegion": "us-east-1"}), action
    assert all(st["Effect"] == "Allow" for st in readiness["Statement"])
    assert {a for st in readiness["Statement"] for a in _values(st["Action"])} == {
        "cloudwatch:GetMetricStatistics",
        "s3:GetObject",
        "kms:Decrypt",
    }


def test_the_readiness_policy_needs_its_buckets():
    with pytest.raises(ValueError, match="artifact buckets"):
        ci.readiness_read_policy(m.ACCOUNT_ID, [])


def _fleet_regions() -> set[str]:
    """Every region a stack touches, from the stack files (independently of program.fleet_facts)."""
    regions = {"us-east-1"}  # Route 53 health-check metrics and their alarms
    for s in list_stacks():
        cfg = load_stack(s)
        if isinstance(cfg, RegionConfig):
            regions.add(cfg.region)
        elif isinstance(cfg, GlobalConfig):
            regions |= {cfg.control_region, *cfg.routing.regions}
    return regions


def test_the_deploy_roles_deploy_the_fleet_and_never_the_ci_identity(plan):
    ci_arns = [
        plan.outputs["oidc_provider_arn"],
        plan.outputs["preview_role_arn"],
        *plan.outputs["deploy_role_arns"].values(),
    ]
    in_region = {"aws:RequestedRegion": "us-west-2"}
    for env in envs():
        policy = policy_of(plan, ci.deploy_role_name(env))
        for action in WRITES:
            assert allows(policy, action, context=in_region), f"{env} cannot {action}"
        for arn in ci_arns:
            for action in (
                "iam:UpdateAssumeRolePolicy",
                "iam:PutRolePolicy",
                "iam:AttachRolePolicy",
                "iam:PassRole",
                "iam:DeleteRole",
                "iam:DeleteOpenIDConnectProvider",
                "iam:TagRole",
            ):
                assert not allows(policy, action, arn, in_region), f"{env} may {action} on {arn}"
            assert allows(policy, "iam:GetRole", arn, in_region)
        # No IAM users, keys or policies of its own, no other role; service-linked roles of its services only.
        for action in (*NEVER, "iam:CreateServiceLinkedRole"):
            assert not allows(policy, action, context=in_region), f"{env} may {action}"
        assert allows(policy, "iam:CreateServiceLinkedRole", context={"iam:AWSServiceName": "eks.amazonaws.com"})


def test_the_deploy_roles_stay_in_the_fleets_regions(plan):
    regions = _fleet_regions()
    assert set(program.fleet_facts().regions) == regions
    for env in envs():
        policy = policy_of(plan, ci.deploy_role_name(env))
        guard = next(st for st in policy["Statement"] if st["Sid"] == "OnlyFleetRegions")
        assert set(guard["Condition"]["StringNotEquals"]["aws:RequestedRegion"]) == regions
        for r in regions:
            assert allows(policy, "ec2:CreateVpc", context={"aws:RequestedRegion": r})
        assert not allows(policy, "ec2:CreateVpc", context={"aws:RequestedRegion": "ap-south-1"})
        # Global services are not region-bound.
        assert allows(policy, "route53:ChangeResourceRecordSets", context={"aws:RequestedRegion": "us-east-1"})
        assert allows(policy, "iam:CreateRole", context={"aws:RequestedRegion": "us-east-1"})


def test_every_aws_module_the_programs_use_has_its_services():
    """A resource in a module not in SERVICES would give neither role the rights it needs: found by reading
    the programs' source for `aws.<module>.<Resource>(`."""
    used: set[str] = set()
    for path in (ROOT / "infra").rglob("*.py"):
        for mod, cls in re.findall(r"\baws\.([a-z0-9_]+)\.([A-Z]\w*)\(", path.read_text()):
            if not cls.endswith("Args"):
                used.add(mod)
    assert used, "the scan found no aws.<module>.<Resource>( at all"
    missing = sorted(used - set(ci.SERVICES))
    assert not missing, f"add to infra/components/ci_identity.py SERVICES: {missing}"
    assert {p for mod in ci.SERVICES for p in ci.SERVICES[mod]} <= set(ci.READ_ACTIONS)


def test_sessions_last_the_jobs(plan):
    assert role_named(plan, ci.PREVIEW_ROLE).inputs["maxSessionDuration"] == ci.PREVIEW_SESSION_SECONDS
    for env in envs():
        assert role_named(plan, ci.deploy_role_name(env)).inputs["maxSessionDuration"] == ci.DEPLOY_SESSION_SECONDS


# ---------------------------------------------------------------- the workflows use what the program declares
def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def _job_subject(workflow: str, job: dict) -> str:
    """The OIDC subject GitHub gives a job: an environment's when it names one, else by its trigger."""
    if "environment" in job:
        return f"repo:{REPO}:environment:{job['environment']}"
    main = f"repo:{REPO}:ref:refs/heads/main"
    return {"preview.yml": f"repo:{REPO}:pull_request", "drift.yml": main, "readiness.yml": main}[workflow]


def _credential_steps(job: dict) -> tuple[dict, dict] | None:
    aws = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    auth = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/auth-actions@")]
    if not aws:
        assert not auth
        return None
    return aws[0]["with"], auth[0]["with"]


@pytest.mark.parametrize("workflow", ["preview.yml", "drift.yml", "up.yml", "readiness.yml"])
def test_each_job_assumes_an_exported_role_that_admits_its_subject(plan, workflow):
    provider = plan.outputs["oidc_provider_arn"]
    exported = {plan.outputs["preview_role_arn"], *plan.outputs["deploy_role_arns"].values()}
    teams = plan.outputs["pulumi_cloud_teams"]
    seen = 0
    for name, job in _load(workflow)["jobs"].items():
        steps = _credential_steps(job)
        if steps is None:
            continue
        seen += 1
        aws, auth = steps
        arn = aws["role-to-assume"].replace("${{ vars.AWS_ACCOUNT_ID }}", m.ACCOUNT_ID)
        assert arn in exported, f"{workflow} job {name}: {arn} is not a role the CI identity program exports"
        role = arn.rsplit("/", 1)[1]
        subject = _job_subject(workflow, job)
        assert admits(trust_of(plan, role), provider, github(subject)), f"{workflow} job {name}: {role} vs {subject}"
        # The Pulumi team of the same name, whose OIDC policy admits the same subject.
        team = auth["scope"].removeprefix("team:")
        assert team == role and subject in teams[team]["oidc_policy"]["sub"], f"{workflow} job {name}: {team}"
    assert seen, f"{workflow}: no job exchanges an OIDC token"


def test_pulumi_cloud_teams_mirror_the_roles(plan):
    teams = plan.outputs["pulumi_cloud_teams"]
    assert set(teams) == {r.inputs["name"] for r in plan.of_type(ROLE)}
    globals_ = [load_stack(f"{e}-global") for e in envs()]
    (org,) = {g.stack_org for g in globals_ if isinstance(g, GlobalConfig)}
    for name, team in teams.items():
        assert team["oidc_policy"]["aud"] == f"urn:pulumi:org:{org}"
        assert team["oidc_policy"]["sub"] == plan.outputs["trusted_subjects"][name]
        if name == ci.PREVIEW_ROLE:
            assert team["stack_permission"] == "Stack Read"
            assert set(team["stacks"]) == {f"reco-dr/{s}" for s in list_stacks()} | {f"{CI_PROJECT}/ci"}
        else:
            env = name.removeprefix("reco-dr-ci-deploy-")
            assert team["stack_permission"] == "Stack Write"
            assert set(team["stacks"]) == {f"reco-dr/{s}" for s in list_stacks() if s.startswith(f"{env}-")}


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "repo",
    ["example-org/reco-dr", "Example-Org/reco.dr_2", "a/b", "octo-org@123456/octo-repo@789012", f"{'o' * 39}/r"],
)
def test_repositories_accepted(repo):
    assert parse_ci("ci", {"github_repository": repo}).github_repository == repo


@pytest.mark.parametrize(
    "repo",
    [
        "example-org",
        "example-org/*",
        "*/reco-dr",
        "example-org/reco-dr*",
        "example-org/reco-?",
        "example-org/reco-dr\n",
        "example-org/reco-dr:environment:prod",
        "example-org/reco dr",
        "-org/reco-dr",
        "org-/reco-dr",
        "example-org/..",
        "example-org/reco-dr/extra",
        f"{'o' * 40}/r",
        "example-org/" + "r" * 101,
        "example-org@/reco-dr",
        "example-org@0123/reco-dr",
        "",
    ],
)
def test_repositories_refused_with_stack_key_value_and_rule(repo):
    with pytest.raises(ConfigError) as e:
        parse_ci("ci", {"github_repository": repo})
    msg = str(e.value)
    assert msg.startswith("stack ci: reco-dr-ci:github_repository = ") and repr(repo) in msg and "rule:" in msg


@pytest.mark.parametrize(
    "values, key, rule",
    [
        ({}, "github_repository", "is missing: rule: required key"),
        ({"github_repository": 42}, "github_repository", "strict"),
        ({"github_repository": REPO, "repository": REPO}, "repository", "unknown key"),
        ({"github_repository": REPO, "region": "mars-1"}, "region", "supported AWS regions"),
        (
            {"github_repository": REPO, "github_oidc_provider_arn": "arn:aws:iam::123:oidc-provider/" + HOST},
            "github_oidc_provider_arn",
            "GitHub OIDC provider",
        ),
        (
            {"github_repository": REPO, "github_oidc_provider_arn": f"arn:aws:iam::{m.ACCOUNT_ID}:oidc-provider/x.com"},
            "github_oidc_provider_arn",
            "GitHub OIDC provider",
        ),
        (
            {
                "github_repository": REPO,
                "github_oidc_provider_arn": f"arn:aws:iam::{m.ACCOUNT_ID}:oidc-provider/{HOST}\n",
            },
            "github_oidc_provider_arn",
            "GitHub OIDC provider",
        ),
    ],
)
def test_config_refusals(values, key, rule):
    with pytest.raises(ConfigError) as e:
        parse_ci("ci", values)
    assert f"stack ci: reco-dr-ci:{key} " in str(e.value) and rule in str(e.value), str(e.value)


def test_the_program_refuses_bad_config_before_declaring_anything(monkeypatch):
    with pytest.raises(pulumi.RunError, match=r"reco-dr-ci:github_repository = 'example-org/\*'"):
        run_ci({"github_repository": "example-org/*"})
    # The engine hands a program its whole config in PULUMI_CONFIG too: a key of ours outside the schema is read
    # from there and refused (a typo would otherwise be ignored).
    values = {"github_repository": REPO, "repo_name": "x"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{CI_PROJECT}:{k}": v for k, v in values.items()}))
    with pytest.raises(pulumi.RunError, match=r"reco-dr-ci:repo_name = 'x': rule: unknown key"):
        run_ci(values)


def test_stack_file_namespaces(tmp_path: Path):
    (tmp_path / "Pulumi.ci.yaml").write_text(f"config:\n  reco-dr-ci:github_repository: {REPO}\n  aws:region: x\n")
    with pytest.raises(ConfigError, match="aws:region = 'x': rule: config keys are <namespace>:<name>"):
        read_ci_stack_file("ci", tmp_path)
    with pytest.raises(ConfigError, match="must exist"):
        read_ci_stack_file("other", tmp_path)
    assert read_ci_stack_file("ci") == {"github_repository": REPO, "region": "us-east-1"}


def test_the_project_files(tmp_path: Path):
    project = yaml.safe_load((ROOT / "infra" / "ci" / "Pulumi.yaml").read_text())
    assert project["name"] == CI_PROJECT and project["runtime"]["name"] == "python"
    # The fleet program's venv (requirements/infra.lock.txt), resolved from infra/ci/.
    venv = (ROOT / "infra" / "ci" / project["runtime"]["options"]["virtualenv"]).resolve()
    assert venv == (ROOT / ".venv-pulumi").resolve()
    stack = yaml.safe_load((ROOT / "infra" / "ci" / "Pulumi.ci.yaml").read_text())["config"]
    assert stack["pulumi:disable-default-providers"] == ["*"]
