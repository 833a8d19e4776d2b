"""Model release and recovery below a region, on the drills engine (see drills/release/README.md).

planning   pure: release, restore and sub-region plans (steps, gates, capacity, rollback)
gates      pure: PSI, two-sample KS, error rate, p99, offline AUC/NDCG -> verdicts
metrics    pure: Triton's Prometheus text -> counters -> deltas between two scrapes
artifacts  a published version in a bucket: verification (model_build's own), pinning, last-known-good pointers, repair
actions    engine actions (journaled changes); checks: engine gates and abort conditions (tables: drills.registry)
adapters   ServingAdapter / ScoreProbe / MetricsSource / fault implementations (AWS, HTTP, any S3); the `aws`
           backend (drills.backends) builds them
scenarios  bad-release, artifact-corruption, node-loss, restore (table: drills.scenarios); commands: release,
           restore, release-report (table: drills.cli)
"""
