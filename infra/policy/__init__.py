"""The reco-dr policy pack (`pulumi preview --policy-pack infra/policy`); checks live in validators.py."""
