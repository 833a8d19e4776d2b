"""An A/B experiment as the global stack's `experiments` key declares it, validated strictly, and the interlocks it
imposes. Pulumi-free, in infra: the stack config validates it (infra.config), the drills, releases and the experiment
tooling (drills/experiment) read it.

Public API:
  Experiment, Arm, Guardrail       the schema (pydantic, strict: nothing is coerced, unknown keys are refused)
  parse_experiments(values)        a stack's `experiments` list -> tuple[Experiment, ...]; ExperimentConfigError
  ExperimentConfigError            key (`experiments[0].arms`), value and rule of the first broken rule
  running(experiments, now)        the experiments whose window [start, end) holds `now`
  arm_versions_locked(experiments, now) -> {model version: experiment id}: versions a release must not replace
  expected_split(experiment)       {"holdout" | arm: fraction of all users}: what assignment aims at, SRM tests
  arm_routes(experiments, now)     {ARM_HEADER value: model version}: what each region's edge routes by the arm
                                   header (infra/components/load_balancer.py on AWS, the load-balancer model in the
                                   rehearsal): every cell of every declared experiment that has not ended at `now`

Semantics:
  weights   percent of the *non-holdout* users per arm; they sum to 100.
  holdout   percent of all users carved off first (assignment buckets below holdout*100). Holdout users are served
            the control arm's version, logged with arm "holdout", and left out of the arm comparison: a population
            the experiment never changed, for effects that build up over time. The SRM check counts them as a cell.
  control   exactly one arm has `control: true`; lifts are measured against it; the holdout is served its version.
  salt      defaults to the id; a new salt reshuffles every user (use one when re-running an experiment).
  window    start <= now < end, both UTC. Windows do not overlap: a request is served by one model version, so two
            experiments at once on the ranker would fight over the same users.
  alpha     two-sided, 0 < alpha < 0.5. With power and the minimum detectable effect (a relative lift) it sizes
            the experiment (`stats.sample_size_per_arm`); the effect also scales the sequential test's mixing
            prior (`decision.decide`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra.names import MAX_ARM_RULES, arm_header_value
from infra.schema import Items, Strict

Metric = Literal["ctr", "ndcg10"]  # what an experiment may measure (drills/experiment/metrics.py defines both)
HOLDOUT = "holdout"  # the arm label of holdout users; no arm may take it
_SLUG = r"^[a-z][a-z0-9-]{0,62}$"
_VERSION = r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,40}$"  # a published model version, as infra.config spells it


def _iso_text(v: Any) -> Any:
    # Stack config hands timestamps over as text; ISO 8601 is the one text form taken.
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("rule: an ISO 8601 UTC timestamp such as 2026-11-02T00:00:00Z") from None
    return v


def _utc(v: datetime) -> datetime:
    if v.utcoffset() != timedelta(0):
        raise ValueError(
            "rule: a UTC timestamp, ending in Z or +00:00 (a naive time has no zone; one clock for every region)"
        )
    return v


UtcTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_utc)]


class Arm(Strict):
    name: str = Field(pattern=_SLUG)
    version: str = Field(pattern=_VERSION)
    weight: int = Field(ge=1, le=100)  # percent of the non-holdout users
    control: bool = False

    @field_validator("name")
    @classmethod
    def _not_holdout(cls, v: str) -> str:
        if v == HOLDOUT:
            raise ValueError(f"rule: {HOLDOUT!r} labels the holdout users; an arm takes another name")
        return v


class Guardrail(Strict):
    metric: Metric
    # The relative drop against control tolerated: a larger, significant drop stops the experiment.
    max_relative_drop: float = Field(gt=0, lt=1)


class Experiment(Strict):
    id: str = Field(pattern=_SLUG)
    salt: str = Field(min_length=1)
    arms: Items[Arm]
    holdout: int = Field(default=0, ge=0, le=50)
    start: UtcTime
    end: UtcTime
    primary_metric: Metric = "ctr"
    guardrails: Items[Guardrail] = ()
    alpha: float = 0.05
    power: float = 0.8
    minimum_detectable_effect: float = 0.05  # relative lift of the primary metric the design is sized for

    @model_validator(mode="before")
    @classmethod
    def _salt_defaults_to_id(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "salt" not in data and "id" in data:
            return {**data, "salt": data["id"]}
        return data

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: tuple[Arm, ...]) -> tuple[Arm, ...]:
        names = [a.name for a in v]
        if len(v) < 2:
            raise ValueError(f"rule: at least two arms, a control and a candidate (got {names})")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"rule: arm names are unique ({dup} repeated)")
        weights = [a.weight for a in v]
        if sum(weights) != 100:
            raise ValueError(f"rule: arm weights sum to 100 (weights {weights} sum to {sum(weights)})")
        controls = [a.name for a in v if a.control]
        if len(controls) != 1:
            raise ValueError(f"rule: exactly one arm has control: true (got {len(controls)}: {controls})")
        return v

    @field_validator("end")
    @classmethod
    def _after_start(cls, v: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")
        if start is not None and v <= start:
            raise ValueError(f"rule: end after start ({start.isoformat()})")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0 < v < 0.5:
            raise ValueError("rule: 0 < alpha < 0.5 (two-sided significance level)")
        return v

    @field_validator("power")
    @classmethod
    def _power(cls, v: float) -> float:
        if not 0.5 <= v < 1:
            raise ValueError("rule: 0.5 <= power < 1")
        return v

    @field_validator("minimum_detectable_effect")
    @classmethod
    def _mde(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("rule: 0 < minimum_detectable_effect < 1 (a relative lift: 0.05 is +5%)")
        return v

    @field_validator("guardrails")
    @classmethod
    def _one_guardrail_per_metric(cls, v: tuple[Guardrail, ...]) -> tuple[Guardrail, ...]:
        metrics = [g.metric for g in v]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"rule: one guardrail per metric (got {metrics})")
        return v

    @property
    def control(self) -> Arm:
        return next(a for a in self.arms if a.control)

    @property
    def candidates(self) -> tuple[Arm, ...]:
        return tuple(a for a in self.arms if not a.control)

    def is_running(self, now: datetime) -> bool:
        return self.start <= now < self.end


class ExperimentConfigError(ValueError):
    """A declared experiment broke a rule: `key` is its path under the stack's `experiments` key."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key} = {value!r}: {rule}")


def _key(index: int, loc: Iterable[int | str]) -> str:
    return f"experiments[{index}]" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def _experiment(index: int, value: Any) -> Experiment:
    try:
        return Experiment.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        rule = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            rule = "rule: required key"
        elif err["type"] == "extra_forbidden":
            rule = "rule: unknown key (a typo?)"
        elif not rule.startswith("rule:"):
            rule = f"rule: {rule}"
        raise ExperimentConfigError(_key(index, err["loc"]), err.get("input"), rule) from None


def parse_experiments(values: Sequence[Any]) -> tuple[Experiment, ...]:
    """Validate a stack's `experiments` list: each experiment, then unique ids and non-overlapping windows."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ExperimentConfigError("experiments", values, "rule: a list of experiments")
    out = tuple(_experiment(i, v) for i, v in enumerate(values))
    for i, e in enumerate(out):
        for f in out[:i]:
            if e.id == f.id:
                raise ExperimentConfigError(_key(i, ["id"]), e.id, "rule: experiment ids are unique")
            if e.start < f.end and f.start < e.end:
                raise ExperimentConfigError(
                    _key(i, ["start"]),
                    e.start.isoformat(),
                    f"rule: one experiment at a time (window overlaps {f.id}'s "
                    f"{f.start.isoformat()} .. {f.end.isoformat()})",
                )
    return out


def running(experiments: Iterable[Experiment], now: datetime) -> tuple[Experiment, ...]:
    """The experiments in progress at `now` (start <= now < end)."""
    return tuple(e for e in experiments if e.is_running(now))


def arm_versions_locked(experiments: Iterable[Experiment], now: datetime) -> dict[str, str]:
    """{model version: experiment id} for every arm of a running experiment: a release that would replace or
    retire one of these versions must wait for the experiment's end (or stop it) rather than change an arm."""
    return {a.version: e.id for e in running(experiments, now) for a in e.arms}


def expected_split(experiment: Experiment) -> dict[str, float]:
    """The fraction of all users each cell should get: the holdout (when there is one) and every arm."""
    rest = (100 - experiment.holdout) / 100
    split = {HOLDOUT: experiment.holdout / 100} if experiment.holdout else {}
    return split | {a.name: rest * a.weight / 100 for a in experiment.arms}


def arm_routes(experiments: Iterable[Experiment], now: datetime) -> dict[str, str]:
    """{`<experiment id>.<cell>` (infra.names.arm_header_value): model version} for every cell of every experiment
    whose end is after `now`, the holdout to control's version. An experiment's arms are served from the `pulumi up`
    that declares it (warm before its start, so starting it is only its clients starting to send the header) until
    the first `up` after its end. ValueError when the cells exceed the listener's arm rule priorities."""
    out: dict[str, str] = {}
    for e in experiments:
        if now >= e.end:
            continue
        if e.holdout:
            out[arm_header_value(e.id, HOLDOUT)] = e.control.version
        out |= {arm_header_value(e.id, a.name): a.version for a in e.arms}
    if len(out) > MAX_ARM_RULES:
        raise ValueError(
            f"{len(out)} experiment cells not yet ended need an arm listener rule each; at most {MAX_ARM_RULES} "
            "(end or remove an experiment)"
        )
    return out
