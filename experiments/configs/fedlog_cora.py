"""FedLoG on Cora: K = 3 training clients + 1 new client (Louvain, closeset), 100 rounds, with the
method of docs/fedlog.md (Kim et al., "Subgraph Federated Learning for Local Generalization",
ICLR 2025). `data_dir` "" reads FEDJAX_SYN_DATA_DIR.

Named variants (the config argument after the colon):
  default   the documented decisions: trained prompt generators, synthetic nodes embedded as
            isolated nodes, pretrained encoder restored to its best validation epoch.
  released  the released code's behaviour: random (untrained) prompt generators applied with
            dropout, synthetic nodes embedded with the identity adjacency (each node its own
            neighbour), pretraining continued from its last epoch. Early stopping still reads
            validation accuracy (the released code reads test accuracy, a leak that is not
            reproduced).

    python -m experiments.main --config=experiments/configs/fedlog_cora.py
    python -m experiments.main --config=experiments/configs/fedlog_cora.py:released
"""

import dataclasses

from experiments.configs import cora
from fedjax_syn.algorithms.fedlog.config import from_dict
from fedjax_syn.core.errors import check_choice

VARIANTS = {"default": {}, "released": {"preset": "released"}}


def fedlog_options(**overrides) -> dict:
    """Every FedLoG option (so each can be set from the command line, e.g.
    --config.fedlog.beta=0.1), with `overrides`. `gen_nodes` stays 0: the run reads exactly
    the largest client's training nodes (`fedjax_syn.runs.prepare.build_algorithm`)."""
    options = dataclasses.asdict(from_dict(overrides))
    return {**options, "gen_hidden": list(options["gen_hidden"])}


def get_config(variant: str = "default"):
    check_choice("fedlog_cora variant", variant, VARIANTS)
    config = cora.get_config()  # Cora, K = 3, the graph recipe's 100 rounds
    config.algorithm = "fedlog"
    config.fedlog = fedlog_options(**VARIANTS[variant])
    return config
