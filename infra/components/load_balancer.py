"""The region's entry point: an internet-facing ALB owned by Pulumi, so its DNS name and hosted zone id are
plain resource outputs the global stack's alias records and health checks can use (never scraped from
Kubernetes status). TLS ends at the ALB (ACM certificate); pods are IP targets on Triton's HTTP port,
registered by a TargetGroupBinding.

Gray release: while the regional stack configures a canary (`model.canary_version`), a second target group
holds the canary pods and the listener's default action forwards to both with weights
`100 - canary_weight` / `canary_weight` (ALB weighted target groups), so moving traffic between the stable and
the candidate version is a stack config change plus `pulumi up`, like a Route 53 weight shift one level up.
Two listener rules pin a request to one version by the `X-Reco-Track: stable|canary` header: the release gates
score the same golden requests on both versions through the same load balancer (the header selects only
between versions that already serve, so it grants nothing a client could not get by retrying)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import LoadBalancer as LbConfig
from infra.names import PIN_PRIORITY, PORTS, READY_PATH, TRACK_HEADER, lb_name, target_group_name

HTTP_PORT = PORTS["http"]


def forward_weights(canary_weight: int) -> tuple[int, int]:
    """(stable, canary) target group weights for a canary share in percent. ALB splits by weight / sum."""
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary_weight is a percentage, got {canary_weight}")
    return 100 - canary_weight, canary_weight


def health_check(interval: int = 10) -> aws.lb.TargetGroupHealthCheckArgsDict:
    """Target health is Triton's readiness: a pod whose models are not loaded gets no traffic."""
    return {
        "enabled": True,
        "protocol": "HTTP",
        "path": READY_PATH,
        "port": "traffic-port",
        "matcher": "200",
        "interval": interval,
        "timeout": 5,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    }


@dataclass
class TritonLoadBalancerArgs:
    stack: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    node_security_group_id: pulumi.Input[str]  # the EKS cluster security group, on nodes and pod ENIs
    config: LbConfig
    deletion_protection: bool
    canary: bool = False  # a canary version is configured: second target group, weighted forward, header pins
    canary_weight: int = 0  # percent of the region's traffic on the canary target group


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
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-to-triton",
            security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=HTTP_PORT,
            to_port=HTTP_PORT,
            referenced_security_group_id=args.node_security_group_id,
            description="Triton HTTP and health checks",
            opts=o,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-nodes-from-lb",
            security_group_id=args.node_security_group_id,
            ip_protocol="tcp",
            from_port=HTTP_PORT,
            to_port=HTTP_PORT,
            referenced_security_group_id=self.security_group.id,
            description="Triton HTTP from the load balancer only",
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
        self.canary_target_group = None
        if args.canary:
            # Same port, health check and drain as the stable group: the two differ only in the pods they hold.
            self.canary_target_group = aws.lb.TargetGroup(
                f"{name}-triton-canary",
                name=target_group_name(args.stack, "canary"),
                port=HTTP_PORT,
                protocol="HTTP",
                target_type="ip",
                vpc_id=args.vpc_id,
                deregistration_delay=30,
                health_check=health_check(),
                opts=o,
            )
            stable_w, canary_w = forward_weights(args.canary_weight)
            action = aws.lb.ListenerDefaultActionArgs(
                type="forward",
                forward=aws.lb.ListenerDefaultActionForwardArgs(
                    target_groups=[
                        aws.lb.ListenerDefaultActionForwardTargetGroupArgs(arn=self.target_group.arn, weight=stable_w),
                        aws.lb.ListenerDefaultActionForwardTargetGroupArgs(
                            arn=self.canary_target_group.arn, weight=canary_w
                        ),
                    ],
                    # No stickiness: every request is split independently, so the canary's share of requests is the
                    # configured weight and taking the weight to 0 moves every client back at once (no pinned sessions).
                    stickiness=aws.lb.ListenerDefaultActionForwardStickinessArgs(enabled=False, duration=1),
                ),
            )
        else:
            action = aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)
        self.listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.lb.arn,
            port=443,
            protocol="HTTPS",
            certificate_arn=c.certificate_arn,
            ssl_policy=c.ssl_policy,
            default_actions=[action],
            opts=o,
        )
        if self.canary_target_group is not None:
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
                        )
                    ],
                    opts=o,
                )
        self.dns_name = self.lb.dns_name
        self.zone_id = self.lb.zone_id
        self.register_outputs(
            {
                "dns_name": self.dns_name,
                "zone_id": self.zone_id,
                "target_group_arn": self.target_group.arn,
                "canary_target_group_arn": self.canary_target_group.arn if self.canary_target_group else None,
            }
        )
