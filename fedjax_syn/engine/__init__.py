"""The federated engine: padded client arrays, local training, the jitted round, sharding."""
