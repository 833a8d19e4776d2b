"""The regional VPC: three AZs, public subnets for the load balancer, private subnets for nodes and pods, an
S3 gateway endpoint whose policy admits the fleet's artifact bucket and the AWS-owned buckets image pulls read,
flow logs of every flow, and the default security group emptied."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

AZ_COUNT = 3


@dataclass(frozen=True)
class SubnetPlan:
    az: str
    private_cidr: str
    public_cidr: str


def subnet_plan(vpc_cidr: str, azs: list[str]) -> list[SubnetPlan]:
    """Split the VPC into quarters: three large private subnets (the VPC CNI gives every pod a VPC address,
    so pods need the room) and the fourth quarter cut into small public subnets, which only hold the load
    balancer's and NAT gateways' interfaces."""
    if len(azs) < AZ_COUNT:
        raise ValueError(f"need {AZ_COUNT} availability zones, got {azs}")
    net = ipaddress.ip_network(vpc_cidr)
    quarters: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(net.subnets(prefixlen_diff=2))
    public = list(quarters[3].subnets(prefixlen_diff=2))
    return [SubnetPlan(az, str(quarters[i]), str(public[i])) for i, az in enumerate(azs[:AZ_COUNT])]


def s3_endpoint_policy(region: str, artifact_buckets: Sequence[str]) -> str:
    """The S3 gateway endpoint's policy: what anything in the VPC may reach in S3 through it, whatever its IAM
    permissions (which still decide within it). A gateway endpoint carries requests to buckets in its own region
    only (another region's bucket is reached through the NAT gateways, never through it), so the fleet's buckets
    here are this region's: the artifact bucket Triton's init containers read and model_build's engine Jobs write.
    Image pulls read layers from S3 buckets the registries own, in the node's region:
      - ECR (the EKS add-ons' images, any private repository): `prod-<region>-starport-layer-bucket`, the "minimum
        Amazon S3 bucket permissions for Amazon ECR" of
        https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html
      - registry.k8s.io (cluster-autoscaler, prometheus-adapter) redirects pulls from AWS to its bucket in the
        caller's region, `prod-registry-k8s-io-<region>` (the 403 of https://github.com/kubernetes/k8s.io/issues/4214
        behind an endpoint policy without it).
    nvcr.io, quay.io and public.ecr.aws serve layers from their own CDN names, not through this endpoint."""
    statements = [
        {
            "Sid": "FleetArtifactBuckets",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [r for b in artifact_buckets for r in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")],
        },
        {
            "Sid": "ImageLayers",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": [
                f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*",
                f"arn:aws:s3:::prod-registry-k8s-io-{region}/*",
            ],
        },
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


# VPC flow logs: every accepted and rejected flow, for the forensics of a network fault or an intrusion; kept as
# long as the EKS control-plane logs.
FLOW_LOG_RETENTION_DAYS = 90


def flow_log_trust_policy() -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
        sort_keys=True,
    )


def flow_log_writer_policy(log_group_arn: str) -> str:
    """What the flow-log service may do with its role: write streams of this one log group, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteFlowLogs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    "Resource": f"{log_group_arn}:*",
                }
            ],
        },
        sort_keys=True,
    )


@dataclass
class NetworkArgs:
    name: str  # the cluster name: subnets are tagged for it so the load balancer controller can find them
    vpc_cidr: str
    azs: list[str]
    region: str
    # The buckets anything in the VPC may use through the S3 gateway endpoint (s3_endpoint_policy): the region's
    # artifact bucket. Names, not resources: the bucket is declared after the network.
    artifact_buckets: Sequence[str]
    logs_key_arn: pulumi.Input[str]  # the region's log key (infra.components.kms.LogsKey)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: NetworkArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:Network", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        plan = subnet_plan(args.vpc_cidr, args.azs)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": args.name},
            opts=o,
        )
        # The VPC's default security group, emptied: nothing uses it, so nothing may reach or leave through it
        # (a resource launched without a group would otherwise get its allow-all-within-the-group rules).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags={"Name": f"{args.name}-default"}, opts=o
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": args.name}, opts=o)
        public_rt = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, tags={"Name": f"{args.name}-public"}, opts=o)
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=o,
        )

        cluster_tag = {f"kubernetes.io/cluster/{args.name}": "shared"}
        self.public_subnet_ids, self.private_subnet_ids, private_rts = [], [], []
        for i, p in enumerate(plan):
            pub = aws.ec2.Subnet(
                f"{name}-public-{i}",
                vpc_id=vpc.id,
                cidr_block=p.public_cidr,
                availability_zone=p.az,
                map_public_ip_on_launch=False,
                tags={"Name": f"{args.name}-public-{p.az}", "kubernetes.io/role/elb": "1", **cluster_tag},
                opts=o,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{i}", subnet_id=pub.id, route_table_id=public_rt.id, opts=o)
            priv = aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=vpc.id,
                cidr_block=p.private_cidr,
                availability_zone=p.az,
                tags={"Name": f"{args.name}-private-{p.az}", "kubernetes.io/role/internal-elb": "1", **cluster_tag},
                opts=o,
            )
            # One NAT gateway per AZ: losing an AZ must not cut the other AZs' nodes off ECR and S3.
            eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags={"Name": f"{args.name}-nat-{p.az}"}, opts=o)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                allocation_id=eip.id,
                subnet_id=pub.id,
                tags={"Name": f"{args.name}-{p.az}"},
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[igw]),
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-{i}", vpc_id=vpc.id, tags={"Name": f"{args.name}-private-{p.az}"}, opts=o
            )
            aws.ec2.Route(
                f"{name}-private-{i}-default",
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=o,
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=priv.id, route_table_id=rt.id, opts=o)
            self.public_subnet_ids.append(pub.id)
            self.private_subnet_ids.append(priv.id)
            private_rts.append(rt.id)

        # Triton pulls the model repository from the regional bucket: a gateway endpoint keeps that traffic
        # off the NAT gateways (cost) and inside the region's network; its policy keeps it to the fleet's buckets.
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=private_rts,
            policy=s3_endpoint_policy(args.region, args.artifact_buckets),
            tags={"Name": f"{args.name}-s3"},
            opts=o,
        )

        flow_logs = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/reco-dr/{args.name}/vpc-flow-logs",
            retention_in_days=FLOW_LOG_RETENTION_DAYS,
            kms_key_id=args.logs_key_arn,
            opts=o,
        )
        flow_role = aws.iam.Role(f"{name}-flow-logs", assume_role_policy=flow_log_trust_policy(), opts=o)
        aws.iam.RolePolicy(
            f"{name}-flow-logs", role=flow_role.id, policy=flow_logs.arn.apply(flow_log_writer_policy), opts=o
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_logs.arn,
            iam_role_arn=flow_role.arn,
            max_aggregation_interval=60,
            tags={"Name": args.name},
            opts=o,
        )

        self.vpc_id = vpc.id
        self.azs = [p.az for p in plan]
        # Where the load balancer's interfaces live (nothing else but NAT gateways): the only sources of traffic to
        # Triton's HTTP port that the Triton namespace's NetworkPolicy admits (pods have private-subnet addresses).
        self.public_subnet_cidrs = [p.public_cidr for p in plan]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )
