"""What to do with an experiment at one look: ship a candidate, stop it, keep control, or keep going.

Public API:
  decide(experiment, totals, now, previous=None) -> Decision
  Decision     verdict, final, reasons, srm, comparisons, sequential (pass back as `previous` at the next look)
  Comparison   one candidate against control on one metric: both estimates, the lift, the sequential state

Verdicts, checked in this order at every look (looks may come as often as wanted: the test is always valid):
  "stop: sample ratio mismatch"      users per cell do not fit the declared split (p < 0.001): the assignment
                                     or the logging is broken, so no comparison is trusted (final)
  "stop: guardrail <metric> on <arm>"  the candidate is significantly worse on a guardrail metric (its always-
                                     valid interval lies below 0 at level alpha) by more than max_relative_drop
                                     (point estimate of the relative lift) (final)
  "ship <arm>"                       the primary metric's always-valid interval lies above 0 at level
                                     alpha / (number of candidates) (Bonferroni); of several winners, the largest
                                     lift (final)
  "keep control"                     every candidate is significantly worse on the primary metric, or the window
                                     ended without a winner (final)
  "no difference yet"                otherwise (not final)

The mSPRT mixing prior's scale tau is the effect the design cares about, in the metric's units: the minimum
detectable effect times control's current mean for the primary metric, max_relative_drop times it for a guardrail.
Holdout users count in the SRM check only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from drills.experiment.metrics import ArmTotals, Metric
from drills.experiment.stats import (
    Estimate,
    Sequential,
    Srm,
    arm_estimate,
    msprt_update,
    relative_lift,
    srm_check,
)
from infra.experiments import Experiment, expected_split


@dataclass(frozen=True)
class Comparison:
    arm: str
    metric: Metric
    control: Estimate
    candidate: Estimate
    lift: Estimate  # relative, fixed-horizon delta-method interval (for the report)
    sequential: Sequential  # always-valid: what decisions read

    def describe(self) -> str:
        return (
            f"{self.metric} on {self.arm}: {self.candidate.value:.4f} vs control {self.control.value:.4f}, "
            f"lift {self.lift.value:+.2%} [{self.lift.lo:+.2%}, {self.lift.hi:+.2%}], "
            f"always-valid p {self.sequential.p_value:.3g}"
        )


@dataclass(frozen=True)
class Decision:
    verdict: str
    final: bool
    reasons: tuple[str, ...]
    srm: Srm
    comparisons: tuple[Comparison, ...]
    sequential: dict[str, Sequential]  # "<arm>/<metric>" (primary), "<arm>/<metric>/guardrail"


def _compare(
    experiment: Experiment,
    totals: Mapping[str, ArmTotals],
    arm: str,
    metric: Metric,
    effect: float,
    alpha: float,
    previous: Sequential,
) -> Comparison:
    empty = ArmTotals()
    control = arm_estimate(totals.get(experiment.control.name, empty), metric, experiment.alpha)
    candidate = arm_estimate(totals.get(arm, empty), metric, experiment.alpha)
    tau = effect * control.value
    state = msprt_update(
        previous, candidate.value - control.value, candidate.variance + control.variance, tau * tau, alpha
    )
    return Comparison(arm, metric, control, candidate, relative_lift(control, candidate, experiment.alpha), state)


def decide(
    experiment: Experiment,
    totals: Mapping[str, ArmTotals],
    now: datetime,
    previous: Mapping[str, Sequential] | None = None,
) -> Decision:
    """The decision at `now` from cumulative per-cell totals (arm names and "holdout" as keys)."""
    previous = previous or {}
    split = expected_split(experiment)
    srm = srm_check({cell: totals[cell].users for cell in totals}, split)
    primary_alpha = experiment.alpha / len(experiment.candidates)

    primary: list[Comparison] = []
    guards: list[tuple[Comparison, float]] = []
    for arm in experiment.candidates:
        key = f"{arm.name}/{experiment.primary_metric}"
        primary.append(
            _compare(
                experiment,
                totals,
                arm.name,
                experiment.primary_metric,
                experiment.minimum_detectable_effect,
                primary_alpha,
                previous.get(key, Sequential()),
            )
        )
        for g in experiment.guardrails:
            # A guardrail on the primary metric gets its own state: its alpha and prior scale differ.
            key = f"{arm.name}/{g.metric}/guardrail"
            guards.append(
                (
                    _compare(
                        experiment,
                        totals,
                        arm.name,
                        g.metric,
                        g.max_relative_drop,
                        experiment.alpha,
                        previous.get(key, Sequential()),
                    ),
                    g.max_relative_drop,
                )
            )
    comparisons = (*primary, *(c for c, _ in guards))
    sequential = {f"{c.arm}/{c.metric}": c.sequential for c in primary} | {
        f"{c.arm}/{c.metric}/guardrail": c.sequential for c, _ in guards
    }

    def done(verdict: str, final: bool, *reasons: str) -> Decision:
        return Decision(verdict, final, reasons, srm, comparisons, sequential)

    if not srm.ok:
        return done(
            "stop: sample ratio mismatch",
            True,
            f"users per cell {srm.observed} against expected { ({c: round(e) for c, e in srm.expected.items()}) }: "
            f"chi-square {srm.chi2:.1f} on {srm.df} df, p {srm.p_value:.2g} < 0.001",
        )
    for c, max_drop in guards:
        if c.sequential.worse and c.lift.value < -max_drop:
            return done(
                f"stop: guardrail {c.metric} on {c.arm}",
                True,
                f"{c.describe()}: significantly worse, beyond the tolerated drop of {max_drop:.1%}",
            )
    winners = [c for c in primary if c.sequential.better]
    if winners:
        best = max(winners, key=lambda c: c.lift.value if not math.isnan(c.lift.value) else -math.inf)
        return done(f"ship {best.arm}", True, *(f"{c.describe()}: better" for c in winners))
    if all(c.sequential.worse for c in primary):
        return done("keep control", True, *(f"{c.describe()}: worse" for c in primary))
    if now >= experiment.end:
        return done("keep control", True, "the window ended without a winner", *(c.describe() for c in primary))
    return done("no difference yet", False, *(c.describe() for c in primary))
