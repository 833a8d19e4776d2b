"""Plugins: modules from outside this tree that add scenarios' backends or subcommands (tests, out-of-tree
backends), named in $DRILLS_PLUGINS (comma-separated importable module names) and imported for their
`drills.backends.register_backend` / `drills.cli.register_command` calls. Everything in this tree is in the explicit
tables instead (drills.registry, drills.scenarios, drills.backends, drills.cli). A plugin the user named must import.
"""

from __future__ import annotations

import importlib
import os

_loaded: set[str] = set()


def load_plugins() -> list[str]:
    for name in filter(None, (s.strip() for s in os.environ.get("DRILLS_PLUGINS", "").split(","))):
        if name not in _loaded:
            importlib.import_module(name)
            _loaded.add(name)
    return sorted(_loaded)
