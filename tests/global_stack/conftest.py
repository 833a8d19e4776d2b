"""Fixtures for the global program under Pulumi mocks.

Provisional: until infra/mocks.py (the shared Mocks + realistic regional outputs) lands, a minimal
recording Mocks answers StackReference with outputs shaped like infra.outputs.RegionalOutputs.
"""
from __future__ import annotations

import pulumi
import pytest

from infra.catalog import REGIONS
from infra.config import load_fleet


def fake_outputs(stack: str) -> dict:
    from infra.config import load_stack

    cfg = load_stack(stack)
    region = cfg.region
    return {
        "region": region,
        "cluster_name": f"reco-dr-{stack}",
        "lb_dns_name": f"{stack}-0123456789.elb.{region}.amazonaws.com",
        "lb_zone_id": "Z35SXDOTRQ7X7K",
        "bucket_name": f"reco-dr-{stack}-artifacts",
        "bucket_arn": f"arn:aws:s3:::reco-dr-{stack}-artifacts",
        "kms_key_arn": f"arn:aws:kms:{region}:111111111111:key/0000-{REGIONS[region]}",
        "gpu_pools": [{"name": p.name, "instance_type": p.instance_type, "gpu_model": p.gpu.gpu_model,
                       "gpus_per_instance": p.gpu.gpus, "compute_capability": p.gpu.compute_capability,
                       "min": p.min, "desired": p.desired, "max": p.max} for p in cfg.gpu_pools],
        "triton_image": cfg.triton.image,
        "model_version": cfg.model.version,
    }


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, outputs: dict[str, dict]):
        self.outputs = outputs
        self.resources: list[dict] = []

    def new_resource(self, args):
        if args.typ == "pulumi:pulumi:StackReference":
            stack = args.inputs["name"].split("/")[-1]
            return args.inputs["name"], {"name": args.inputs["name"], "outputs": self.outputs.get(stack, {})}
        self.resources.append({"type": args.typ, "name": args.name, "inputs": args.inputs, "provider": args.provider})
        state = dict(args.inputs)
        state.setdefault("arn", f"arn:aws:mock:::{args.name}")
        if args.typ == "aws:route53/zone:Zone":
            state["zoneId"] = "ZMOCKZONE0001"
        return f"{args.name}-id", state

    def call(self, args):
        return {}


def run_global(stack: str, cfg, outputs: dict[str, dict]):
    from infra.global_stack import declare_global

    mocks = RecordingMocks(outputs)
    pulumi.runtime.set_mocks(mocks, project="reco-dr", stack=stack, preview=False)

    @pulumi.runtime.test
    def program():
        g = declare_global(stack, cfg)
        return pulumi.Output.all(*[o for o in g.outputs.values()], g.replication.role.arn)

    program()
    return mocks.resources
