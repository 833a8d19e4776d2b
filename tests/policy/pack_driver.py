"""Runs inside .venv-policy (pulumi-policy installed): loads infra/policy/__main__.py the way a test can
(without starting the analyzer server), feeds it resources the way the analyzer does (props wrapped in
pulumi_policy's unknown-checking proxies) and prints the violations per policy as JSON.

    .venv-policy/bin/python tests/policy/pack_driver.py CASES.json [STACKS_DIR]

CASES.json: {case: [{"type", "name", "urn", "props", "property_dependencies"?}, ...]}
"""

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from pulumi_policy import EnforcementLevel, ResourceValidationArgs, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.policy import PolicyResource, StackValidationArgs
from pulumi_policy.proxy import unknown_checking_proxy

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("reco_dr_policy_pack", ROOT / "infra" / "policy" / "__main__.py")
assert spec is not None and spec.loader is not None
# A module loaded by path: its attributes (POLICIES, STACKS_DIR) are not known statically.
pack: Any = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pack)  # builds POLICIES; the PolicyPack server starts only as "__main__"
if len(sys.argv) > 2:
    pack.STACKS_DIR = Path(sys.argv[2])

cases = json.loads(Path(sys.argv[1]).read_text())
report: dict[str, Any] = {
    "policies": {
        p.name: {"kind": type(p).__name__, "mandatory": p.enforcement_level == EnforcementLevel.MANDATORY}
        for p in pack.POLICIES
    },
    "cases": {},
}
for case, resources in cases.items():
    violations: list[list[str]] = []
    by_urn = {}
    for r in resources:
        by_urn[r["urn"]] = PolicyResource(
            r["type"], unknown_checking_proxy(r["props"]), r["urn"], r["name"], None, None, None, [], {}
        )
    for r in resources:
        by_urn[r["urn"]].property_dependencies = {
            k: [by_urn[u] for u in urns if u in by_urn] for k, urns in (r.get("property_dependencies") or {}).items()
        }
    for policy in pack.POLICIES:

        def report_violation(
            msg: str, urn: str | None = None, name: str = policy.name, out: list[list[str]] = violations
        ) -> None:
            out.append([name, msg])

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(
                    r["type"], unknown_checking_proxy(r["props"]), r["urn"], r["name"], None, None
                )
                policy.validate(args, report_violation)
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(list(by_urn.values())), report_violation)
    report["cases"][case] = violations
print(json.dumps(report))
