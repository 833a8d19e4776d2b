"""Pure parts of the rehearsal models: routing policy, health-check counting, RTO arithmetic, replication
rules, the plan translator's shapes, the serving repository's checks. No processes are started here."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from drills.measure import Slo, rto_parts, slo_recovery, timeline
from drills.rehearsal.declared import s3_shape
from drills.rehearsal.dns import RecordSet, route
from drills.rehearsal.healthcheck import CheckSpec, CheckState, HealthChecker, reported
from drills.rehearsal.loadgen import RequestRecord
from drills.rehearsal.replicator import parse_rules, rules_for
from drills.rehearsal.repo import (
    ArtifactError,
    classify,
    manifest_files,
    manifest_inputs,
    manifest_model,
    manifest_seed,
    prepare_serving_repo,
    read_manifest,
)
from model_build.signing import manifest_digest


# ---------------------------------------------------------------- DNS policy (Route 53 semantics)
def _w(key, weight, hc=None):
    return RecordSet(
        name="ranker.x.com", type="A", set_id=key, weight=weight, alias=f"lb-{key}", health_check_id=hc or key
    )


def test_weighted_shares_follow_weights_over_healthy_records():
    group = [_w("a", 40), _w("b", 30), _w("c", 30)]
    out = route(group, lambda r: True)
    assert out.shares == pytest.approx({"a": 0.4, "b": 0.3, "c": 0.3})
    out = route(group, lambda r: r.key != "a")
    assert out.shares == pytest.approx({"b": 0.5, "c": 0.5}) and not out.fail_open


def test_weighted_zero_weight_records_serve_only_when_all_nonzero_are_unhealthy():
    # The table in Route 53's "Weighted routing" docs: weights 1, 1, 0, all with health checks.
    group = [_w("r1", 1), _w("r2", 1), _w("r3", 0)]
    assert set(route(group, lambda r: r.key == "r3").shares) == {"r3"}
    assert set(route(group, lambda r: r.key in ("r2", "r3")).shares) == {"r2"}
    assert set(route(group, lambda r: True).shares) == {"r1", "r2"}
    none = route(group, lambda r: False)  # nothing healthy: answered as if all were, by weight
    assert set(none.shares) == {"r1", "r2"} and none.fail_open


def test_failover_primary_then_secondary_then_primary_when_none_healthy():
    p = RecordSet(name="n", type="A", set_id="use1", failover="PRIMARY", health_check_id="p")
    s = RecordSet(name="n", type="A", set_id="usw2", failover="SECONDARY", health_check_id="s")
    assert route([p, s], lambda r: True).shares == {"use1": 1.0}
    assert route([p, s], lambda r: r is s).shares == {"usw2": 1.0}
    out = route([p, s], lambda r: False)
    assert out.shares == {"use1": 1.0} and out.fail_open


# ---------------------------------------------------------------- health checks
def test_health_check_needs_threshold_consecutive_results_both_ways():
    st = CheckState(threshold=3)
    assert st.raw_healthy  # new checks start healthy
    flips = [st.observe(ok) for ok in (False, False, True, False, False, False)]
    assert flips == [False, False, False, False, False, True] and not st.raw_healthy
    flips = [st.observe(ok) for ok in (True, True, False, True, True, True)]
    assert flips[-1] and st.raw_healthy and sum(flips) == 1


def test_inverted_and_disabled_as_route53_reports_them(tmp_path):
    spec = CheckSpec("h", "http://127.0.0.1:1/", 1.0, 1)
    assert reported(spec, True) and not reported(spec, False)
    assert not reported(CheckSpec("h", "u", 1.0, 1, inverted=True), True)
    assert reported(CheckSpec("h", "u", 1.0, 1, disabled=True), False)
    hc = HealthChecker([spec], status_file=tmp_path / "s.json")
    hc.observe("h", False, "refused")
    assert hc.status("h") is False
    assert json.loads((tmp_path / "s.json").read_text())["checks"]["h"]["healthy"] is False
    hc.set_specs([CheckSpec("h", spec.url, 1.0, 1, inverted=True)])  # inverting flips the reported status
    assert hc.status("h") is True and [t.healthy for t in hc.transitions()] == [False, True]


# ---------------------------------------------------------------- RTO arithmetic
def _synthetic(fault=100.0, rate=10, dur=20, failed="a", dead_until=104.0):
    """Two clients on 'a' and one on 'b'; 'a' is dead from `fault`; clients move to 'b' at `dead_until`."""
    recs, seq = [], 0
    for i in range(dur * rate):
        t = 90.0 + i / rate
        for client in range(3):
            region = "b" if client == 2 or t >= dead_until else failed
            ok = not (region == failed and t >= fault)
            recs.append(
                RequestRecord(
                    seq,
                    client,
                    t,
                    t,
                    "127.0.10.1",
                    region,
                    200 if ok else 0,
                    ok,
                    5.0 if ok else 1000.0,
                    None if ok else "refused",
                )
            )
            seq += 1
    return recs


def test_rto_parts_on_synthetic_records():
    recs = _synthetic()
    hc = [{"t": 101.5, "label": "a", "healthy": False}]
    dns = [{"t": 99.0, "after": {"a": 0.5, "b": 0.5}}, {"t": 101.6, "after": {"b": 1.0}}]
    out = rto_parts(
        recs, 100.0, hc, dns, ttl=2.0, slo=Slo(success_rate=0.99, p99_ms=250, window_s=1.0), window_limit_s=5.0
    )
    assert out["region"] == "a"
    assert out["detection_s"] == pytest.approx(1.5)
    assert out["dns_change_s"] == pytest.approx(1.6)
    assert out["ttl_expiry_s"] == pytest.approx(3.6)
    assert out["first_success_survivor_s"] == pytest.approx(4.0, abs=0.11)
    assert out["clients_affected"] == 2
    # The start of the first window at SLO after the last violating one: the clients moved at 104.
    assert out["slo_violated"] and out["slo_recovered_s"] == pytest.approx(4.0, abs=0.15)
    assert out["errors_during_failover"] == 2 * 40  # two clients x 4 s x 10 rps
    assert out["lost_after_window"] == 0
    assert out["before"]["success_rate"] == 1.0 and out["before"]["share"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert out["after"]["share"] == {"b": 1.0} and out["after"]["p99_ms"] == 5.0


def test_slo_never_violated_and_timeline():
    recs = _synthetic(failed="c", fault=1e9)
    t, violated = slo_recovery(recs, 95.0, Slo(window_s=1.0))
    assert t == 95.0 and not violated
    bins = timeline(recs, bin_s=5.0)
    assert bins[0]["requests"] == 150 and bins[0]["share"] == pytest.approx({"b": 1 / 3, "c": 2 / 3})


# ---------------------------------------------------------------- replication rules
def test_replication_rules_from_moto_stored_form_and_api_form():
    stored = {
        "Role": "r",
        "Rule": [
            {
                "ID": "to-b",
                "Priority": "2",
                "Status": "Enabled",
                "Filter": None,
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "Destination": {"Bucket": "arn:aws:s3:::b"},
            },
            {
                "ID": "logs",
                "Priority": "1",
                "Status": "Enabled",
                "Filter": {"Prefix": "logs/"},
                "Destination": {"Bucket": "arn:aws:s3:::b"},
            },
            {"ID": "off", "Priority": "3", "Status": "Disabled", "Destination": {"Bucket": "arn:aws:s3:::c"}},
        ],
    }
    rules = parse_rules(stored)
    assert [r.id for r in rules] == ["to-b", "logs"] and rules[0].delete_markers and not rules[1].delete_markers
    assert rules_for(rules, "logs/x")["b"].id == "to-b"  # highest priority wins per destination
    api = {
        "Role": "r",
        "Rules": [
            {
                "ID": "t",
                "Priority": 1,
                "Status": "Enabled",
                "Filter": {"And": {"Prefix": "m/", "Tags": [{"Key": "k", "Value": "v"}]}},
                "Destination": {"Bucket": "arn:aws:s3:::c"},
            }
        ],
    }
    (r,) = parse_rules(api)
    assert r.prefix == "m/" and r.tags == {"k": "v"}
    assert rules_for([r], "m/x", {"k": "v"}) and not rules_for([r], "m/x", {}) and not rules_for([r], "n/x", {"k": "v"})


def test_pulumi_inputs_to_s3_api_shape():
    rules = [
        {
            "id": "to-b",
            "priority": 1,
            "status": "Enabled",
            "filter": {},
            "deleteMarkerReplication": {"status": "Enabled"},
            "destination": {
                "bucket": "arn:aws:s3:::b",
                "encryptionConfiguration": {"replicaKmsKeyId": "k"},
                "replicationTime": {"status": "Enabled", "time": {"minutes": 15}},
            },
            "sourceSelectionCriteria": {"sseKmsEncryptedObjects": {"status": "Enabled"}},
        }
    ]
    (r,) = s3_shape(rules)
    assert r["ID"] == "to-b" and r["Destination"]["EncryptionConfiguration"] == {"ReplicaKmsKeyID": "k"}
    assert r["Destination"]["ReplicationTime"]["Time"] == {"Minutes": 15}
    assert r["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    assert s3_shape({"and": {"prefix": "p", "tags": {"a": "1"}}}) == {
        "And": {"Prefix": "p", "Tags": [{"Key": "a", "Value": "1"}]}
    }


# ---------------------------------------------------------------- serving repository
def test_serving_repo_keeps_only_what_the_cpu_triton_loads(model_dir, tmp_path, pod):
    py, excluded, served = classify(model_dir)
    assert py == ["ranker_py"]
    assert "ranker_onnx/1/model.onnx" in served and "manifest.json" in served
    assert "ranker_onnx/config.pbtxt" in excluded and "onnxruntime" in excluded["ranker_onnx/config.pbtxt"]
    assert "TensorRT" in excluded["ranker_trt/1/model_8.9.plan"]
    assert "does not load" in excluded["trt_src/model.fp16.onnx"]
    repo = prepare_serving_repo(model_dir, tmp_path / "serve", pod, manifest_digest(model_dir))
    files = sorted(p.relative_to(repo.path).as_posix() for p in repo.path.rglob("*") if p.is_file())
    # The declared model's directory (linked by the declared verify-model script) and the python stand-in with what
    # it reads; never the TensorRT model, its source graph or anything else of the version.
    assert files == [
        "manifest.json",
        "ranker_onnx/1/model.onnx",
        "ranker_onnx/config.pbtxt",
        "ranker_py/1/model.py",
        "ranker_py/config.pbtxt",
    ]
    assert repo.models == ["ranker_py"] and not repo.unlisted
    assert "not loaded here" in repo.excluded["ranker_onnx/config.pbtxt"]
    assert "ranker_trt/1/model_8.9.plan" in repo.excluded


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no-manifest"])
def test_corrupted_artifact_is_refused(model_dir, tmp_path, damage, pod):
    src = tmp_path / "src"
    shutil.copytree(model_dir, src)
    onnx = src / "ranker_onnx" / "1" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        onnx.write_bytes(bytes(data))
    elif damage == "truncate":
        onnx.write_bytes(bytes(data[:-10]))
    elif damage == "delete":
        onnx.unlink()
    else:
        (src / "manifest.json").unlink()
    with pytest.raises(ArtifactError) as e:
        prepare_serving_repo(src, tmp_path / "serve", pod, manifest_digest(model_dir))
    msg = str(e.value)
    assert ("model.onnx" in msg or "manifest.json" in msg) and ("refusing" in msg or "missing" in msg)
    assert not (tmp_path / "serve").exists()  # nothing half-built to serve


def test_the_manifest_is_read_through_model_builds_schema(model_dir, tmp_path, pod):
    m = read_manifest(model_dir)
    assert manifest_model(m) == ("ranker", "2026.11.0") and manifest_seed(m) == 20261100
    assert manifest_inputs(m) == [
        {"name": "sparse_ids", "datatype": "INT32", "shape": [-1, 8]},
        {"name": "dense", "datatype": "FP32", "shape": [-1, 8]},
    ]
    assert manifest_files(m)["ranker_onnx/1/model.onnx"].role == "onnx"
    # a file list in a layout once guessed at ("artifacts": {path: sha256}) is not a manifest: refused, named
    src = tmp_path / "src"
    shutil.copytree(model_dir, src)
    doc = json.loads((src / "manifest.json").read_text())
    doc["artifacts"] = {f["path"]: f["sha256"] for f in doc.pop("files")}
    (src / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError) as e:
        prepare_serving_repo(src, tmp_path / "serve", pod, manifest_digest(model_dir))
    assert str(e.value).startswith(
        f"{src / 'manifest.json'} does not match model_build's manifest schema: files: Field required"
    )
    (src / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"manifest.json is not valid JSON"):
        prepare_serving_repo(src, tmp_path / "serve", pod, manifest_digest(model_dir))
    assert not (tmp_path / "serve").exists()


def test_weighted_choice_is_random_by_weight():
    from drills.rehearsal.dns import pick

    out = route([_w("a", 3), _w("b", 1)], lambda r: True)
    rng = random.Random(1)
    picks = [pick(out, rng) for _ in range(4000)]
    assert 0.72 < picks.count("a") / 4000 < 0.78


def test_health_transitions_and_dns_queries_do_not_deadlock():
    """The DNS model reads health under its lock; the checker notifies the DNS model of transitions. The
    notification must happen outside the checker's lock, or a query and a transition deadlock."""
    import threading

    from drills.rehearsal.dns import PolicyDNS

    hc = HealthChecker([CheckSpec("a", "u", 1.0, 1), CheckSpec("b", "u", 1.0, 1)])
    rrsets = [
        {
            "Name": "ranker.x.com.",
            "Type": "A",
            "SetIdentifier": k,
            "Weight": 1,
            "HealthCheckId": k,
            "TTL": 1,
            "ResourceRecords": [{"Value": ip}],
        }
        for k, ip in (("a", "127.0.10.1"), ("b", "127.0.10.2"))
    ]
    dns = PolicyDNS(port=0, zone="x.com", source=lambda: rrsets, health=hc.status, targets={})
    dns.load(rrsets)
    hc.on_transition = lambda tr: dns.recompute("health")
    stop = threading.Event()

    def queries():
        while not stop.is_set():
            dns.answer("ranker.x.com")

    t = threading.Thread(target=queries, daemon=True)
    t.start()
    done = threading.Event()

    def flaps():
        for i in range(2000):
            hc.observe("a", i % 2 == 0)
        done.set()

    threading.Thread(target=flaps, daemon=True).start()
    assert done.wait(20), "deadlock between health transitions and DNS queries"
    stop.set()
    t.join(5)
    assert len(dns.changes()) > 10


def test_dns_server_answers_over_udp_with_ttl_and_rcodes():
    from drills.rehearsal.dns import PolicyDNS, query
    from drills.rehearsal.procs import free_port_block

    rrsets: list[dict] = [
        {
            "Name": "ranker.x.com.",
            "Type": "A",
            "SetIdentifier": "a",
            "Failover": "PRIMARY",
            "HealthCheckId": "a",
            "AliasTarget": {"DNSName": "lb-a.elb.amazonaws.com.", "HostedZoneId": "Z", "EvaluateTargetHealth": True},
        },
        {
            "Name": "ranker.x.com.",
            "Type": "A",
            "SetIdentifier": "b",
            "Failover": "SECONDARY",
            "TTL": 5,
            "ResourceRecords": [{"Value": "127.0.10.2"}],
        },
    ]
    healthy = {"a": True}
    port = free_port_block(1)
    with PolicyDNS(
        port=port,
        zone="x.com",
        source=lambda: rrsets,
        health=lambda h: healthy[h],
        targets={"lb-a.elb.amazonaws.com": "127.0.10.1"},
        alias_ttl=60,
        refresh_interval=0.05,
    ) as dns:
        assert query("ranker.x.com", ("127.0.0.1", port)) == (["127.0.10.1"], 60, "NOERROR")  # alias: target TTL
        healthy["a"] = False
        assert query("ranker.x.com", ("127.0.0.1", port)) == (["127.0.10.2"], 5, "NOERROR")  # record TTL
        assert query("lb-a.elb.amazonaws.com", ("127.0.0.1", port))[0] == ["127.0.10.1"]
        assert query("nothing.x.com", ("127.0.0.1", port))[2] == "NXDOMAIN"
        assert query("example.org", ("127.0.0.1", port))[2] == "REFUSED"
        assert [c.after for c in dns.changes()] == [{"a": 1.0}, {"b": 1.0}]


def test_fail_open_periods_of_the_service_name_from_the_dns_models_changes():
    from drills.rehearsal.report import fail_open_periods

    def change(t: float, fail_open: bool, name: str = "ranker.x.com") -> dict:
        return {"t": t, "name": name, "before": None, "after": {"a": 1.0}, "fail_open": fail_open, "cause": "health"}

    changes = [
        change(100.0, False),
        change(105.0, True),
        change(106.0, True, "ranker-use1.x.com"),  # another name: not the service's
        change(108.0, False),
        change(120.0, True),
    ]
    assert fail_open_periods(changes, "ranker.x.com.", scale=0.1) == [
        {"from_wall": 105.0, "to_wall": 108.0, "drill_s": 30.0},
        {"from_wall": 120.0, "to_wall": None, "drill_s": None},
    ]
    assert fail_open_periods([change(1.0, False)], "ranker.x.com", scale=0.1) == []
