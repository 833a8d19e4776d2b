"""Build options that must be importable without torch (the CLI parses them before deciding what to load)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from infra.config import ROOT
from model_build.data import DEFAULT_SEED

DEFAULT_OUT = ROOT / "build" / "model"  # git-ignored (/build/)


class RankerConfig(BaseModel):
    """Model size; the defaults train on two CPU cores in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    embedding_dim: int = Field(default=16, ge=2, le=256)
    cross_layers: int = Field(default=2, ge=0, le=8)
    deep: tuple[int, ...] = (128, 64)
    top: tuple[int, ...] = (64,)
    dense_hidden: int = Field(default=32, ge=4)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = DEFAULT_SEED
    train_requests: int = Field(default=12000, ge=8)
    validation_requests: int = Field(default=1000, ge=8)
    epochs: int = Field(default=2, ge=1, le=50)
    batch_size: int = Field(default=1024, ge=16)
    lr: float = Field(default=1e-2, gt=0)
    weight_decay: float = Field(default=1e-6, ge=0)
    bad_labels: bool = False
    # One intra-op thread: this model's ops are too small to split well, and on a shared 2-core machine
    # OpenMP worker threads spin-wait for each other (measured: 14 s single-threaded vs 80 s with 2 threads
    # while another job held a core).
    threads: int = Field(default=1, ge=1)
    model: RankerConfig = RankerConfig()
