"""A/B experiments of ranker versions (issue 19): the pure, server-free part.

Modules, from declaration to decision:
  (infra.experiments: the experiment as stack config declares it; parse_experiments, running, arm_versions_locked)
  assignment  user id -> arm by salted hash, the same in every region
  events      the impression/click JSONL log: EventWriter, read_events, aggregate -> per-arm ArmTotals
  metrics     the one definition of CTR and NDCG@10, and ArmTotals
  stats       intervals, lift, SRM, the mSPRT always-valid test, sample size
  decision    decide(experiment, totals, now, previous) -> Decision
  simulate    planted per-arm truths, continuous monitoring, no servers (the statistical tests use it)
  window      start/stop: one value of the window rewritten in the global stack file, the fleet validated first
  command     `python -m drills experiment plan|report|start|status|stop`
"""
