"""The CI identity program: a Pulumi project of its own (infra/ci/Pulumi.yaml), see infra/ci/program.py."""
