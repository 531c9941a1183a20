"""One graph run: FedAvg with GraphSAGE on Cora split over K = 3 clients (closeset).

The optimisation follows FedLoG's graph track (Kim et al., ICLR 2025): Adam, lr 1e-3, weight decay
5e-4, minibatches of 64 target nodes, one local epoch per round, 100 rounds. `data_dir` "" reads
FEDJAX_SYN_DATA_DIR (then the cache, then a download).

Features stay raw (binary bag-of-words), not row-normalised: a normalised Cora row has ~18 entries
of ~1/18, which shrinks the first layer's output ~18-fold, and at Adam lr 1e-3 with ~4 local steps
a round FedAvg then needs tens of rounds before it leaves the majority class (Seen accuracy 0.47
after 30 rounds against 0.85 with raw features).

    python -m experiments.main --config=experiments/configs/cora.py
    python -m experiments.main --config=experiments/configs/cora.py --config.algorithm=fedper
"""

from experiments.configs.graph_seen import graph_base


def get_config():
    config = graph_base()
    config.dataset = "cora"
    config.num_clients = 3
    config.algorithm = "fedavg"
    return config
