"""Plugin loading: how later work adds scenarios, actions, checks, backends and CLI subcommands.

A plugin is a module imported for its registrations (`@register` scenario, `@action`, `@check`,
`register_backend`, `register_command`). Two ways in:
  - a file `drills/<package>/plugin.py` in this source tree (e.g. drills/rehearsal/plugin.py,
    drills/release/plugin.py): found automatically;
  - $DRILLS_PLUGINS, a comma-separated list of importable module names (tests, out-of-tree backends).
A broken auto-discovered plugin is reported and skipped so it cannot take `drills plan` down with it; a plugin
named in $DRILLS_PLUGINS must import, since the user asked for it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

_loaded: set[str] = set()


def load_plugins() -> list[str]:
    names = []
    pkg = Path(__file__).resolve().parent
    for p in sorted(pkg.glob("*/plugin.py")):
        names.append((f"drills.{p.parent.name}.plugin", False))
    for n in filter(None, (s.strip() for s in os.environ.get("DRILLS_PLUGINS", "").split(","))):
        names.append((n, True))
    for name, required in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:
            if required:
                raise
            print(f"warning: plugin {name} failed to load and is skipped: {e}", file=sys.stderr)
            continue
        _loaded.add(name)
    return sorted(_loaded)
