"""Federated algorithms, one module each on the `core.interface` interface, and `registry.py`,
the one name -> builder table.

Imports the engine, models, condensation (FedLoG on images), data and core; never `runs/` or
`report/`.
"""
