from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.client.regions import FakeRegion


@pytest.fixture
def region() -> Iterator[Callable[..., FakeRegion]]:
    """Start a fake region: region("ok" | "503" | ..., delay_ms=...); all are stopped after the test."""
    started: list[FakeRegion] = []

    def start(mode: str, delay_ms: float = 0) -> FakeRegion:
        started.append(FakeRegion(mode, delay_ms))
        return started[-1]

    yield start
    for r in started:
        r.close()
