"""Fast simulation of an experiment with no servers: planted per-arm truths, continuous monitoring, a decision.

Public API:
  ArmTruth(ctr, click_decay)     what users of an arm do: click an impression with probability `ctr`, at a
                                 position drawn with P(k) proportional to (1 - click_decay)^(k - 1), k = 1..10
                                 (higher decay: clicks nearer the top, so a higher NDCG@10)
  simulate(experiment, truths, users, look_every, rng, served_split=None) -> SimulationResult
  true_ndcg10(truth)             the NDCG@10 an arm's truth implies (one click per clicked impression)

Each user sees one impression, so the impression is also the randomisation unit and the per-impression statistics
are exact. Users arrive evenly over the experiment's window; after every `look_every` users the cumulative totals
are judged by `decision.decide`, and the run stops at the first final verdict or when `users` have arrived (at the
window's end). `served_split` ({cell: fraction}) models a broken assignment or logging path: users land in cells
with these fractions while the analysis still expects the declared split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from drills.experiment.decision import Decision, decide
from drills.experiment.metrics import DISCOUNT, ArmTotals, K
from infra.experiments import HOLDOUT, Experiment, expected_split

_GAIN = np.array(DISCOUNT)


@dataclass(frozen=True)
class ArmTruth:
    ctr: float
    click_decay: float = 0.3

    def position_probabilities(self) -> np.ndarray:
        w = (1 - self.click_decay) ** np.arange(K)
        return w / w.sum()


def true_ndcg10(truth: ArmTruth) -> float:
    return float(truth.position_probabilities() @ _GAIN)


@dataclass(frozen=True)
class SimulationResult:
    decision: Decision
    looks: tuple[Decision, ...]
    users: int  # users that had arrived at the last look
    planned_users: int
    totals: dict[str, ArmTotals]

    @property
    def stopped_early(self) -> bool:
        """A final verdict before the window's end."""
        return self.users < self.planned_users


def _look(truth: ArmTruth, users: int, rng: np.random.Generator) -> ArmTotals:
    clicked = int(rng.binomial(users, truth.ctr))
    at = rng.multinomial(clicked, truth.position_probabilities())
    return ArmTotals(
        users=users,
        impressions=users,
        clicks=clicked,
        clicked_impressions=clicked,
        ndcg10_sum=float(at @ _GAIN),
        ndcg10_sumsq=float(at @ (_GAIN * _GAIN)),
    )


def simulate(
    experiment: Experiment,
    truths: Mapping[str, ArmTruth],
    users: int,
    look_every: int,
    rng: np.random.Generator,
    served_split: Mapping[str, float] | None = None,
) -> SimulationResult:
    split = dict(served_split or expected_split(experiment))
    cells = list(split)
    probabilities = np.array([split[c] for c in cells]) / sum(split.values())
    totals = {c: ArmTotals() for c in cells}
    looks: list[Decision] = []
    arrived = 0
    state = None
    while arrived < users:
        batch = min(look_every, users - arrived)
        arrived += batch
        for cell, n in zip(cells, rng.multinomial(batch, probabilities), strict=True):
            # Holdout users are served control's version; only their count matters to the analysis.
            truth = truths[experiment.control.name if cell == HOLDOUT else cell]
            totals[cell] = totals[cell] + _look(truth, int(n), rng)
        now = experiment.start + (experiment.end - experiment.start) * (arrived / users)
        decision = decide(experiment, totals, now, state)
        looks.append(decision)
        state = decision.sequential
        if decision.final:
            break
    return SimulationResult(looks[-1], tuple(looks), arrived, users, totals)
