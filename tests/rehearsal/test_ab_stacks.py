"""The ab-test rehearsal's stack side (drills/rehearsal/ab_run.py): the two experiments it declares validate as the
global stack's `experiments` once every arm version is pinned, give the arm routes the regional stacks serve, and a
declaration the fleet refuses leaves the file as it was; starting the second when the first ends is the window edit
`experiment start|stop` makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drills.experiment.window import change_window
from drills.rehearsal.ab_run import BAD, MORE, declare_experiments, experiments_config
from infra.config import ConfigError, load_fleet
from infra.experiments import arm_routes, running
from tests.experiment.support import pinned_stacks

STABLE, MORE_V, BAD_V = "2026.11.0", "2026.11.0-more", "2026.11.0-bad"
T0 = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_both_experiments_validate_and_route_every_cell_until_their_end(tmp_path):
    stacks = pinned_stacks(tmp_path, (MORE_V, BAD_V))
    declare_experiments(stacks, "prod", experiments_config(STABLE, MORE_V, BAD_V, T0))
    exps = load_fleet("prod", stacks).glob.experiments
    assert [e.id for e in running(exps, T0 + timedelta(hours=1))] == [MORE]
    routes = arm_routes(exps, T0 + timedelta(hours=1))  # the second is declared, not started: its arms warm
    assert routes == {
        f"{MORE}.holdout": STABLE,
        f"{MORE}.control": STABLE,
        f"{MORE}.candidate": MORE_V,
        f"{BAD}.control": STABLE,
        f"{BAD}.candidate": BAD_V,
    }
    # The first stopped, the second started: the edits `experiment stop|start` make.
    now = T0 + timedelta(hours=1)
    change_window("prod", stacks, MORE, "end", now)
    change_window("prod", stacks, BAD, "start", now)
    exps = load_fleet("prod", stacks).glob.experiments
    assert [e.id for e in running(exps, now)] == [BAD]
    assert set(arm_routes(exps, now)) == {f"{BAD}.control", f"{BAD}.candidate"}


def test_an_unpinned_arm_version_is_refused_and_the_file_kept(tmp_path):
    stacks = pinned_stacks(tmp_path, (MORE_V,))  # the bad-labels build not pinned anywhere
    before = (stacks / "Pulumi.prod-global.yaml").read_text()
    with pytest.raises(ConfigError, match=BAD_V):
        declare_experiments(stacks, "prod", experiments_config(STABLE, MORE_V, BAD_V, T0))
    assert (stacks / "Pulumi.prod-global.yaml").read_text() == before
