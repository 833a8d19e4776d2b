"""StackAdapter over stack files on disk: `pulumi config set --path` and `pulumi up`, modelled.

The config of record is a directory of `Pulumi.<stack>.yaml` files (a copy of stacks/ in tests; the
rehearsal's copy there). `set_config` edits them the way `pulumi config set --path` does and writes them
atomically (temp file, fsync, rename), so a drill killed at any instant leaves either the old or the new file
and a second process (`drills rollback`) reads exactly what the first wrote. `up` validates the config with the
same schema the Pulumi program uses (infra.config) and then applies it through an *applier*: a callable that
does what the program would do to the outside world (for the global stack: the Route 53 health checks,
weighted/failover alias records and plain per-region records of infra/components/dns.py). Appliers are pluggable,
so the rehearsal can apply through its own moto_server while tests apply to in-process moto.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from drills.errors import DrillError
from drills.journal import atomic_write
from infra.config import PROJECT, ConfigError, GlobalConfig, RegionConfig, load_fleet, load_stack
from infra.names import regional_fqdn

Applier = Callable[["LocalStackAdapter", str, Any], dict]

_TOKEN = re.compile(r'\.?(?:\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|([^.\[]+))')


def parse_path(path: str) -> list[str | int]:
    """Pulumi's config path syntax: `a.b`, `a[0].b`, `a["key.with.dots"]`
    (sdk/go/common/resource/properties_path.go)."""
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad config path {path!r} at {pos}")
        idx, quoted, name = m.groups()
        out.append(int(idx) if idx is not None else (quoted.replace('\\"', '"') if quoted is not None else name))
        pos = m.end()
    return out


def get_path(doc: Any, parts: list[str | int]) -> Any:
    for p in parts:
        doc = doc[p]
    return doc


def set_path(doc: dict, parts: list[str | int], value: Any) -> None:
    """Set, creating maps on the way as `pulumi config set --path` does."""
    node: Any = doc
    for i, p in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(p, int):
            node = node[p]
        else:
            if p not in node or node[p] is None:
                node[p] = [] if isinstance(nxt, int) else {}
            node = node[p]
    node[parts[-1]] = value


class LocalStackAdapter:
    def __init__(
        self, stacks_dir: Path, state_dir: Path, appliers: Mapping[str, Applier] | None = None, project: str = PROJECT
    ):
        """`appliers`: {"global": fn, "region": fn}; each `fn(adapter, stack, cfg) -> outputs`."""
        self.stacks_dir, self.state_dir, self.project = Path(stacks_dir), Path(state_dir), project
        self.appliers = dict(appliers or {})

    # ---------------------------------------------------------------- files
    def _file(self, stack: str) -> Path:
        return self.stacks_dir / f"Pulumi.{stack}.yaml"

    def _doc(self, stack: str) -> dict:
        f = self._file(stack)
        if not f.exists():
            raise DrillError(f"stack {stack}: no {f}")
        return yaml.safe_load(f.read_text()) or {}

    def _config(self, doc: dict) -> dict:
        prefix = f"{self.project}:"
        return {k[len(prefix) :]: v for k, v in (doc.get("config") or {}).items() if k.startswith(prefix)}

    # ---------------------------------------------------------------- StackAdapter
    def get_config(self, stack: str, path: str) -> Any:
        parts = parse_path(path)
        try:
            return get_path(self._config(self._doc(stack)), parts)
        except (KeyError, IndexError, TypeError):
            return None

    def set_config(self, stack: str, values: Mapping[str, Any]) -> None:
        doc = self._doc(stack)
        cfg = doc.setdefault("config", {})
        for path, value in values.items():
            parts = parse_path(path)
            root = f"{self.project}:{parts[0]}"
            if len(parts) == 1:
                cfg[root] = value
            else:
                sub = cfg.setdefault(root, {})
                set_path(sub, parts[1:], value)
        atomic_write(self._file(stack), yaml.safe_dump(doc, sort_keys=False))

    def _validated(self, stack: str) -> GlobalConfig | RegionConfig:
        try:
            cfg = load_stack(stack, self.stacks_dir)
            load_fleet(cfg.env, self.stacks_dir)  # cross-stack rules, as the program's invariants would
        except ConfigError as e:
            raise DrillError(f"pulumi up would fail: {e}") from None
        return cfg

    def _applied_file(self, stack: str) -> Path:
        return self.state_dir / "applied" / f"{stack}.json"

    def preview(self, stack: str) -> dict[str, int]:
        self._validated(stack)
        now = self._config(self._doc(stack))
        f = self._applied_file(stack)
        before = json.loads(f.read_text()) if f.exists() else {}
        keys = set(now) | set(before)
        changed = sum(1 for k in keys if now.get(k) != before.get(k))
        return {"same": len(keys) - changed, "update": changed}

    def up(self, stack: str, message: str) -> dict[str, Any]:
        cfg = self._validated(stack)
        summary = self.preview(stack)
        applier = self.appliers.get(cfg.role)
        outputs = applier(self, stack, cfg) if applier else self.outputs(stack)
        atomic_write(self._applied_file(stack), json.dumps(self._config(self._doc(stack)), sort_keys=True))
        atomic_write(self.state_dir / "outputs" / f"{stack}.json", json.dumps(outputs, indent=1, sort_keys=True))
        return {"summary": summary, "outputs": outputs}

    def outputs(self, stack: str) -> dict[str, Any]:
        f = self.state_dir / "outputs" / f"{stack}.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def seed_outputs(self, stack: str, outputs: dict) -> None:
        atomic_write(self.state_dir / "outputs" / f"{stack}.json", json.dumps(outputs, indent=1, sort_keys=True))


# ---------------------------------------------------------------- the global stack's effect on Route 53
def route53_applier(client: Any) -> Applier:
    """Apply a global stack config to Route 53 as infra/components/dns.py declares it: one HTTPS health check
    per region on its load balancer's /v2/health/ready, one alias A record per region with
    set_identifier=<region>, the weight or failover role from config, the health check and
    evaluate_target_health, and one plain alias A record per region (`regional_fqdn`: simple routing, no health
    check, evaluate_target_health false). Records are UPSERTed, so applying twice changes nothing."""

    def apply(adapter: LocalStackAdapter, stack: str, cfg: GlobalConfig) -> dict:
        fleet = load_fleet(cfg.env, adapter.stacks_dir)
        zone_name = cfg.zone.name.rstrip(".") + "."
        zone_id = cfg.zone.zone_id
        if not zone_id:
            zones = client.list_hosted_zones_by_name(DNSName=zone_name)["HostedZones"]
            match = [z for z in zones if z["Name"] == zone_name]
            zone_id = (
                match[0]["Id"]
                if match
                else client.create_hosted_zone(Name=zone_name, CallerReference=f"{stack}-zone")["HostedZone"]["Id"]
            ).split("/")[-1]
        previous = adapter.outputs(stack).get("health_check_ids", {})
        hc_ids: dict[str, str] = {}
        regional: dict[str, str] = {}
        changes = []
        for region in sorted(cfg.routing.regions):
            out = adapter.outputs(fleet.stack_names[region])
            hc_id = previous.get(region)
            try:
                if hc_id:
                    client.get_health_check(HealthCheckId=hc_id)
            except client.exceptions.NoSuchHealthCheck:
                hc_id = None
            if not hc_id:
                hc_id = client.create_health_check(
                    CallerReference=f"{stack}-{region}-{len(previous)}-{os.getpid()}",
                    HealthCheckConfig={
                        "Type": "HTTPS",
                        "FullyQualifiedDomainName": out["lb_dns_name"],
                        "Port": cfg.health_check.port,
                        "ResourcePath": cfg.health_check.path,
                        "RequestInterval": cfg.health_check.request_interval,
                        "FailureThreshold": cfg.health_check.failure_threshold,
                        "EnableSNI": True,
                    },
                )["HealthCheck"]["Id"]
            hc_ids[region] = hc_id
            route = cfg.routing.regions[region]
            rrset: dict[str, Any] = {
                "Name": cfg.fqdn + ".",
                "Type": "A",
                "SetIdentifier": region,
                "HealthCheckId": hc_id,
                "AliasTarget": {
                    "HostedZoneId": out["lb_zone_id"],
                    "DNSName": out["lb_dns_name"],
                    "EvaluateTargetHealth": True,
                },
            }
            if cfg.routing.mode == "weighted":
                rrset["Weight"] = route.weight
            else:
                rrset["Failover"] = route.failover
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
            regional[region] = regional_fqdn(cfg.record, region, cfg.zone.name)
            # Simple routing: no set identifier, weight, failover role or health check; the target is not evaluated.
            plain_target = {
                "HostedZoneId": out["lb_zone_id"],
                "DNSName": out["lb_dns_name"],
                "EvaluateTargetHealth": False,
            }
            plain = {"Name": regional[region] + ".", "Type": "A", "AliasTarget": plain_target}
            changes.append({"Action": "UPSERT", "ResourceRecordSet": plain})
        # Switching mode would need DELETE of the other kind first; the drills never switch mode.
        client.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Comment": f"{stack} up", "Changes": changes}
        )
        return {
            "fqdn": cfg.fqdn,
            "zone_id": zone_id,
            "routing_mode": cfg.routing.mode,
            "weights": cfg.routing.weights(),
            "health_check_ids": hc_ids,
            "record_set_identifiers": sorted(cfg.routing.regions),
            "regional_fqdns": regional,
            "regional_stacks": {r: fleet.stack_names[r] for r in sorted(cfg.routing.regions)},
        }

    return apply
