"""The regional stack's output schema: the contract the global stack, drills and rehearsal read.

The regional program exports exactly these keys (`pulumi stack output --json`); the global stack reads them
through StackReference and validates them here, so a missing or malformed output fails naming the stack and
the key instead of surfacing as a provider error halfway through an update.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class GpuPoolOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    instance_type: str
    gpu_model: str
    gpus_per_instance: int = Field(ge=1)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    min: int = Field(ge=0)
    desired: int = Field(ge=0)
    max: int = Field(ge=1)
    # Defaults: a stack last updated before pools declared capacity guarantees exports none of these.
    capacity: Literal["none", "odcr", "capacity-block"] = "none"
    reserved_instances: int = Field(default=0, ge=0)
    reservation: str | None = Field(default=None, pattern=r"^(cr-[0-9a-f]{17}|arn:aws:resource-groups:.+)$")
    reservation_end: str | None = None


class RegionalOutputs(BaseModel):
    """Documented in README "Stack outputs". Every key is required."""

    model_config = ConfigDict(extra="ignore")
    region: str
    cluster_name: str
    lb_dns_name: str = Field(min_length=1)
    lb_zone_id: str = Field(pattern=r"^Z[A-Z0-9]{4,32}$")
    # CloudWatch dimensions of the global stack's ALB alarms (infra/health.py): `LoadBalancer` (app/<name>/<id>) and
    # `TargetGroup` of the stable Triton target group (targetgroup/<name>/<id>).
    lb_arn_suffix: str = Field(pattern=r"^app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$")
    target_group_arn_suffix: str = Field(pattern=r"^targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$")
    bucket_name: str = Field(min_length=3)
    bucket_arn: str = Field(pattern=r"^arn:aws:s3:::[a-z0-9.\-]{3,63}$")
    kms_key_arn: str = Field(pattern=r"^arn:aws:kms:[a-z0-9-]+:\d{12}:key/.+$")
    gpu_pools: list[GpuPoolOutput] = Field(min_length=1)
    triton_image: str
    model_version: str


OUTPUT_KEYS: tuple[str, ...] = tuple(RegionalOutputs.model_fields)


class OutputError(Exception):
    def __init__(self, stack: str, key: str, rule: str):
        self.stack, self.key = stack, key
        super().__init__(f"stack {stack}: output {key!r} {rule}")


def validate_outputs(stack: str, outputs: dict) -> RegionalOutputs:
    """Validate a regional stack's outputs; raise OutputError naming the stack and the first bad key."""
    try:
        return RegionalOutputs.model_validate(outputs)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            raise OutputError(stack, key, "is missing (run `pulumi up` on that stack first?)") from None
        raise OutputError(stack, key, f"= {err.get('input')!r} is malformed: {err['msg']}") from None
