"""Every check that needs several devices, in one process on 8 emulated CPU devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.multi_device OUT.json

writes one JSON object, a section per check, which the tests assert on (the session fixture
`multi_device` in conftest.py runs this once for the whole test session). A section that raised
holds {"error": traceback} instead, so one failing check does not hide the others.
"""

import json
import os
import sys
import traceback

import jax
import numpy as np

from fedjax_syn.engine import sharding

DEVICES = 8


def max_difference(a, b) -> float:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def graph() -> dict:
    """FedAvg-FT with GraphSAGE on 3 subgraph clients: one device, then padded to 8 slots and
    split over 8 devices."""
    from tests.test_graph_engine import graph_algorithm, run_rounds, synthetic_federation

    alg = graph_algorithm("fedavg_ft")
    single_server, single = run_rounds(alg, synthetic_federation(3)[1])
    fed = synthetic_federation(3, slots=DEVICES)[1]
    fed = sharding.shard_federation(fed, sharding.client_mesh())
    sharded_server, sharded = run_rounds(alg, fed)
    return {
        "devices": len(fed.train.inputs.x.sharding.device_set),
        "single": single,
        "sharded": sharded,
        "server_diff": max_difference(single_server, sharded_server),
    }


def batched() -> dict:
    """test_program's two runs as one program with `shard`: 3 clients padded to 8, the clients
    axis split over the devices after the runs axis."""
    from fedjax_syn.runs import program
    from tests.test_program import CONFIGS, _config

    placed = []  # the federations the program put on the mesh
    shard_stacked = program.shard_stacked

    def recorded(*args):
        placed.append(shard_stacked(*args))
        return placed[-1]

    program.shard_stacked = recorded
    try:
        records = program.run([_config(**c, shard=True) for c in CONFIGS])
    finally:
        program.shard_stacked = shard_stacked
    return {
        "devices": [len(fed.client_mask.sharding.device_set) for fed in placed],
        "client_slots": [int(fed.client_mask.shape[-1]) for fed in placed],
        "curves": [r["curves"] for r in records],
    }


CHECKS = {"graph": graph, "batched": batched}


def main(out: str) -> None:
    results: dict = {"device_count": jax.device_count()}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    partial = out + ".partial"
    with open(partial, "w") as f:
        json.dump(results, f)
    os.replace(partial, out)  # readers never see half a file


if __name__ == "__main__":
    main(sys.argv[1])
