"""Graph Seen table: node classification accuracy on each client's own (seen) test nodes, for
K in {3, 5, 10} clients (plus one new client) on seven graphs, FedLoG and five baselines (local,
FedAvg, FedProx, FedPer, FedAvg-FT), seeds 0, 1, 2 (../shared/docs/PROTOCOL.md, graph track;
FedLoG, Kim et al., ICLR 2025).

The split is Louvain (closeset unseen nodes, 30% missing classes per client); the optimisation is
FedLoG's graph recipe: 2-layer GraphSAGE 128-64, Adam lr 1e-3 with weight decay 5e-4, minibatches
of 64 target nodes, one local epoch per round, 100 rounds, best-validation and last round reported.
Clients run one at a time (`client_chunk = 1`), so each seed runs as its own program: batched
over seeds, every client would run as many steps as the same client of the busiest seed.

PubMed needs its full Planetoid files (`ind.pubmed.allx` is not in the staged copy; the loader
downloads it where the internet is reachable); drop it offline with
--grid='dataset=cora,citeseer,photo,computers,cs,physics'.

    python -m experiments.main --mode=reproduce --table=graph_seen
    python -m experiments.main --config=experiments/configs/graph_seen.py --grid='dataset=cora'
"""

from fedjax_syn.runs.config import default_config

DATASETS = ("cora", "citeseer", "pubmed", "photo", "computers", "cs", "physics")
ALGORITHMS = ("local", "fedavg", "fedprox", "fedper", "fedavg_ft", "fedlog")


def graph_base():
    """FedLoG's graph-track training recipe, shared by every graph table."""
    config = default_config()
    config.track = "graph"
    config.data_dir = ""
    config.partitioner = "louvain"
    config.setting = "closeset"
    config.unseen_frac = 0.2
    config.graph_missing_frac = 0.3
    config.normalize_features = False  # raw bag-of-words; see cora.py for why
    config.model = "sage"
    config.hidden = (128, 64)
    config.dropout = 0.5
    config.rounds = 100
    config.local_epochs = 1
    config.batch_size = 64
    config.drop_last = True
    config.optimizer = "adam"
    config.lr = 1e-3
    config.weight_decay = 5e-4
    config.finetune_epochs = 5
    config.prox_mu = 0.01
    config.eval_every = 1
    # One client at a time: each runs only its own minibatches, where vmapped clients all run as
    # many as the busiest (BENCHMARKS.md, "One client at a time"). Results
    # and run ids are the same either way; on an accelerator --config.client_chunk=0 vmaps them.
    config.client_chunk = 1
    return config


def get_config():
    config = graph_base()
    config.grid = {
        "dataset": DATASETS,
        "num_clients": (3, 5, 10),
        "algorithm": ALGORITHMS,
        "seed": (0, 1, 2),
    }
    config.table = {
        "title": "Subgraph FL: accuracy on seen nodes",
        "rows": ("dataset", "protocol.num_clients", "algorithm"),
        "settings": ("seen",),
        "metric": "both",
        "plot": "gap",
    }
    return config
