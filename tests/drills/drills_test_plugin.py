"""A drills plugin (loaded through $DRILLS_PLUGINS) registering the "test" backend for CLI subprocess tests.

Each process gets its own in-process moto and fake Tritons; what persists between processes is what persists
in reality: the stack config files (LocalStackAdapter) and the journal. A second process re-applies the stack
config to its fresh moto, as AWS would still hold what the first process applied.
"""

from __future__ import annotations

from pathlib import Path

from moto import mock_aws

from drills.backends import register_backend
from drills.clock import Clock
from drills.model import Plan
from tests.drills.drills_support import build_test_backend


def _factory(plan: Plan, options: dict, clock: Clock):
    mock = mock_aws()
    mock.start()
    b = build_test_backend(
        plan.env, Path(options["stacks_dir"]), Path(options["state_dir"]), clock, clients=int(options.get("clients", 4))
    )
    b.options = dict(options)
    b.closers.insert(0, mock.stop)
    return b


register_backend("test", _factory, "moto in-process, fake Tritons, file-backed stacks (tests only)")
