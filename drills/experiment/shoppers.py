"""Simulated shoppers of the A/B rehearsal: who asks, what they are shown, what they click, from the data generator's
planted ground truth.

Public API:
  EXAMINATION                       P(a shopper looks at position k) for k = 1..10: 1/k
  Catalogue.golden(seed, requests)  the golden split's first `requests` ranking requests: each request's user id, its
                                    candidates' item ids, their planted click probabilities (sigmoid of the true
                                    logit, model_build.data's `Split.logit`) and its feature batch (model input)
  served_top(scores, k)             rows of the served top-k, best first (the ranking the model's scores make)
  draw_clicks(probabilities, rng)   1-based positions clicked, each independently with EXAMINATION[k-1] * p
  Shoppers(experiment, catalogue, writer, seed)
      .observe(index, request_id, arm, region, scores, ts)  log one served ranking (impression) and its clicks

The click model is the position-based model (PBM) of the click-model literature: a shopper examines position k with
probability 1/k, whatever is there, and clicks an examined item with its true click probability. The probability is
the one the data generator drew the training labels from, so a model that learned more of the planted signal puts
items shoppers click more often higher, and its CTR and NDCG@10 rise: the online metrics measure rankings the Tritons
really served, against a truth no model saw.

Each ranking's clicks come from their own generator, seeded by (seed, request index, request id): the same served
ranking draws the same clicks whatever the thread or region that served it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from drills.experiment.events import Click, EventWriter, Impression
from drills.experiment.metrics import K
from infra.experiments import HOLDOUT, Experiment

EXAMINATION: np.ndarray = 1.0 / np.arange(1, K + 1)


@dataclass(frozen=True)
class Catalogue:
    users: tuple[str, ...]  # per request
    items: tuple[tuple[int, ...], ...]  # per request: candidate item ids, in row order
    truth: tuple[np.ndarray, ...]  # per request: planted click probability per row
    batches: tuple[dict[str, np.ndarray], ...]  # per request: the model's input tensors

    @classmethod
    def golden(cls, seed: int, requests: int) -> Catalogue:
        from model_build import data

        split = data.make_split(seed, "golden", requests)
        names = [n for n, _ in data.SPARSE]
        user_col, item_col = names.index("user_id"), names.index("item_id")
        p = 1.0 / (1.0 + np.exp(-split.logit.astype(np.float64)))
        users, items, truth, batches = [], [], [], []
        for r in range(requests):
            a, z = r * data.CANDIDATES, (r + 1) * data.CANDIDATES
            users.append(f"u{int(split.sparse_ids[a, user_col])}")
            items.append(tuple(int(x) for x in split.sparse_ids[a:z, item_col]))
            truth.append(p[a:z])
            batches.append(split.batch(a, z))
        return cls(tuple(users), tuple(items), tuple(truth), tuple(batches))

    def __len__(self) -> int:
        return len(self.users)


def served_top(scores: list[float] | np.ndarray, k: int = K) -> np.ndarray:
    """Row indices of the top `k` scores, best first; ties keep row order (as the client library ranks)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def draw_clicks(probabilities: np.ndarray, rng: np.random.Generator) -> list[int]:
    """1-based positions clicked among the shown items (`probabilities` in shown order, at most K)."""
    p = np.asarray(probabilities, dtype=np.float64)[:K] * EXAMINATION[: min(K, len(probabilities))]
    return [int(i) + 1 for i in np.flatnonzero(rng.random(len(p)) < p)]


class Shoppers:
    """Writes what shoppers of `experiment` saw and clicked; thread-safe (the writer is)."""

    def __init__(self, experiment: Experiment, catalogue: Catalogue, writer: EventWriter, seed: int) -> None:
        self.experiment, self.catalogue, self.writer, self.seed = experiment, catalogue, writer, seed
        self.versions = {a.name: a.version for a in experiment.arms} | {HOLDOUT: experiment.control.version}

    def observe(
        self, index: int, request_id: str, arm: str, region: str, scores: list[float], ts: datetime
    ) -> list[int]:
        """Log the impression of request `index` as served (`scores` per row, from the region) and the clicks drawn
        on it; returns the clicked positions."""
        top = served_top(scores)
        items = self.catalogue.items[index]
        common = {
            "ts": ts,
            "request_id": request_id,
            "user_id": self.catalogue.users[index],
            "experiment": self.experiment.id,
            "arm": arm,
            "region": region,
            "model_version": self.versions[arm],
        }
        self.writer.append(Impression.model_validate({**common, "items": tuple(str(items[r]) for r in top)}))
        rng = np.random.default_rng([self.seed, index, zlib.crc32(request_id.encode())])
        positions = draw_clicks(self.catalogue.truth[index][top], rng)
        for pos in positions:
            self.writer.append(Click.model_validate({**common, "item_id": str(items[top[pos - 1]]), "position": pos}))
        return positions
