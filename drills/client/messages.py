"""What goes in and out of `RankerClient.rank`: the request (candidates + V2 body), the response, failed attempts."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drills.client.fallback import ItemId

# A header value http.client sends as is: visible ASCII, no space or control character (a CR/LF would be refused by
# http.client at send time, which must never raise).
_HEADER_VALUE = re.compile(r"[!-~]+")


@dataclass(frozen=True)
class RankRequest:
    """One ranking: `item_ids[i]` is the candidate of row i of the batch that `body` (a KServe V2 JSON inference
    request) carries. The body is encoded once and re-sent as is by a retry or hedge; `item_ids` let the
    fallback rank when no region answers. `arm`: the A/B arm header's value (infra.names.ARM_HEADER,
    `<experiment id>.<cell>`), sent on every attempt; None sends no header. `RankerClient.rank` sets it from the
    user id when the client has a running experiment."""

    item_ids: tuple[ItemId, ...]
    body: bytes
    arm: str | None = None

    def __post_init__(self) -> None:
        if not self.item_ids:
            raise ValueError("item_ids: a ranking request needs at least one candidate")
        if self.arm is not None and not (isinstance(self.arm, str) and _HEADER_VALUE.fullmatch(self.arm)):
            raise ValueError(f"arm: {self.arm!r} is no header value (visible ASCII, no spaces), e.g. 'exp-id.control'")

    @classmethod
    def from_inputs(cls, item_ids: Sequence[ItemId], inputs: Sequence[Mapping[str, Any]]) -> RankRequest:
        """Build from V2 input tensors ({"name", "shape", "datatype", "data"}: JSON values, e.g. `a.ravel().tolist()`
        for a numpy array). Every tensor's first dimension must be the number of candidates."""
        for t in inputs:
            shape = t.get("shape") or [None]
            if shape[0] != len(item_ids):
                raise ValueError(f"input {t.get('name')!r}: shape {shape} has not one row per item ({len(item_ids)})")
        return cls(tuple(item_ids), json.dumps({"inputs": list(inputs)}).encode())


@dataclass(frozen=True)
class AttemptError:
    """One failed attempt. kind: connect | reset | timeout | status (an HTTP error status) | bad_response (200 but
    no usable scores). `status` is the HTTP status when one came back."""

    region: str
    kind: str
    detail: str
    latency_ms: float
    status: int | None = None


@dataclass(frozen=True)
class RankResponse:
    """ranking: the candidates best first (from the model's scores, or from the fallback when degraded; None only
    when degraded without a fallback configured: `failed`). scores: the model's score per row in request order
    (None when degraded). region: the region that answered (None when degraded). arm: the user's experiment cell
    ("holdout" or an arm name) that the client assigned and sent in the arm header, None when no experiment applied
    (none configured, not running at the call, or no user id); set on a degraded answer too (the user's cell, though
    the fallback ranked), so an event log can count it where the user belongs."""

    ranking: list[ItemId] | None
    scores: list[float] | None
    region: str | None
    attempts: int
    hedged: bool
    degraded: bool
    latency_ms: float
    errors: list[AttemptError] = field(default_factory=list)
    arm: str | None = None

    @property
    def failed(self) -> bool:
        return self.ranking is None
