"""Graph local-generalization table: Unseen Node, Missing Class and New Client accuracy, in the
closeset (unseen nodes only from classes the client trains on) and openset (unseen nodes from all
of the client's nodes) settings, K in {3, 5, 10}, FedLoG and the five baselines of the Seen table,
seeds 0, 1, 2 (../shared/docs/PROTOCOL.md, graph track; FedLoG, Kim et al., ICLR 2025).

Same training recipe as the Seen table (`graph_seen.graph_base`). Seeds and the two settings of
one (dataset, K, algorithm) differ only in their data, so they run as one batched program.

    python -m experiments.main --mode=reproduce --table=graph_generalization
    python -m experiments.main --config=experiments/configs/graph_generalization.py \
        --grid='dataset=cora;num_clients=3;setting=openset'
"""

from experiments.configs.graph_seen import ALGORITHMS, graph_base


def get_config():
    config = graph_base()
    config.grid = {
        "dataset": ("cora", "citeseer", "pubmed", "photo", "computers"),
        "num_clients": (3, 5, 10),
        "setting": ("closeset", "openset"),
        "algorithm": ALGORITHMS,
        "seed": (0, 1, 2),
    }
    config.table = {
        "title": "Subgraph FL: local generalization (closeset and openset)",
        "rows": ("dataset", "protocol.setting", "protocol.num_clients", "algorithm"),
        "settings": ("unseen_node", "missing_class", "new_client"),
        "metric": "both",
        "plot": "gap",
    }
    return config
