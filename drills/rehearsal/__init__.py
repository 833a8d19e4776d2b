"""The rehearsal backend ("the world"): the fleet's AWS side and data plane, running on one machine.

Every part is a model of an AWS behaviour, documented as such in its module:

  procs        process supervisor: own process groups, SIGINT -> SIGTERM -> SIGKILL, cleanup on exit,
               exception, SIGINT/SIGTERM and atexit; port checks (`PortInUse`) and free port blocks
  moto         a real `moto_server` process (the AWS APIs) and boto3 clients with dummy credentials
  triton       one real Triton 2.51 per region on the CPU (nvidia-pytriton wheel) on its own loopback
               address (the region's load balancer); faults: kill, stall (SIGSTOP), unload; restore
  repo         the per-region serving repository from a model_build output or bucket sync: only what the
               CPU server loads, every hash checked against the manifest (`ArtifactError` otherwise)
  declared     the offline plan's declared resources -> Route 53 / S3 / EKS objects in moto
  healthcheck  Route 53 health checks: interval, failure threshold, inverted/disabled, transitions
  dns          Route 53 answers: a real DNS server, weighted/failover over healthy records, TTL, changes
  replicator   S3 replication: stored rules applied with a lag, delete markers, per-object timestamps
  loadgen      clients resolving through the DNS with TTL caches, V2 inference at a fixed rate, per-request
               records; `drills.measure.rto_parts` turns them into RTO parts
  world        `World`: all of the above for a Fleet, as one context manager: its lifecycle and topology,
               composing the parts below (each handed to its users as an object)
  route53      `Route53Model`: records, weights, health checks and the DNS model over them, failover timing
  storage      `Storage`: artifact buckets, the replicator over them, canaries (RPO)
  serving      `RegionServing`: what answers on a region's address; `TritonPerRegion` (one Triton per region)
  traffic      `Traffic`: clients of the served model's signature, in this process or in a child
  loadgen_proc the load generator in its own process (its clients share no GIL with the drill machinery)

The drills side (`python -m drills rehearse`, README.md here):
  adapters     the drills adapter protocols over a World: stack copy + offline plan re-applied (StackAdapter),
               Route 53, S3, EKS capacity, probes through the DNS, data-plane faults; `make_backend`
  command      `python -m drills rehearse` and the "rehearsal" backend's factory (tabled in drills.cli, drills.backends)
  runner       `Session`: the one runner of both commands (world up, client traffic, drills, teardown)
  rehearse     prepare (stack copy, plan, model) -> world -> traffic + drill(s) through the engine -> teardown
  clock        ScaledClock: the engine in configuration-equivalent seconds while the world runs scaled
  model_cache  model_build output cached by the content hash of its inputs, verified before use
  report/chart the rehearsal report (Markdown, JSON, timeline PNG) around the engine's drills report

The release rehearsal (`python -m drills rehearse-release`, drills/release/README.md):
  release_serving  `ServingModel`: the world's serving in a release rehearsal, stable and canary Triton
                   "Deployments" per region behind a weighted load-balancer model
  alb_proc         that load-balancer model in its own process (routing by weight and the track header)
  release_models   candidate builds (good, bad-labels), cached by content hash like the stable model
  release_run      prepare -> world with tracks -> release, bad-release, artifact-corruption, node-loss -> report
  release_report   its index report and chart

What the drills engine's rehearsal adapters call:
  world.route53  records(), get_weights(), set_weights({region: w}), health_status(), set_inverted(),
                 hc_transitions(), routing() (share per region now), resolve(n) (real DNS queries), dns_changes(),
                 ttl, predicted_rto(), rto(records, fault_time, region, slo)
  world.storage  buckets, put_canary(region) -> Canary, replication_of(canary), wait_replicated(canary)
  world.serving  servers(), repo(region), ready(region) (the pods: ready and desired)
  world.traffic  batches(), loadgen(rate=, duration=|count=, clients=) -> LoadGenerator, process(...) -> LoadProcess
  world          reapply(declared) (a re-applied stack), health_check_ids, regional_names (region -> its plain
                 per-region name, as declared), clusters, served_manifest(region),
                 fail_region(region, "kill" | "stall" | "unload") -> fault time, restore_region(region),
                 triton_state(), describe() (ports, pids, ready times, memory, timings, scale), dns_address,
                 region_ip
"""

from drills.rehearsal.loadgen import LoadGenerator, RequestRecord
from drills.rehearsal.procs import PortInUse, ProcessError, Supervisor
from drills.rehearsal.repo import ArtifactError
from drills.rehearsal.storage import Canary
from drills.rehearsal.world import Scale, World, model_build_publisher, plain_publisher, plan_declared

__all__ = [
    "ArtifactError",
    "Canary",
    "LoadGenerator",
    "PortInUse",
    "ProcessError",
    "RequestRecord",
    "Scale",
    "Supervisor",
    "World",
    "model_build_publisher",
    "plain_publisher",
    "plan_declared",
]
