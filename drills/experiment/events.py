"""The impression/click log of an experiment: one JSON object per line, as a real event stream would carry it.

Public API:
  Impression, Click, Event         the schema (pydantic, strict; `type` tells the two apart)
  EventWriter(path)                appends events, one line each, flushed per event (a context manager)
  read_events(path) -> Iterator[Event]
  aggregate(events, experiment_id) -> dict[arm, ArmTotals]   per cell ("holdout" included), metrics.py's definitions

Lines:
  {"type": "impression", "ts": "...Z", "request_id", "user_id", "experiment", "arm", "region", "model_version",
   "items": [item ids of the served top-k, rank order]}
  {"type": "click", "ts", "request_id", "user_id", "experiment", "arm", "region", "model_version",
   "item_id", "position": 1-based rank of the clicked item in that impression}

Aggregation is defensive as a consumer of an at-least-once stream must be: a repeated impression (same request_id)
counts once, a repeated click (same request_id and position) counts once, and a click whose impression is not in
the log is not counted (it cannot be attributed to a served ranking). The impression's arm is the one counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from drills.experiment.metrics import ArmTotals, ndcg10


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    ts: datetime
    request_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    experiment: str
    arm: str
    region: str
    model_version: str


class Impression(_Event):
    type: Literal["impression"] = "impression"
    items: tuple[str, ...]  # the served top-k, best first


class Click(_Event):
    type: Literal["click"] = "click"
    item_id: str
    position: int = Field(ge=1)


Event = Annotated[Impression | Click, Field(discriminator="type")]
_EVENT: TypeAdapter[Impression | Click] = TypeAdapter(Event)


class EventWriter:
    """Appends events to a JSONL file; each line is flushed as written so a reader (or a crash) sees whole lines.
    Thread-safe: the clients of one process share a writer, and a line is written whole under its lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, event: Impression | Click) -> None:
        line = event.model_dump_json() + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_events(path: Path) -> Iterator[Impression | Click]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield _EVENT.validate_json(line)


def aggregate(events: Iterable[Impression | Click], experiment_id: str) -> dict[str, ArmTotals]:
    """Per-cell totals of one experiment's events (see the module docstring for what counts)."""
    arm_of: dict[str, str] = {}  # request_id -> arm, from the impression
    users: dict[str, set[str]] = {}
    clicked: dict[str, set[int]] = {}  # request_id -> distinct clicked positions
    for e in events:
        if e.experiment != experiment_id:
            continue
        if isinstance(e, Impression):
            if e.request_id not in arm_of:
                arm_of[e.request_id] = e.arm
                users.setdefault(e.arm, set()).add(e.user_id)
        else:
            clicked.setdefault(e.request_id, set()).add(e.position)

    impressions: dict[str, int] = {}
    for arm in arm_of.values():
        impressions[arm] = impressions.get(arm, 0) + 1
    totals = {arm: ArmTotals(users=len(users[arm]), impressions=n) for arm, n in impressions.items()}
    for request_id, positions in clicked.items():
        cell = arm_of.get(request_id)
        score = ndcg10(positions)
        if cell is None or score is None:
            continue
        totals[cell] = totals[cell] + ArmTotals(
            clicks=len(positions), clicked_impressions=1, ndcg10_sum=score, ndcg10_sumsq=score * score
        )
    return totals
