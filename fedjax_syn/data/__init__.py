"""Datasets, partitions into clients, evaluation settings and padded client arrays.

Imports `core/` only: a loader knows nothing about models, algorithms or runs.
"""
