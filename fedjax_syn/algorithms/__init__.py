"""Federated algorithms, one module each, all on the `FederatedAlgorithm` interface (base.py)."""
