"""The degraded answer: a fallback ranking published with each model version, hash-checked like the model.

File format (JSON, UTF-8), published beside the model version it belongs to, its sha256 recorded with it:

    {"model": {"name": "ranker", "version": "2024-06-01.3"},
     "order": [item ids, best first: ints or strings, no duplicates],
     "source": "how the order was made, e.g. popularity over the training data"}

Ranking candidates with it: by their position in `order`; items absent from `order` go last, in the order the
caller gave them (the sort is stable), so an empty or stale fallback still answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drills.client.errors import FallbackError

ItemId = int | str


@dataclass(frozen=True)
class Fallback:
    model_name: str
    model_version: str
    order: tuple[ItemId, ...]
    source: str
    _position: dict[ItemId, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        position = {item: i for i, item in enumerate(self.order)}
        if len(position) != len(self.order):
            dup = next(x for i, x in enumerate(self.order) if position[x] != i)
            raise FallbackError(f"fallback of {self.model_name} {self.model_version}: item {dup!r} appears twice")
        object.__setattr__(self, "_position", position)

    def rank(self, item_ids: Sequence[ItemId]) -> list[ItemId]:
        """`item_ids` ordered by their position in `order`; unknown items last, in their given order."""
        last = len(self.order)
        return sorted(item_ids, key=lambda item: self._position.get(item, last))


def load_fallback(path: str | Path, sha256: str) -> Fallback:
    """Read and check a fallback file: its sha256 must be `sha256` (hex), else FallbackError naming both digests."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FallbackError(f"fallback {path}: cannot read: {e}") from e
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256.strip().lower():
        raise FallbackError(f"fallback {path}: sha256 {actual} does not match the published {sha256}")
    try:
        doc = json.loads(raw)
        model, order, source = doc["model"], doc["order"], doc["source"]
        name, version = model["name"], model["version"]
    except (ValueError, KeyError, TypeError) as e:
        raise FallbackError(f"fallback {path}: not a fallback document ({type(e).__name__}: {e})") from e
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(source, str)):
        raise FallbackError(f"fallback {path}: model.name, model.version and source must be strings")
    if not isinstance(order, list) or not all(isinstance(x, int | str) and not isinstance(x, bool) for x in order):
        raise FallbackError(f"fallback {path}: order must be a list of item ids (ints or strings)")
    return Fallback(model_name=name, model_version=version, order=tuple(order), source=source)
