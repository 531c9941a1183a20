"""Datasets, partitions into clients, evaluation settings and padded client arrays."""
