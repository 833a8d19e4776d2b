"""Declared experiments for the experiment tests: a valid two-arm declaration, overridable key by key."""

from __future__ import annotations

from typing import Any

from infra.experiments import Experiment, parse_experiments

START, END = "2026-11-02T00:00:00Z", "2026-11-16T00:00:00Z"


def arms(*weights: int) -> list[dict[str, Any]]:
    """A control and candidates (candidate, candidate-2, ...) with these weights, control first."""
    names = ["control", "candidate", *(f"candidate-{i}" for i in range(2, len(weights)))]
    return [
        {"name": n, "version": f"2026.11.{i}", "weight": w, **({"control": True} if i == 0 else {})}
        for i, (n, w) in enumerate(zip(names, weights, strict=True))
    ]


def declared(**over: Any) -> dict[str, Any]:
    return {"id": "ranker-ab", "arms": arms(50, 50), "start": START, "end": END} | over


def experiment(**over: Any) -> Experiment:
    return parse_experiments([declared(**over)])[0]
