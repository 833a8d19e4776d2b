"""The one system set-up step (requirements/system.sh): every entry point reaches it, and it installs, or says
exactly how to install, what a fresh Debian 12 machine lacks."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "requirements" / "system.sh"
SETUP = "bash requirements/system.sh"


def _dry_run(target: str) -> list[str]:
    # Under `make test` this runs inside make: its flags and level must not leak into the dry run.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "target, runs",
    [("test", "-m pytest"), ("rehearse", "-m drills rehearse "), ("rehearse-release", "-m drills rehearse-release ")],
)
def test_entry_points_set_up_the_system_before_anything_else(target, runs):
    lines = _dry_run(target)
    assert lines[0] == SETUP, f"`make {target}` must run the system set-up first; it runs:\n" + "\n".join(lines)
    assert lines.count(SETUP) == 1, f"`make {target}` runs the set-up more than once"
    assert any(runs in line for line in lines), f"`make {target}` does not reach its own command ({runs!r})"


def test_ci_run_is_make_test():
    text = (REPO / ".ci" / "run").read_text()
    commands = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.match(r"^make test 2>&1 \| tee ", line) for line in commands)
    # The package list lives in one script: .ci/run names no package and calls no apt-get of its own.
    assert not any("apt-get" in line for line in commands), "apt-get belongs in requirements/system.sh only"


def test_the_set_up_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: `bash requirements/system.sh` installs it", pytrace=False)
    proc = subprocess.run(
        [shellcheck, "--format=gcc", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path: its parents are private to root, and one case runs as an unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="system-setup-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _bin_dir(tmp: Path, real: list[str], fake: dict[str, str]) -> Path:
    """A PATH of only the named real tools (symlinked) and fake scripts, readable by an unprivileged user."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for name in real:
        path = shutil.which(name)
        assert path, f"{name} is needed by this test"
        (bindir / name).symlink_to(path)
    for name, body in fake.items():
        (bindir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bindir / name).chmod(0o755)
    for d in (tmp, bindir):
        d.chmod(0o755)
    return bindir


def _run(bindir: Path, *args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    script = bindir.parent / "system.sh"
    shutil.copy(SCRIPT, script)
    script.chmod(script.stat().st_mode | stat.S_IROTH)
    cmd = [*(user or []), "/bin/bash", str(script), *args]
    env = {"PATH": str(bindir), "LANG": "C"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=bindir.parent, check=False)


# The tools every case needs; anything else is "missing" because it is not on the test's PATH.
BASE = ["dpkg-query", "grep", "id"]
# python3.11, its venv and libpython are checked by package, not on PATH; every machine that runs this suite has them.
TOOLS = ["make", "node", "npm", "shellcheck", "promtool"]
PACKAGES_FOR_TOOLS = ["make", "nodejs", "npm", "shellcheck", "prometheus"]


def test_nothing_missing_is_silent_and_installs_nothing(tmp_path):
    apt_log = tmp_path / "apt.log"
    fakes = dict.fromkeys(TOOLS, "exit 0")
    fakes["apt-get"] = f'echo "$*" >> {apt_log}'
    bindir = _bin_dir(tmp_path, BASE, fakes)
    for args in ((), ("--check",)):
        proc = _run(bindir, *args)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not apt_log.exists()


def test_check_names_the_missing_packages_and_the_command(tmp_path):
    bindir = _bin_dir(tmp_path, BASE, {"make": "exit 0", "node": "exit 0", "npm": "exit 0"})
    proc = _run(bindir, "--check")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "missing Debian packages: shellcheck prometheus;" in lines[0]
    assert "apt-get install -y --no-install-recommends shellcheck prometheus'" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_user_without_sudo_gets_one_line_and_no_changes(tmp_path):
    apt_log = tmp_path / "apt.log"
    # A sudo that asks for a password (sudo -n fails), as for a user who is not a sudoer.
    bindir = _bin_dir(tmp_path, BASE, {"sudo": "exit 1", "apt-get": f'echo "$*" >> {apt_log}'})
    nobody = [shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = _run(bindir, user=nobody)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    wanted = " ".join(PACKAGES_FOR_TOOLS)
    assert f"missing Debian packages: {wanted};" in lines[0]
    assert (
        "sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        f"{wanted}'" in lines[0]
    )
    assert not apt_log.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="installs as root")
def test_root_installs_only_what_is_missing_without_starting_services(tmp_path):
    apt_log = tmp_path / "apt.log"
    # The fake apt-get records its arguments and whether services were forbidden while it ran (policy-rc.d
    # answering 101 is how Debian keeps a package's service from starting on install).
    apt_get = f'echo "$* | policy-rc.d=$(/usr/sbin/policy-rc.d >/dev/null 2>&1; echo $?)" >> {apt_log}'
    bindir = _bin_dir(
        tmp_path,
        [*BASE, "tee", "chmod", "rm", "env", "printf"],
        {"make": "exit 0", "node": "exit 0", "npm": "exit 0", "apt-get": apt_get},
    )
    had_policy = Path("/usr/sbin/policy-rc.d").exists()
    proc = _run(bindir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("requirements/system.sh: installing shellcheck prometheus")
    calls = apt_log.read_text().splitlines()
    assert calls[0].startswith("update -q |")
    assert calls[1].startswith("install -y -q --no-install-recommends shellcheck prometheus |")
    if not had_policy:
        assert calls[1].endswith("policy-rc.d=101")
    # A policy-rc.d the machine had is kept; one this script made is gone again.
    assert Path("/usr/sbin/policy-rc.d").exists() == had_policy


def test_unknown_argument_is_refused():
    proc = subprocess.run(["bash", str(SCRIPT), "--yes"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "unknown argument '--yes'" in proc.stderr
