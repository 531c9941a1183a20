"""Running experiments: configs and their grids, the one program for 1..R runs, sweeps,
checkpoints and the results ledger, and the condensation run.

Imports algorithms, condensation, engine, models, data and core; never `report/` or the entry
points.
"""
