"""Named workloads: fixed pieces of work that results, tables and discussions refer to by name.

A builder takes `quick` (a smaller variant for a loaded or slow machine, recorded with its
figures) and returns either a `RoundSetup` (one FedAvg round, timed in every layout against the
per-client loop) or a run config (a whole run, timed part by part). `python -m benchmarks.run`
measures them.
"""

from collections.abc import Callable

import ml_collections

from benchmarks.rounds import RoundSetup
from experiments.configs import fedlog_cora
from experiments.configs.graph_seen import graph_base

Workload = RoundSetup | ml_collections.ConfigDict


def w1(quick: bool) -> Workload:
    """FedAvg round, 100 clients, MLP 784-128-10, 10 SGD steps of 32 (MNIST-sized inputs)."""
    del quick  # light enough as it is
    return RoundSetup("mlp", 100, (784,), hidden=(128,), steps=10, batch=32, examples=320)


def w2(quick: bool) -> Workload:
    """FedAvg round, 1000 clients, MLP 64-32-10, 10 SGD steps of 10 (digits-sized inputs)."""
    del quick
    return RoundSetup("mlp", 1000, (64,), hidden=(32,), steps=10, batch=10, examples=50)


def convnet(quick: bool) -> Workload:
    """FedAvg round, 50 clients, the DC ConvNet (width 128) on 28x28x1, 10 SGD steps of 32;
    quick: width 32 and 2 steps, a small fraction of the arithmetic, for a CPU."""
    return RoundSetup(
        "convnet",
        50,
        (28, 28, 1),
        width=32 if quick else 128,
        steps=2 if quick else 10,
        batch=32,
        examples=320,
    )


def cora_fedlog(quick: bool) -> Workload:
    """FedLoG on Cora, K = 3 (experiments/configs/fedlog_cora.py): 100 rounds, 5 if quick."""
    cfg = fedlog_cora.get_config()
    cfg.rounds = 5 if quick else 100
    return cfg


def computers_fedavg(quick: bool) -> Workload:
    """FedAvg on Amazon Computers, K = 3, with the graph tables' recipe
    (experiments/configs/graph_seen.py): 100 rounds, 5 if quick."""
    cfg = graph_base()
    cfg.dataset = "computers"
    cfg.num_clients = 3
    cfg.algorithm = "fedavg"
    cfg.rounds = 5 if quick else 100
    return cfg


WORKLOADS: dict[str, Callable[[bool], Workload]] = {
    "W1": w1,
    "W2": w2,
    "convnet": convnet,
    "cora_fedlog": cora_fedlog,
    "computers_fedavg": computers_fedavg,
}
