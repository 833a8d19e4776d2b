"""One small build per test session (a tiny training run; export, gates and repository as in production)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_build.build import BuildOptions, BuildResult, build
from model_build.config import TrainConfig
from tests.signing import signing_key

TINY = TrainConfig(train_requests=256, validation_requests=64, epochs=1)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    out = tmp_path_factory.mktemp("model_build") / "repo"
    return build(BuildOptions(out=out, train=TINY, signing_key=signing_key()[0]), log=lambda s: None)


@pytest.fixture
def repo(built: BuildResult, tmp_path: Path) -> Path:
    """A private copy of the session's repository, free to tamper with."""
    dst = tmp_path / "repo"
    shutil.copytree(built.out, dst)
    return dst
