"""The one definition of each online metric of an experiment arm, and the sufficient statistics that carry them.

Public API:
  ndcg10(clicked_positions) -> float | None   NDCG@10 of one served ranking, from its clicks
  ArmTotals                                   per-arm sums (users, impressions, clicks, ...); `a + b` merges two
  Metric                                      the metric names an experiment may use: "ctr", "ndcg10"

Definitions (the unit of analysis is the impression: one served ranking, one request_id):
  ctr     the share of impressions with at least one click: a proportion, so each impression is a Bernoulli
          trial (clicks per impression could exceed 1 and is reported as `clicks`, not analysed).
  ndcg10  for an impression with at least one click, DCG of its clicked positions 1..10 over the ideal DCG of
          as many clicks (all distinct clicked positions, at most 10) placed at the top; binary relevance,
          discount 1/log2(position + 1). Impressions without a click have no NDCG and are left out of the mean.
          This is model_build.train.ndcg_at_k with clicks as labels, so online and offline NDCG@10 agree in kind.
  users   distinct user ids with at least one impression in the arm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from infra.experiments import Metric

__all__ = ["DISCOUNT", "ArmTotals", "K", "Metric", "ndcg10"]  # Metric: re-exported, its one definition is in infra

K = 10
# DISCOUNT[i] is the gain of a click at 1-based position i + 1.
DISCOUNT: tuple[float, ...] = tuple(1.0 / math.log2(p + 1) for p in range(1, K + 1))


def ndcg10(clicked_positions: Iterable[int]) -> float | None:
    """NDCG@10 of one impression from its clicked 1-based positions (repeats count once); None without a click."""
    clicked = set(clicked_positions)
    if not clicked:
        return None
    dcg = sum(DISCOUNT[p - 1] for p in clicked if 1 <= p <= K)
    ideal = sum(DISCOUNT[: min(len(clicked), K)])
    return dcg / ideal


@dataclass(frozen=True)
class ArmTotals:
    """Sufficient statistics of one arm: enough for both metrics, their intervals and the sequential test."""

    users: int = 0
    impressions: int = 0
    clicks: int = 0  # click events (deduplicated), for the report
    clicked_impressions: int = 0  # impressions with at least one click: the CTR numerator
    ndcg10_sum: float = 0.0  # over clicked impressions
    ndcg10_sumsq: float = 0.0

    @property
    def ctr(self) -> float:
        return self.clicked_impressions / self.impressions if self.impressions else math.nan

    @property
    def ndcg10(self) -> float:
        return self.ndcg10_sum / self.clicked_impressions if self.clicked_impressions else math.nan

    def __add__(self, other: ArmTotals) -> ArmTotals:
        return ArmTotals(
            users=self.users + other.users,
            impressions=self.impressions + other.impressions,
            clicks=self.clicks + other.clicks,
            clicked_impressions=self.clicked_impressions + other.clicked_impressions,
            ndcg10_sum=self.ndcg10_sum + other.ndcg10_sum,
            ndcg10_sumsq=self.ndcg10_sumsq + other.ndcg10_sumsq,
        )

    def report(self) -> dict[str, float | int]:
        """The per-arm figures a report shows: `experiment.arms.<arm>.{users,impressions,clicks,ctr,ndcg10}`."""
        return {
            "users": self.users,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr": self.ctr,
            "ndcg10": self.ndcg10,
        }
