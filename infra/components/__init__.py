"""Pulumi components of the regional stack, one class per concept.

Each component takes typed args and the providers it must use (never a default provider), parents its
resources to itself and registers its outputs. Pure computations (CIDR plans, labels, Kubernetes manifests,
IAM policy documents) live beside them as plain functions so tests can check them without Pulumi.
"""
