"""Disaster-recovery drills for the reco-dr fleet: plan, execute, summarise.

Layers, from pure to side-effecting:
  planning (`drills.planning`, `drills.scenarios`)  fleet config -> Plan; no cloud calls, no credentials
  engine   (`drills.engine`, `drills.actions`, `drills.checks`)  runs a Plan step by step through adapters,
           journals every step, watches abort conditions, rolls back
  adapters (`drills.adapters`)  small interfaces to Pulumi, Route 53, S3, EKS/Kubernetes, Triton probes,
           fault injection; an AWS implementation and a test/local implementation of each
  backends (`drills.backends`)  named bundles of adapters (`aws`, plus any a plugin registers)
  report   (`drills.report`)  journal -> Markdown + JSON

Extension points (registries, so later work plugs in without editing these modules): scenarios
(`drills.scenarios.register`), step actions (`drills.actions.action`), checks and abort conditions
(`drills.checks.check`), backends (`drills.backends.register_backend`) and CLI subcommands
(`drills.cli.register_command`). Plugins are modules named `drills/<pkg>/plugin.py` or listed in
$DRILLS_PLUGINS; `drills.plugins.load_plugins()` imports them.
"""
