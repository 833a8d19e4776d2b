"""The region's entry point: an internet-facing ALB owned by Pulumi, so its DNS name and hosted zone id are
plain resource outputs the global stack's alias records and health checks can use (never scraped from
Kubernetes status). TLS ends at the ALB (ACM certificate); pods are IP targets on Triton's HTTP port,
registered by a TargetGroupBinding.

The edge: the HTTPS listener forwards only what clients of the ranker need, the routes of
infra.names.edge_routes (one listener rule each):

    GET  /v2/health/ready, /v2/health/live                      Triton's readiness (Route 53's check) and liveness
    POST /v2/models/<m>/infer, /v2/models/<m>/versions/*/infer  inference, <m> = <model.name>_trt and _onnx
    GET  /v2/models/<m>, /v2/models/<m>/ready                   the model's metadata (its signature), readiness

plus `GET /deep-health` (infra.health.DEEP_HEALTH_PATH, its own rule), forwarded to a target group of its own on the
stable pods' deep-health sidecar (the Route 53 deep check: one inference via the region's Triton Service in a bound),
and answers everything else with a fixed 404 (the listener's default action): the model configuration, the model
repository (index, load, unload), statistics, trace and logging settings, shared-memory registration, other models
(the python-backend one) and any path Triton may add never reach a pod. The security group admits `allowed_cidrs`;
`waf.enabled` puts an AWS WAF web ACL (managed rule groups and a per-address rate limit) in front.

Gray release: while the regional stack configures a canary (`model.canary_version`), a second target group
holds the canary pods and every forwarding rule splits between both with weights `100 - canary_weight` /
`canary_weight` (ALB weighted target groups), so moving traffic between the stable and the candidate version is
a stack config change plus `pulumi up`, like a Route 53 weight shift one level up.

The `X-Reco-Track: stable|canary` header pins a request to one version, for the release gates, which score the same
golden requests on both versions through the same load balancer. An ALB cannot strip or rewrite a request header
(its rules match headers; its transforms rewrite only the host and the URL), so the header is judged where it
arrives: the two pin rules match it only from `release_tooling_cidrs` (a `source-ip` condition: the address that
opened the connection, never X-Forwarded-For) and only on the inference paths, and a rule right after them refuses
every other request that carries it (403). A client cannot choose a version; the release tooling run from elsewhere
fails its pinned scoring loudly instead of comparing two weighted mixes. Without `release_tooling_cidrs` there are
no pins at all.

A/B experiments (infra/experiments.py, the global stack's `experiments`; what a region serves of them: infra/arms.py):
per arm version (a version a cell is served other than the stable one) a target group of its own
(`infra.names.arm_target_group_name`: same port, health check and drain as the canary's), holding that version's
pods, and per cell of every experiment not yet ended one listener rule at ARM_PRIORITY_BASE + i (i: the cell's header
value in sorted order; after the track pins and guard, before the deep-health rule and the edge routes): a request
carrying `X-Reco-Arm: <experiment id>.<cell>` on an inference path (`infra.names.pin_paths`) goes to the cell's
version, the stable target group where that is the stable version (control and holdout, as a rule; never the
canary's weighted mix), else the version's arm target group. The client library sets the header from the user's
salted assignment. It is not restricted to the release tooling's addresses as the track header is: a client can only
pick among the versions the experiment serves anyway, and a value no rule names (a stale client, an ended experiment)
falls through to the ordinary routes and is served the stable version, never refused. Rules are named by their place,
not their header value, so adding or ending an experiment rewrites or appends rules in place and no two rules claim
one priority during an `up`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.arms import NO_ARMS, RegionArms, arm_track
from infra.config import LoadBalancer as LbConfig
from infra.health import DEEP_HEALTH_PATH, DEEP_HEALTH_PORT, DEEP_HEALTH_PRIORITY, deep_health_target_group_name
from infra.names import (
    ARM_HEADER,
    PIN_PRIORITY,
    PORTS,
    READY_PATH,
    TRACK_GUARD_PRIORITY,
    TRACK_HEADER,
    arm_target_group_name,
    edge_routes,
    lb_name,
    pin_paths,
    target_group_name,
)

HTTP_PORT = PORTS["http"]
NOT_FOUND = "404"
TRACK_REFUSED = "403"
TRACK_REFUSED_BODY = f"{TRACK_HEADER} is honoured only from the release tooling's addresses\n"

# AWS managed rule groups of the web ACL, in evaluation order, after the rate-based rule.
WAF_MANAGED_RULE_GROUPS = (
    "AWSManagedRulesAmazonIpReputationList",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesCommonRuleSet",
)
# Rules of those groups that only count. SizeRestrictions_BODY blocks bodies over 8 KB, and a ranking request (a
# batch of candidates, V2 JSON) is larger than that: blocking it would refuse the ranker's own traffic.
WAF_COUNT_ONLY = {"AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",)}
WAF_RATE_WINDOW_SECONDS = 300


def forward_weights(canary_weight: int) -> tuple[int, int]:
    """(stable, canary) target group weights for a canary share in percent. ALB splits by weight / sum."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight is a percentage, got {canary_weight}")
    return 100 - canary_weight, canary_weight


def health_check(interval: int = 10, port: str = "traffic-port") -> aws.lb.TargetGroupHealthCheckArgsDict:
    """Target health is Triton's readiness: a pod whose models are not loaded gets no traffic. `port`: where it is
    asked (the deep-health target group asks Triton's port, not its own)."""
    return {
        "enabled": True,
        "protocol": "HTTP",
        "path": READY_PATH,
        "port": port,
        "matcher": "200",
        "interval": interval,
        "timeout": 5,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    }


def forward_action(
    stable_arn: pulumi.Input[str], canary_arn: pulumi.Input[str] | None, canary_weight: int
) -> aws.lb.ListenerRuleActionArgs:
    """What an allowed request gets: the stable target group, or both with the canary's weight while one runs."""
    if canary_arn is None:
        return aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=stable_arn)
    stable_w, canary_w = forward_weights(canary_weight)
    return aws.lb.ListenerRuleActionArgs(
        type="forward",
        forward=aws.lb.ListenerRuleActionForwardArgs(
            target_groups=[
                aws.lb.ListenerRuleActionForwardTargetGroupArgs(arn=stable_arn, weight=stable_w),
                aws.lb.ListenerRuleActionForwardTargetGroupArgs(arn=canary_arn, weight=canary_w),
            ],
            # No stickiness: every request is split independently, so the canary's share of requests is the
            # configured weight and taking the weight to 0 moves every client back at once (no pinned sessions).
            stickiness=aws.lb.ListenerRuleActionForwardStickinessArgs(enabled=False, duration=1),
        ),
    )


def fixed_response(status: str, body: str) -> aws.lb.ListenerRuleActionArgs:
    return aws.lb.ListenerRuleActionArgs(
        type="fixed-response",
        fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
            content_type="text/plain", message_body=body, status_code=status
        ),
    )


def _visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgs:
    return aws.wafv2.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def web_acl_rules(metric_prefix: str, rate_limit_per_5min: int) -> list[aws.wafv2.WebAclRuleArgs]:
    """A rate-based rule first (an address that sends more than `rate_limit_per_5min` requests in 5 minutes is
    blocked until its rate falls again; it counts every request, before any other rule decides), then the managed
    rule groups with their own actions, but for the rules of WAF_COUNT_ONLY."""
    count = aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseArgs(
        count=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseCountArgs()
    )
    rate = aws.wafv2.WebAclRuleArgs(
        name="rate-per-address",
        priority=0,
        action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
        statement=aws.wafv2.WebAclRuleStatementArgs(
            rate_based_statement=aws.wafv2.WebAclRuleStatementRateBasedStatementArgs(
                aggregate_key_type="IP", limit=rate_limit_per_5min, evaluation_window_sec=WAF_RATE_WINDOW_SECONDS
            )
        ),
        visibility_config=_visibility(f"{metric_prefix}-rate-per-address"),
    )
    return [rate] + [
        aws.wafv2.WebAclRuleArgs(
            name=group,
            priority=i,
            override_action=aws.wafv2.WebAclRuleOverrideActionArgs(none=aws.wafv2.WebAclRuleOverrideActionNoneArgs()),
            statement=aws.wafv2.WebAclRuleStatementArgs(
                managed_rule_group_statement=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                    name=group,
                    vendor_name="AWS",
                    rule_action_overrides=[
                        aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideArgs(
                            name=rule, action_to_use=count
                        )
                        for rule in WAF_COUNT_ONLY.get(group, ())
                    ]
                    or None,
                )
            ),
            visibility_config=_visibility(f"{metric_prefix}-{group}"),
        )
        for i, group in enumerate(WAF_MANAGED_RULE_GROUPS, start=1)
    ]


@dataclass
class TritonLoadBalancerArgs:
    stack: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    node_security_group_id: pulumi.Input[str]  # the EKS cluster security group, on nodes and pod ENIs
    config: LbConfig
    deletion_protection: bool
    model_name: str  # `model.name`: the Triton models the edge forwards are named from it (infra.names.edge_routes)
    canary: bool = False  # a canary version is configured: second target group, weighted forward, header pins
    canary_weight: int = 0  # percent of the region's traffic on the canary target group
    # The experiments' arms the region serves (infra/arms.py): a target group per arm version, a rule per cell.
    arms: RegionArms = NO_ARMS


class TritonLoadBalancer(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: TritonLoadBalancerArgs,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("reco-dr:regional:TritonLoadBalancer", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        c = args.config

        # No inline rules: the provider removes AWS's default allow-all egress, so the rules below are all there is.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description=f"{lb_name(args.stack)} load balancer",
            tags={"Name": lb_name(args.stack)},
            opts=o,
        )
        for i, cidr in enumerate(c.allowed_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-https-{i}",
                security_group_id=self.security_group.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                cidr_ipv4=cidr,
                description="HTTPS from clients",
                opts=o,
            )
        # Triton's HTTP port and the deep-health sidecar's, each from the load balancer only. Triton's pair keeps the
        # names it always had (no replacement of a rule in service).
        for suffix, port, what in (("", HTTP_PORT, "Triton HTTP"), ("-deep-health", DEEP_HEALTH_PORT, "Deep health")):
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-to-triton{suffix}",
                security_group_id=self.security_group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                referenced_security_group_id=args.node_security_group_id,
                description=f"{what} and health checks",
                opts=o,
            )
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-nodes-from-lb{suffix}",
                security_group_id=args.node_security_group_id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                referenced_security_group_id=self.security_group.id,
                description=f"{what} from the load balancer only",
                opts=o,
            )

        self.lb = aws.lb.LoadBalancer(
            f"{name}-alb",
            name=lb_name(args.stack),
            load_balancer_type="application",
            internal=False,
            subnets=args.public_subnet_ids,
            security_groups=[self.security_group.id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=args.deletion_protection,
            idle_timeout=60,
            opts=o,
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-triton",
            name=target_group_name(args.stack),
            port=HTTP_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=30,  # in-flight ranking requests are short; drain quickly on scale-in
            health_check=health_check(),
            opts=o,
        )

        def pods_group(resource: str, group: str) -> aws.lb.TargetGroup:
            # Same port, health check and drain as the stable group: the groups differ only in the pods they hold.
            return aws.lb.TargetGroup(
                resource,
                name=group,
                port=HTTP_PORT,
                protocol="HTTP",
                target_type="ip",
                vpc_id=args.vpc_id,
                deregistration_delay=30,
                health_check=health_check(),
                opts=o,
            )

        self.canary_target_group = (
            pods_group(f"{name}-triton-canary", target_group_name(args.stack, "canary")) if args.canary else None
        )
        canary_arn = self.canary_target_group.arn if self.canary_target_group is not None else None
        # An arm version's pods, named by the version's hash (its track): the same group for as long as the version
        # is served, whichever experiments serve it.
        self.arm_target_groups: dict[str, aws.lb.TargetGroup] = {
            v: pods_group(f"{name}-triton-{arm_track(v)}", arm_target_group_name(args.stack, v))
            for v in args.arms.versions
        }
        # The stable pods' deep-health sidecars (their TargetGroupBinding: infra/components/triton.py), on the sidecar's
        # port. Its targets are judged on Triton's readiness, not on the deep check itself: the group then holds exactly
        # the pods users are sent to, so one pod failing the deep check fails a share of Route 53's requests instead of
        # being dropped from the group and hidden behind the healthy ones.
        self.deep_health_target_group = aws.lb.TargetGroup(
            f"{name}-deep-health",
            name=deep_health_target_group_name(args.stack),
            port=DEEP_HEALTH_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=30,
            health_check=health_check(port=str(HTTP_PORT)),
            opts=o,
        )

        # Nothing is forwarded unless a rule below allows it. (The first `up` with this listener answers 404 for the
        # seconds between the listener's update and the rules' creation: run it with the region drained.)
        self.listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.lb.arn,
            port=443,
            protocol="HTTPS",
            certificate_arn=c.certificate_arn,
            ssl_policy=c.ssl_policy,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="fixed-response",
                    fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                        content_type="text/plain", message_body="Not Found\n", status_code=NOT_FOUND
                    ),
                )
            ],
            opts=o,
        )
        self.routes: dict[str, aws.lb.ListenerRule] = {}
        for key, route in edge_routes(args.model_name).items():
            self.routes[key] = aws.lb.ListenerRule(
                f"{name}-route-{key}",
                listener_arn=self.listener.arn,
                priority=route.priority,
                actions=[forward_action(self.target_group.arn, canary_arn, args.canary_weight)],
                conditions=[
                    aws.lb.ListenerRuleConditionArgs(
                        http_request_method=aws.lb.ListenerRuleConditionHttpRequestMethodArgs(values=[route.method])
                    ),
                    aws.lb.ListenerRuleConditionArgs(
                        path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=list(route.paths))
                    ),
                ],
                opts=o,
            )
        aws.lb.ListenerRule(
            f"{name}-deep-health",
            listener_arn=self.listener.arn,
            priority=DEEP_HEALTH_PRIORITY,
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=self.deep_health_target_group.arn)],
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    http_request_method=aws.lb.ListenerRuleConditionHttpRequestMethodArgs(values=["GET"])
                ),
                aws.lb.ListenerRuleConditionArgs(
                    path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=[DEEP_HEALTH_PATH])
                ),
            ],
            opts=o,
        )
        aws.lb.ListenerRule(
            f"{name}-track-guard",
            listener_arn=self.listener.arn,
            priority=TRACK_GUARD_PRIORITY,
            actions=[fixed_response(TRACK_REFUSED, TRACK_REFUSED_BODY)],
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(http_header_name=TRACK_HEADER, values=["*"])
                )
            ],
            opts=o,
        )
        if self.canary_target_group is not None and c.release_tooling_cidrs:
            for track, tg in (("canary", self.canary_target_group), ("stable", self.target_group)):
                aws.lb.ListenerRule(
                    f"{name}-pin-{track}",
                    listener_arn=self.listener.arn,
                    priority=PIN_PRIORITY[track],
                    actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=tg.arn)],
                    conditions=[
                        aws.lb.ListenerRuleConditionArgs(
                            http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                                http_header_name=TRACK_HEADER, values=[track]
                            )
                        ),
                        aws.lb.ListenerRuleConditionArgs(
                            source_ip=aws.lb.ListenerRuleConditionSourceIpArgs(values=list(c.release_tooling_cidrs))
                        ),
                        aws.lb.ListenerRuleConditionArgs(
                            path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                                values=list(pin_paths(args.model_name))
                            )
                        ),
                    ],
                    opts=o,
                )

        # The experiments' cells: see the module docstring. Named by place (priority), never by header value.
        self.arm_rules: list[aws.lb.ListenerRule] = []
        for i, arm in enumerate(args.arms.routes):
            tg = self.target_group if arm.target is None else self.arm_target_groups[arm.target]
            self.arm_rules.append(
                aws.lb.ListenerRule(
                    f"{name}-arm-{i}",
                    listener_arn=self.listener.arn,
                    priority=arm.priority,
                    actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=tg.arn)],
                    conditions=[
                        aws.lb.ListenerRuleConditionArgs(
                            http_header=aws.lb.ListenerRuleConditionHttpHeaderArgs(
                                http_header_name=ARM_HEADER, values=[arm.header]
                            )
                        ),
                        aws.lb.ListenerRuleConditionArgs(
                            path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                                values=list(pin_paths(args.model_name))
                            )
                        ),
                    ],
                    opts=o,
                )
            )

        self.web_acl = None
        if c.waf.enabled:
            assert c.waf.rate_limit_per_5min is not None, "infra.config.Waf requires it when enabled"
            acl_name = f"{lb_name(args.stack)}-edge"
            self.web_acl = aws.wafv2.WebAcl(
                f"{name}-waf",
                name=acl_name,
                description=f"{lb_name(args.stack)}: AWS managed rules and a per-address rate limit",
                scope="REGIONAL",
                default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
                rules=web_acl_rules(acl_name, c.waf.rate_limit_per_5min),
                visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(
                    cloudwatch_metrics_enabled=True, metric_name=acl_name, sampled_requests_enabled=True
                ),
                opts=o,
            )
            aws.wafv2.WebAclAssociation(f"{name}-waf", resource_arn=self.lb.arn, web_acl_arn=self.web_acl.arn, opts=o)

        self.dns_name = self.lb.dns_name
        self.zone_id = self.lb.zone_id
        self.arn_suffix = self.lb.arn_suffix  # CloudWatch's `LoadBalancer` dimension (the global stack's alarms)
        self.register_outputs(
            {
                "dns_name": self.dns_name,
                "zone_id": self.zone_id,
                "arn_suffix": self.arn_suffix,
                "target_group_arn": self.target_group.arn,
                "deep_health_target_group_arn": self.deep_health_target_group.arn,
                "canary_target_group_arn": canary_arn,
                "arm_target_group_arns": {v: tg.arn for v, tg in self.arm_target_groups.items()},
                "web_acl_arn": self.web_acl.arn if self.web_acl is not None else None,
            }
        )
