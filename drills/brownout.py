"""The gray-failure faults of the region-brownout drill, as `--fault KIND[=VALUE]` names them (pure: parsing only).

  errors=F        a fraction F of the region's requests answered 5xx
  latency=MS      every request delayed by MS ms (normal, sd 10% of MS)
  loss=F          a fraction F of requests accepted and never answered
  reset=F         a fraction F of connections reset
  blackhole       nothing answered (a partition between users and the region)
  bandwidth=B     responses paced to B bytes per second
  unload          the model unloaded: Triton ready, inference refused (the gray failure /v2/health/ready misses)
  slow-model=MS   the model itself slow: every inference MS ms longer (readiness answers as usual)
  replication-partition  S3 replication cannot reach the region: nothing is copied to or from its bucket until
                  the partition heals (serving is untouched: RPO grows, the replication alarm fires, then catch-up)

Where they are made: on AWS, the network kinds come from AWS FIS actions on the region's Triton pods
(aws:eks:pod-network-latency, -packet-loss, -blackhole-port) or the deployment's own fault hooks, and `unload` from
Triton's model-control API; in the rehearsal the network kinds are injected by the region's load-balancer model
(drills/rehearsal/alb_proc.py) between the listener and its targets, `slow-model` there on inference requests only (a
substitution: every path to the model runs through that process; on AWS a slow model comes from the model or the GPU,
with no FIS action for it), `unload` on the region's real Triton, and `replication-partition` in the rehearsal's S3
replication model. On AWS, S3 replication runs inside AWS: no FIS action partitions it, and denying the replication role
marks objects FAILED for good (S3 Batch Replication re-drives them), so that kind is a rehearsal drill only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drills.errors import GuardrailError

# kind -> (value rule, what the value means); None: the kind takes no value
KINDS: dict[str, tuple[str, str] | None] = {
    "errors": ("a fraction in (0, 1]", "fraction"),
    "latency": ("milliseconds > 0, e.g. 400 or 400ms", "ms"),
    "loss": ("a fraction in (0, 1]", "fraction"),
    "reset": ("a fraction in (0, 1]", "fraction"),
    "blackhole": None,
    "bandwidth": ("bytes per second > 0, e.g. 65536", "bytes_per_s"),
    "unload": None,
    "slow-model": ("milliseconds > 0 added to every inference, e.g. 400 or 400ms", "ms"),
    "replication-partition": None,
}
# the load balancer model's data path (slow-model too: every path to the model runs through it, see alb_proc)
NETWORK = ("errors", "latency", "loss", "reset", "blackhole", "bandwidth", "slow-model")
MODEL = ("unload",)  # the region's Triton
REPLICATION = ("replication-partition",)  # artifact replication between the regions, not serving


@dataclass(frozen=True)
class Fault:
    kind: str
    value: float | None = None

    @property
    def text(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"

    def lb(self) -> dict[str, Any]:
        """The load-balancer model's fault spec (alb_proc.AlbProcess.fault) for a network kind."""
        if self.kind not in NETWORK:
            raise ValueError(f"fault {self.kind!r} is not a network fault ({', '.join(NETWORK)})")
        spec = KINDS[self.kind]
        return {"kind": self.kind} if spec is None else {"kind": self.kind, spec[1]: self.value}


def parse(text: str) -> Fault:
    """`KIND[=VALUE]` -> Fault; a GuardrailError names the kind, the value and the rule."""
    kind, sep, raw = text.strip().partition("=")
    if kind not in KINDS:
        raise GuardrailError("bad-fault", f"--fault {text!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}.")
    rule = KINDS[kind]
    if rule is None:
        if sep:
            raise GuardrailError("bad-fault", f"--fault {text!r}: {kind} takes no value.")
        return Fault(kind)
    if not sep:
        raise GuardrailError("bad-fault", f"--fault {text!r}: {kind} needs a value: {rule[0]}.")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(ms)?", raw.strip())
    value = float(m.group(1)) if m and (m.group(2) is None or rule[1] == "ms") else None
    ok = value is not None and (0 < value <= 1 if rule[1] == "fraction" else value > 0)
    if not ok:
        raise GuardrailError("bad-fault", f"--fault {text!r}: value {raw!r} of {kind}: rule {rule[0]}.")
    return Fault(kind, value)


def base_kind(kind: str) -> str:
    """The fault kind without its value: how the backends' fault adapters are chosen."""
    return kind.partition("=")[0]
