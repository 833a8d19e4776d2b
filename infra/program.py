"""Dispatch on the stack's role: the same program serves every regional and global stack."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pulumi

from infra.config import STACKS_DIR, ConfigError, GlobalConfig, from_pulumi
from infra.experiments import Experiment


def main(
    stacks_dir: Path = STACKS_DIR, experiments: Sequence[Experiment] | None = None, now: datetime | None = None
) -> None:
    """`pulumi up` runs the defaults. A regional stack serves the arms of its environment's experiments
    (infra/arms.py): `experiments` (default: those of the global stack file, `<env>-global` in `stacks_dir`) as of
    `now` (default: the clock, read once, UTC); the offline plan (infra.mocks.run_program) may pass either."""
    try:
        cfg = from_pulumi()
    except ConfigError as e:
        # RunError prints the message without a Python traceback, and nothing has been declared yet.
        raise pulumi.RunError(str(e)) from None
    stack = pulumi.get_stack()
    if isinstance(cfg, GlobalConfig):
        from infra.global_stack import declare_global

        declare_global(stack, cfg)
        return

    from infra.arms import environment_experiments, regional_arms
    from infra.regional import declare_regional

    try:
        if experiments is None:
            experiments = environment_experiments(cfg.env, stacks_dir)
        arms = regional_arms(stack, cfg, experiments, now or datetime.now(UTC))
    except ConfigError as e:
        raise pulumi.RunError(str(e)) from None  # as above: before anything is declared
    declare_regional(stack, cfg, arms)
