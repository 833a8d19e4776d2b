"""The CI identity program (Pulumi project `reco-dr-ci`, infra/ci/Pulumi.yaml): what GitHub Actions may assume.

Why a project of its own rather than part of a fleet stack: it is the root of CI's trust, so it must exist before
CI can deploy anything (a global stack only deploys once every regional stack is up, and it reads their outputs),
it is one per AWS account (IAM accepts one GitHub OIDC provider per account, and role names are account-wide, so
staging-global and prod-global could not both declare them), and CI must not be able to change it: it is applied
by an administrator, `pulumi up -C infra/ci --stack ci`, and the deploy roles are denied every change to it. Pull
requests preview it and the drift check watches it, both with the read-only role.

Everything but the repository comes from the fleet's own stack files, so the roles follow the fleet: one deploy
role per environment (a GitHub environment of the same name, as up.yml names it), the deploy roles' regions are
the regions the fleet's stacks touch, the Pulumi organisation is the global stacks' `stack_org`, and what the
preview role may read for readiness (readiness.yml) is each regional stack's artifact bucket and model.

Stack outputs: `oidc_provider_arn`, `preview_role_arn`, `deploy_role_arns` ({env: arn}), `trusted_subjects`
({role: [sub, ...]}) and `pulumi_cloud_teams` (the Pulumi Cloud teams, permissions and OIDC policies that mirror
the roles: infra/components/ci_identity.py pulumi_cloud_teams).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.components.artifacts import bucket_name
from infra.components.ci_identity import (
    PREVIEW_ROLE,
    ArtifactReads,
    CiIdentity,
    CiIdentityArgs,
    deploy_role_name,
    deploy_subjects,
    preview_subjects,
    pulumi_cloud_teams,
)
from infra.config import CI_PROJECT, PROJECT, STACKS_DIR, ConfigError, ci_from_pulumi, envs, load_fleet
from infra.invariants import ROUTE53_METRICS_REGION


@dataclass(frozen=True)
class FleetFacts:
    """What the CI roles are derived from, read from stacks/."""

    environments: tuple[str, ...]
    regions: tuple[str, ...]  # every region a stack of the fleet touches
    org: str  # the Pulumi organisation of the fleet's stacks
    stacks_by_env: dict[str, tuple[str, ...]]  # env -> its stacks' names
    artifacts: tuple[tuple[str, str, str], ...] = ()  # (regional stack, its region, its model): what readiness reads


def fleet_facts(stacks_dir: Path = STACKS_DIR) -> FleetFacts:
    regions = {ROUTE53_METRICS_REGION}
    orgs: dict[str, str] = {}  # global stack -> stack_org
    stacks_by_env: dict[str, tuple[str, ...]] = {}
    artifacts: list[tuple[str, str, str]] = []
    for env in envs(stacks_dir):
        fleet = load_fleet(env, stacks_dir)
        regions |= {*fleet.regions, *fleet.glob.routing.regions, fleet.glob.control_region}
        orgs[fleet.global_stack] = fleet.glob.stack_org
        stacks_by_env[env] = tuple(sorted([fleet.global_stack, *fleet.stack_names.values()]))
        artifacts += [(fleet.stack_names[r], r, cfg.model.name) for r, cfg in fleet.regions.items()]
    if not stacks_by_env:
        raise ConfigError(CI_PROJECT, "(fleet)", str(stacks_dir), "rule: at least one environment", as_written=True)
    if len(set(orgs.values())) != 1:
        stack, org = sorted(orgs.items())[-1]
        raise ConfigError(
            stack,
            "stack_org",
            org,
            f"rule: one Pulumi organisation for the whole fleet (the workflows' PULUMI_ORG); the global stacks "
            f"name {dict(sorted(orgs.items()))}",
        )
    return FleetFacts(
        tuple(sorted(stacks_by_env)),
        tuple(sorted(regions)),
        next(iter(orgs.values())),
        stacks_by_env,
        tuple(sorted(artifacts)),
    )


def main() -> None:
    try:
        cfg = ci_from_pulumi()
        facts = fleet_facts()
    except ConfigError as e:
        # RunError prints the message without a Python traceback, and nothing has been declared yet.
        raise pulumi.RunError(str(e)) from None
    stack = pulumi.get_stack()
    repo = cfg.github_repository
    tags = {"project": PROJECT, "stack": f"{CI_PROJECT}/{stack}", "region-role": "ci", "managed-by": "pulumi"}
    provider = aws.Provider(f"aws-{cfg.region}", region=cfg.region, default_tags=aws.ProviderDefaultTagsArgs(tags=tags))
    # The account the administrator applies in is the fleet's (one CI identity per account): its buckets' names
    # and keys' ARNs carry its id.
    account_id = aws.get_caller_identity(opts=pulumi.InvokeOptions(provider=provider)).account_id
    ci = CiIdentity(
        "ci",
        CiIdentityArgs(
            repository=repo,
            environments=facts.environments,
            regions=facts.regions,
            oidc_provider_arn=cfg.github_oidc_provider_arn,
            readiness=tuple(
                ArtifactReads(region, bucket_name(regional, account_id), model)
                for regional, region, model in facts.artifacts
            ),
            account_id=account_id,
        ),
        provider=provider,
    )
    pulumi.export("oidc_provider_arn", ci.oidc_provider_arn)
    pulumi.export("preview_role_arn", ci.preview_role.arn)
    pulumi.export("deploy_role_arns", {env: r.arn for env, r in ci.deploy_roles.items()})
    pulumi.export(
        "trusted_subjects",
        {
            PREVIEW_ROLE: list(preview_subjects(repo)),
            **{deploy_role_name(env): list(deploy_subjects(repo, env)) for env in facts.environments},
        },
    )
    pulumi.export(
        "pulumi_cloud_teams",
        pulumi_cloud_teams(
            repo,
            facts.org,
            {env: [f"{PROJECT}/{s}" for s in stacks] for env, stacks in facts.stacks_by_env.items()},
            [f"{CI_PROJECT}/{stack}"],
        ),
    )
