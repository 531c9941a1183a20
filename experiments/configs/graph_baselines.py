"""The baselines of the graph track on Cora, K = 3: local training, FedAvg, FedAvg-FT, FedProx and
FedPer, seeds 0, 1, 2, every evaluation setting (../shared/docs/PROTOCOL.md, graph track; the comparison of
FedLoG, Kim et al., ICLR 2025). The split and recipe are those of `cora.py`.

    python -m experiments.main --config=experiments/configs/graph_baselines.py
    python -m experiments.main --config=experiments/configs/graph_baselines.py --grid='seed=0'
"""

from experiments.configs import cora

ALGORITHMS = ("local", "fedavg", "fedavg_ft", "fedprox", "fedper")


def get_config():
    config = cora.get_config()
    config.grid = {"algorithm": ALGORITHMS, "seed": (0, 1, 2)}
    config.table = {"rows": ("algorithm",)}
    return config
