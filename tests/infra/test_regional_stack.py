"""Stack-wide properties: explicit providers everywhere, per-region providers, the output contract."""

from __future__ import annotations

import pytest

from infra.catalog import GPU_INSTANCES
from infra.mocks import Plan, regional_outputs
from infra.outputs import OUTPUT_KEYS, validate_outputs

PROVIDER_PACKAGE = {"aws": "pulumi:providers:aws", "kubernetes": "pulumi:providers:kubernetes"}


def test_every_resource_has_an_explicit_provider_of_its_package(regional):
    _stack, plan, _cfg = regional
    custom = [r for r in plan.resources if r.custom and not r.type.startswith("pulumi:providers:")]
    assert custom, "nothing declared"
    for r in custom:
        prov = plan.provider_of(r)
        assert prov is not None, f"{r.type} {r.name} would use a default provider"
        assert prov.type == PROVIDER_PACKAGE[r.type.split(":")[0]], f"{r.type} {r.name} uses {prov.type}"


def test_invokes_use_the_regions_provider(regional):
    _stack, plan, cfg = regional
    assert plan.calls, "the program looks up the account and the availability zones"
    for c in plan.calls:
        assert c.provider, f"invoke {c.token} uses the default provider"
        prov = next(p for p in plan.resources if p.urn == c.provider.rsplit("::", 1)[0])
        assert prov.inputs["region"] == cfg.region


def test_one_aws_provider_in_the_stacks_region_with_default_tags(regional):
    stack, plan, cfg = regional
    (aws,) = plan.of_type("pulumi:providers:aws")
    assert aws.inputs["region"] == cfg.region
    import json

    tags = json.loads(aws.inputs["defaultTags"])["tags"]
    assert tags["stack"] == stack and tags["env"] == cfg.env and tags["project"] == "reco-dr"
    # ARNs the mocks hand out follow the provider's region: the cluster lives where the provider says.
    cluster = plan.one("aws:eks/cluster:Cluster")
    assert f":{cfg.region}:" in cluster.state["arn"]


def test_one_kubernetes_provider_built_from_the_clusters_outputs(regional):
    import json

    _stack, plan, cfg = regional
    (k,) = plan.of_type("pulumi:providers:kubernetes")
    cluster = plan.one("aws:eks/cluster:Cluster")
    kc = json.loads(k.inputs["kubeconfig"])
    c = kc["clusters"][0]["cluster"]
    assert c["server"] == cluster.state["endpoint"]
    assert c["certificate-authority-data"] == cluster.state["certificateAuthority"]["data"]
    args = kc["users"][0]["user"]["exec"]["args"]
    assert args[args.index("--cluster-name") + 1] == cluster.state["name"]
    assert args[args.index("--region") + 1] == cfg.region


def test_outputs_are_exactly_the_contract_and_valid(regional):
    stack, plan, cfg = regional
    assert tuple(plan.outputs) == OUTPUT_KEYS
    out = validate_outputs(stack, plan.outputs)
    assert out.region == cfg.region
    assert [p.name for p in out.gpu_pools] == [p.name for p in cfg.gpu_pools]
    for p, c in zip(out.gpu_pools, cfg.gpu_pools, strict=True):
        assert (p.instance_type, p.min, p.desired, p.max) == (c.instance_type, c.min, c.desired, c.max)
        assert p.compute_capability == GPU_INSTANCES[c.instance_type].compute_capability
    assert out.triton_image == cfg.triton.image and out.model_version == cfg.model.version


def test_outputs_come_from_the_resources(regional):
    _stack, plan, _cfg = regional
    lb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    bucket = plan.one("aws:s3/bucket:Bucket")
    key = plan.one("aws:kms/key:Key", "artifacts-key")
    assert plan.outputs["lb_dns_name"] == lb.state["dnsName"]
    assert plan.outputs["lb_zone_id"] == lb.state["zoneId"]
    assert plan.outputs["bucket_name"] == bucket.state["bucket"]
    assert plan.outputs["bucket_arn"] == bucket.state["arn"]
    assert plan.outputs["kms_key_arn"] == key.state["arn"]
    assert plan.outputs["cluster_name"] == plan.one("aws:eks/cluster:Cluster").state["name"]


def test_regional_outputs_helper_matches_what_the_program_exports(regional):
    """The global stack's StackReference mock answers with regional_outputs(): it must be the real thing."""
    stack, plan, _cfg = regional
    assert regional_outputs(stack) == plan.outputs


def test_resource_names_are_unique_per_type(regional):
    _stack, plan, _cfg = regional
    keys = [(r.type, r.name) for r in plan.resources]
    assert len(keys) == len(set(keys))


def test_regions_run_different_gpu_types(use1, euw1):
    def types(p: Plan) -> set[str]:
        return {t for r in p.of_type("aws:eks/nodeGroup:NodeGroup") for t in r.inputs["instanceTypes"]}

    def gpu(p: Plan) -> set[str]:
        return {t for t in types(p) if t in GPU_INSTANCES}

    assert "p5.48xlarge" in gpu(use1)
    assert gpu(euw1) and gpu(euw1) != gpu(use1)
    assert not any(GPU_INSTANCES[t].gpu_model == "H100" for t in gpu(euw1))


@pytest.mark.parametrize("stack", ["prod-global", "staging-global"])
def test_regional_outputs_refuses_a_global_stack(stack):
    with pytest.raises(ValueError, match="not a regional stack"):
        regional_outputs(stack)


def test_resources_belong_to_their_components(use1):
    """Everything but the providers is declared inside a component (parent=self), so previews group by concept."""
    expected = {
        "aws:ec2/vpc:Vpc": "reco-dr:regional:Network",
        "aws:eks/cluster:Cluster": "reco-dr:regional:Cluster",
        "aws:s3/bucket:Bucket": "reco-dr:regional:ArtifactBucket",
        "aws:lb/loadBalancer:LoadBalancer": "reco-dr:regional:TritonLoadBalancer",
        "kubernetes:apps/v1:Deployment": "reco-dr:regional:TritonServing",
        "kubernetes:apps/v1:DaemonSet": "reco-dr:regional:NvidiaDevicePlugin",
    }
    for t, parent in expected.items():
        assert {r.parent_type for r in use1.of_type(t)} == {parent}
    top = {r.type for r in use1.resources if r.parent_type == "pulumi:pulumi:Stack"}
    assert all(t.startswith(("pulumi:providers:", "reco-dr:regional:")) for t in top)
