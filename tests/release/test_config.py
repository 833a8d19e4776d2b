"""The release keys of the stack config: validation messages in the config's style, and their defaults."""

from __future__ import annotations

import copy

import pytest

from infra.config import ConfigError, RegionConfig, load_fleet, parse, read_stack_file
from tests.signing import with_canary

_M = read_stack_file("prod-usw2")["model"]
PINS = f"'signer': {_M['signer']!r}, 'digests': {_M['digests']!r}"  # the supply-chain keys, as the stack writes them

CASES = {
    "canary weight without a canary version": (
        "prod-usw2",
        lambda v: v["model"].update(canary_version="", canary_weight=10),
        "stack prod-usw2: reco-dr:model = {'name': 'ranker', 'version': '2026.11.0', 'canary_version': '', "
        f"'canary_weight': 10, {PINS}}}: rule: canary_weight 10 needs canary_version (the version the canary serves)",
    ),
    "canary version equal to the stable one": (
        "prod-usw2",
        lambda v: v["model"].update(canary_version="2026.11.0"),
        "stack prod-usw2: reco-dr:model = {'name': 'ranker', 'version': '2026.11.0', 'canary_version': '2026.11.0', "
        f"'canary_weight': 0, {PINS}}}: rule: canary_version must differ from version '2026.11.0' (the stable version)",
    ),
    "canary weight above 100 percent": (
        "prod-usw2",
        lambda v: v["model"].update(canary_version="2026.12.0", canary_weight=150),
        "stack prod-usw2: reco-dr:model.canary_weight = 150: rule: Input should be less than or equal to 100",
    ),
    "malformed canary version": (
        "prod-usw2",
        lambda v: v["model"].update(canary_version="2026 12"),
        "stack prod-usw2: reco-dr:model.canary_version = '2026 12': rule: String should match pattern "
        "'^[0-9A-Za-z][0-9A-Za-z.\\-]{0,40}$'",
    ),
    "canary region outside the routing": (
        "prod-global",
        lambda v: v["release"].update(canary_region="ap-south-1"),
        "stack prod-global: reco-dr:release = {'canary_region': 'ap-south-1', 'canary_weight': 10, 'bake_seconds': "
        "300, 'gates': {'error_rate_max': 0.01, 'p99_ms_max': 250, 'psi_max': 0.2, 'ks_max': 0.15, 'auc_min': 0.7, "
        "'ndcg_min': 0.55, 'min_requests': 200}}: rule: release.canary_region must be one of routing.regions "
        "['eu-west-1', 'us-east-1', 'us-west-2']",
    ),
    "canary weight of zero in the release policy": (
        "prod-global",
        lambda v: v["release"].update(canary_weight=0),
        "stack prod-global: reco-dr:release.canary_weight = 0: rule: Input should be greater than or equal to 1",
    ),
    "negative PSI threshold": (
        "prod-global",
        lambda v: v["release"]["gates"].update(psi_max=-1),
        "stack prod-global: reco-dr:release.gates.psi_max = -1: rule: Input should be greater than 0",
    ),
    "unknown gate (a typo)": (
        "prod-global",
        lambda v: v["release"]["gates"].update(psi_mx=0.3),
        "stack prod-global: reco-dr:release.gates.psi_mx = 0.3: rule: unknown key (a typo?)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_messages(case):
    stack, mutate, message = CASES[case]
    v = copy.deepcopy(read_stack_file(stack))
    mutate(v)
    with pytest.raises(ConfigError) as e:
        parse(stack, v)
    assert str(e.value) == message


def test_no_canary_reads_as_none_and_defaults_apply():
    cfg = parse("prod-usw2", read_stack_file("prod-usw2"))
    assert isinstance(cfg, RegionConfig)
    assert cfg.model.canary_version is None and cfg.model.canary_weight == 0
    v = copy.deepcopy(read_stack_file("prod-usw2"))
    del v["model"]["canary_version"], v["model"]["canary_weight"]  # a stack written before releases existed
    cfg = parse("prod-usw2", v)
    assert isinstance(cfg, RegionConfig) and cfg.model.canary_version is None
    with_canary(v["model"], "2026.12.0", 25)
    cfg = parse("prod-usw2", v)
    assert isinstance(cfg, RegionConfig) and cfg.model.canary_weight == 25
    g = load_fleet("staging").glob
    assert g.release.gates.p99_ms_max is None and g.release_p99_ms == g.objectives.p99_ms  # defaults to the objective
    assert load_fleet("prod").glob.release_p99_ms == 250
