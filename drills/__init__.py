"""Disaster-recovery drills for the reco-dr fleet: plan, execute, summarise.

Layers, from pure to side-effecting:
  planning (`drills.planning`, `drills.scenarios`)  fleet config -> Plan; no cloud calls, no credentials
  engine   (`drills.engine`, `drills.actions`, `drills.checks`)  runs a Plan step by step through adapters,
           journals every step, watches abort conditions, rolls back
  adapters (`drills.adapters`)  small interfaces to Pulumi, Route 53, S3, EKS/Kubernetes, Triton probes,
           fault injection; an AWS implementation and a test/local implementation of each
  backends (`drills.backends`)  named bundles of adapters (`aws`, `rehearsal`, `rehearsal-release`)
  report   (`drills.report`)  journal -> Markdown + JSON

Explicit tables, nothing registered by being imported: actions and checks (`drills.registry`), scenarios
(`drills.scenarios.SCENARIOS`), backends (`drills.backends.BACKENDS`) and subcommands (`drills.cli.COMMANDS`).
Modules named in $DRILLS_PLUGINS (tests, out-of-tree backends) may add backends and subcommands
(`drills.plugins.load_plugins()`). Measurements: `drills.measure`; undo of journaled changes: `drills.undo`.
"""
