"""The fallback ranking published with every release: what a client shows when no region can rank.

`fallback.json` sits in the release beside the model, listed in `manifest.json` with its sha256 (role
`fallback`) and covered by the release signature like every other file, so a client checks it the way a pod
checks the model (drills.client.fallback.load_fallback(path, sha256) reads exactly this format):

    {"model": {"name": ..., "version": ...}, "order": [item ids, best first], "source": "..."}

The order is item popularity over the training data the model was trained on: clicks per item, then
impressions, then item id (deterministic). Items never shown in training are left out; the client ranks them
last, in the order it was given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FALLBACK = "fallback.json"
SOURCE = "popularity over the training data: clicks per item, then impressions, then item id"


def popularity_order(item_ids: np.ndarray, labels: np.ndarray) -> list[int]:
    """Item ids shown in training, most clicked first (ties: more impressions, then the smaller id)."""
    items = np.asarray(item_ids, dtype=np.int64).ravel()
    clicks = np.bincount(items, weights=np.asarray(labels, dtype=np.float64).ravel())
    shown = np.bincount(items, minlength=clicks.size)
    seen = np.flatnonzero(shown)
    # lexsort: the last key is the primary one.
    order = seen[np.lexsort((seen, -shown[seen], -clicks[seen]))]
    return [int(i) for i in order]


def document(model: str, version: str, order: list[int]) -> dict:
    return {"model": {"name": model, "version": version}, "order": order, "source": SOURCE}


def write(out: Path, model: str, version: str, order: list[int]) -> Path:
    """Write `out/fallback.json` (compact: it is read by clients on every start)."""
    path = out / FALLBACK
    path.write_text(json.dumps(document(model, version, order), separators=(",", ":")) + "\n")
    return path
