"""VPC over three AZs: private subnets for nodes and pods, public for the load balancer, NAT per AZ."""

from __future__ import annotations

import ipaddress

import pytest

from infra.components.network import subnet_plan

AZS = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]


@pytest.mark.parametrize("vpc", ["10.10.0.0/16", "10.30.0.0/18", "172.16.0.0/20"])
def test_subnet_plan_is_disjoint_inside_the_vpc_and_spans_three_azs(vpc):
    plan = subnet_plan(vpc, AZS)
    assert [p.az for p in plan] == AZS[:3]
    nets = [ipaddress.IPv4Network(c) for p in plan for c in (p.private_cidr, p.public_cidr)]
    net = ipaddress.IPv4Network(vpc)
    assert all(n.subnet_of(net) for n in nets)
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    # Pods take VPC addresses: private subnets get a quarter of the VPC each.
    assert all(ipaddress.ip_network(p.private_cidr).prefixlen == net.prefixlen + 2 for p in plan)


def test_subnet_plan_needs_three_azs():
    with pytest.raises(ValueError, match="need 3 availability zones"):
        subnet_plan("10.10.0.0/16", AZS[:2])


def test_network_resources(regional):
    _stack, plan, cfg = regional
    vpc = plan.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == cfg.vpc_cidr and vpc.inputs["enableDnsHostnames"] is True
    subnets = plan.of_type("aws:ec2/subnet:Subnet")
    public = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/elb") == "1"]
    private = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    assert len(public) == len(private) == 3
    assert len({s.inputs["availabilityZone"] for s in private}) == 3
    assert all(s.inputs["availabilityZone"].startswith(cfg.region) for s in subnets)
    assert not any(s.inputs.get("mapPublicIpOnLaunch") for s in subnets)
    assert all(s.inputs["vpcId"] == vpc.id for s in subnets)
    # One NAT per AZ, each in a public subnet, each private route table defaulting to its own NAT.
    nats = plan.of_type("aws:ec2/natGateway:NatGateway")
    assert sorted(n.inputs["subnetId"] for n in nats) == sorted(s.id for s in public)
    routes = [r for r in plan.of_type("aws:ec2/route:Route") if r.inputs.get("natGatewayId")]
    assert sorted(r.inputs["natGatewayId"] for r in routes) == sorted(n.id for n in nats)
    ep = plan.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert ep.inputs["serviceName"] == f"com.amazonaws.{cfg.region}.s3" and ep.inputs["vpcEndpointType"] == "Gateway"
    assert all(r.parent_type == "reco-dr:regional:Network" for r in subnets + nats + [vpc])
