"""Offline plan: what a stack declares, without the Pulumi CLI, plugins or cloud credentials.

    python -m infra.plan STACK                 readable summary: resources with the inputs that matter,
                                               counts per type, stack outputs
    python -m infra.plan STACK --json          every resource with all its inputs, counts and outputs, as JSON
    python -m infra.plan STACK --diff GIT_REF  resources added, removed and changed against the program (and
                                               stack files) at GIT_REF, with the changed input paths
    --stacks-dir DIR                           read Pulumi.<stack>.yaml files from DIR instead of stacks/

It runs the real program (`infra.program.main`) under `infra.mocks`, beside the fleet findings of the stack's
environment (`infra.invariants`). PR reviewers without cloud access read this instead of `pulumi preview`.

Exit status: 0 planned, no ERROR finding (warnings are reported, not failed); 1 GIT_REF is not a commit or its
plan failed; 2 a config error, its one-line message on stderr (nothing planned); 3 planned, but the fleet
findings include an ERROR (each also on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXIT_CONFIG_ERROR = 2
EXIT_ERROR_FINDINGS = 3  # the plan is complete (stdout as usual); a fleet finding is an ERROR

# Per type: the input paths a reviewer looks at first. Other types show their first few scalar inputs.
KEY_INPUTS: dict[str, list[str]] = {
    "pulumi:providers:aws": ["region", "defaultTags"],
    "pulumi:providers:kubernetes": ["enableServerSideApply"],
    "aws:ec2/vpc:Vpc": ["cidrBlock"],
    "aws:ec2/subnet:Subnet": ["availabilityZone", "cidrBlock", "mapPublicIpOnLaunch"],
    "aws:eks/cluster:Cluster": [
        "name",
        "version",
        "accessConfig.authenticationMode",
        "vpcConfig.endpointPrivateAccess",
        "vpcConfig.endpointPublicAccess",
        "encryptionConfig.resources",
        "enabledClusterLogTypes",
        "kubernetesNetworkConfig.serviceIpv4Cidr",
    ],
    "aws:eks/nodeGroup:NodeGroup": ["instanceTypes", "amiType", "capacityType", "scalingConfig", "labels", "taints"],
    "aws:eks/addon:Addon": ["addonName"],
    "aws:kms/key:Key": ["description", "enableKeyRotation"],
    "aws:s3/bucket:Bucket": ["bucket", "forceDestroy"],
    "aws:s3/bucketVersioning:BucketVersioning": ["versioningConfiguration.status"],
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": ["rules"],
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": [
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ],
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": ["rules"],
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": ["rule.objectOwnership"],
    "aws:s3/bucketPolicy:BucketPolicy": ["policy"],
    "aws:iam/rolePolicy:RolePolicy": ["policy"],
    "aws:lb/loadBalancer:LoadBalancer": ["name", "loadBalancerType", "internal"],
    "aws:lb/targetGroup:TargetGroup": ["name", "port", "protocol", "targetType", "healthCheck.path"],
    "aws:lb/listener:Listener": ["port", "protocol", "sslPolicy", "certificateArn"],
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": ["fromPort", "toPort", "cidrIpv4", "description"],
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": ["fromPort", "toPort", "description"],
    "aws:route53/healthCheck:HealthCheck": [
        "tags.region",
        "tags.check",
        "type",
        "resourcePath",
        "searchString",
        "cloudwatchAlarmName",
        "childHealthThreshold",
    ],
    "aws:cloudwatch/metricAlarm:MetricAlarm": [
        "tags.region",
        "tags.alarm",
        "name",
        "metricName",
        "statistic",
        "extendedStatistic",
        "threshold",
        "datapointsToAlarm",
        "evaluationPeriods",
    ],
    "kubernetes:apps/v1:Deployment": [
        "metadata.name",
        "spec.template.spec.containers[0].image",
        "spec.template.spec.containers[0].args[1]",
        "spec.template.spec.containers[0].readinessProbe.httpGet.path",
        "spec.template.spec.containers[0].resources.limits",
        "spec.template.spec.nodeSelector",
    ],
    "kubernetes:apps/v1:DaemonSet": ["metadata.name", "spec.template.spec.containers[0].image"],
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": ["metadata.name", "spec.minReplicas", "spec.maxReplicas"],
    "kubernetes:policy/v1:PodDisruptionBudget": ["metadata.name", "spec.maxUnavailable"],
    "kubernetes:helm.sh/v3:Release": ["chart", "version", "namespace"],
    "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding": ["spec.serviceRef", "spec.targetType"],
}


def _get(d: Any, path: str) -> Any:
    cur = d
    for part in path.replace("]", "").replace("[", ".").split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def _short(v: Any, width: int = 100) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= width else s[: width - 3] + "..."


def key_inputs(type_: str, inputs: dict) -> dict[str, Any]:
    paths = KEY_INPUTS.get(type_)
    if paths is None:
        scalars = [(k, v) for k, v in inputs.items() if isinstance(v, (str, int, float, bool)) and k != "tags"]
        return dict(scalars[:3])
    return {p: v for p in paths if (v := _get(inputs, p)) is not None}


def plan_dict(plan, findings: list[dict] | None = None) -> dict:
    return {
        "stack": plan.stack,
        "resources": [r.as_dict() for r in plan.resources],
        "counts": plan.counts(),
        "outputs": plan.outputs,
        "findings": findings or [],
    }


def print_text(d: dict) -> None:
    print(f"Stack {d['stack']}: {len(d['resources'])} resources")
    for r in d["resources"]:
        if not r["custom"]:
            continue  # components are grouping only; their children are listed
        ki = key_inputs(r["type"], r["inputs"])
        print(f"  {r['type']}  {r['name']}")
        for k, v in ki.items():
            print(f"      {k}: {_short(v)}")
    print("\nCounts per type:")
    for t, n in d["counts"].items():
        print(f"  {n:4d}  {t}")
    print("\nOutputs:")
    for k, v in d["outputs"].items():
        print(f"  {k}: {_short(v, 160)}")
    print("\nFleet findings (infra.invariants):" if d["findings"] else "\nFleet findings: none")
    for f in d["findings"]:
        print(f"  {f['severity'].upper()} [{f['id']}] {f['message']}")


# ------------------------------------------------------------------ diff
def _changed_paths(a: Any, b: Any, prefix: str = "", depth: int = 0) -> list[str]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict) and depth < 4:
        out = []
        for k in sorted(set(a) | set(b)):
            out += _changed_paths(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k, depth + 1)
        return out
    return [prefix or "(value)"]


def diff_plans(old: dict, new: dict) -> dict:
    def key(r: dict) -> tuple[str, str]:
        return (r["type"], r["name"])

    o = {key(r): r for r in old["resources"]}
    n = {key(r): r for r in new["resources"]}
    changed = []
    for k in sorted(set(o) & set(n)):
        paths = _changed_paths(o[k]["inputs"], n[k]["inputs"])
        if paths:
            changed.append({"type": k[0], "name": k[1], "changed": paths})
    outputs = sorted(
        k for k in set(old["outputs"]) | set(new["outputs"]) if old["outputs"].get(k) != new["outputs"].get(k)
    )
    return {
        "added": [{"type": t, "name": nm} for t, nm in sorted(set(n) - set(o))],
        "removed": [{"type": t, "name": nm} for t, nm in sorted(set(o) - set(n))],
        "changed": changed,
        "outputs_changed": outputs,
    }


def print_diff(d: dict, stack: str, ref: str) -> None:
    print(f"Stack {stack}: changes from {ref} to the working tree")
    for r in d["added"]:
        print(f"  + {r['type']}  {r['name']}")
    for r in d["removed"]:
        print(f"  - {r['type']}  {r['name']}")
    for r in d["changed"]:
        print(f"  ~ {r['type']}  {r['name']}: {', '.join(r['changed'])}")
    if d["outputs_changed"]:
        print(f"  outputs changed: {', '.join(d['outputs_changed'])}")
    print(f"{len(d['added'])} to add, {len(d['removed'])} to remove, {len(d['changed'])} to change")


# A baseline revision that predates infra/plan.py is still planned: this file's own mocks module is loaded
# by path and run against that revision's program and stack files.
_FALLBACK = """
import importlib.util, json, sys
sys.path.insert(0, '.')
spec = importlib.util.spec_from_file_location('_plan_mocks', sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules['_plan_mocks'] = m; spec.loader.exec_module(m)
p = m.run_program(sys.argv[2])
print(json.dumps(
    {'stack': p.stack, 'resources': [r.as_dict() for r in p.resources], 'counts': p.counts(), 'outputs': p.outputs},
    default=str,
))
"""


class BaselineMissing(Exception):
    pass


def baseline_plan(stack: str, ref: str, repo: Path = ROOT) -> dict:
    """Plan `stack` as of git revision `ref`, in a subprocess with this interpreter, from `git archive`
    (no worktree is registered, so nothing is left behind in the repository)."""
    try:
        blob = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", ref], check=True, capture_output=True
        ).stdout
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"cannot read revision {ref!r}: {e.stderr.decode().strip()}") from None
    with tempfile.TemporaryDirectory(prefix="reco-dr-plan-") as tmp:
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            # Our own repository's archive; the safe extraction filter where this Python has it.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        if not (Path(tmp) / "stacks" / f"Pulumi.{stack}.yaml").exists():
            raise BaselineMissing(stack)
        if (Path(tmp) / "infra" / "plan.py").exists():
            cmd = [sys.executable, "-m", "infra.plan", stack, "--json"]
        else:
            cmd = [sys.executable, "-c", _FALLBACK, str(ROOT / "infra" / "mocks.py"), stack]
        env = {**os.environ, "PYTHONPATH": tmp}
        res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300, check=False)
    # A baseline with ERROR findings is still a plan to compare with.
    if res.returncode not in (0, EXIT_ERROR_FINDINGS):
        raise RuntimeError(f"plan of {stack} at {ref} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    return json.loads(res.stdout)


def error_findings(d: dict) -> list[dict]:
    return [f for f in d["findings"] if f["severity"] == "error"]


# ------------------------------------------------------------------ entry point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m infra.plan",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[-1],
    )
    ap.add_argument("stack", help="stack name, e.g. prod-use1 (stacks/Pulumi.<stack>.yaml)")
    ap.add_argument(
        "--json", action="store_true", help="print every resource with all inputs, counts and outputs as JSON"
    )
    ap.add_argument("--diff", metavar="GIT_REF", help="compare with the program and stack files at this git revision")
    ap.add_argument(
        "--stacks-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of the Pulumi.<stack>.yaml files of the stack and its environment (default: stacks/)",
    )
    a = ap.parse_args(argv)

    import pulumi

    from infra.config import STACKS_DIR, ConfigError, load_stack
    from infra.invariants import fleet_findings
    from infra.mocks import run_program
    from infra.outputs import OutputError

    if a.diff:
        # Fail on a bad revision before spending time on the plans.
        res = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{a.diff}^{{commit}}"],
            capture_output=True,
            check=False,
        )

        if res.returncode != 0:
            print(f"error: cannot read revision {a.diff!r}: not a commit in {ROOT}", file=sys.stderr)
            return 1

    stacks_dir = a.stacks_dir or STACKS_DIR
    try:
        # The stack file as a whole first: keys outside the schema or the namespaces, YAML anchors and repeated
        # keys are refused here (the program reads only the keys it knows, through the engine's encoding).
        load_stack(a.stack, stacks_dir)
        plan = run_program(a.stack, stacks_dir=stacks_dir)
    except (ConfigError, OutputError, pulumi.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    # Fleet-level invariants (N+1, engines, TensorRT pairing) span stacks: report them beside the plan.
    env = a.stack.rsplit("-", 1)[0]
    current = plan_dict(plan, [f.to_dict() for f in fleet_findings(env, stacks_dir=stacks_dir)])

    if a.diff:
        try:
            old = baseline_plan(a.stack, a.diff)
        except BaselineMissing:
            old = {"stack": a.stack, "resources": [], "counts": {}, "outputs": {}}
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        d = diff_plans(old, current)
        if a.json:
            print(json.dumps({"stack": a.stack, "ref": a.diff, **d}, indent=2))
        else:
            print_diff(d, a.stack, a.diff)
    elif a.json:
        print(json.dumps(current, indent=2, default=str))
    else:
        print_text(current)
    errors = error_findings(current)
    for f in errors:
        print(f"error: fleet finding [{f['id']}] {f['message']}", file=sys.stderr)
    return EXIT_ERROR_FINDINGS if errors else 0


def _close_loop() -> None:
    """Close the event loop the Pulumi SDK ran on while its sockets still exist: left to the garbage collector at
    interpreter exit it sometimes finds its self-pipe already gone and prints a spurious traceback."""
    import asyncio

    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if not loop.is_closed():
        loop.close()


if __name__ == "__main__":
    rc = main()
    _close_loop()
    sys.exit(rc)
