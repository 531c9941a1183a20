"""The federated engine: local training over masked minibatches, the jitted round over the
clients axis, evaluation and sharding.

Imports `core/` (the algorithm interface among it) and flax; never an algorithm.
"""
