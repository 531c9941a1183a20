"""What clients share, audited: FedAvg, FedProx, FedAvg-FT and FedLoG (fedlog on Cora,
fedlog_vision on digits) at DP noise multipliers 0 (no DP: the plain algorithm), 0.5, 1 and 2,
each trained for a few rounds and then attacked through the uploads of one more round
(fedjax_syn/privacy/: membership inference, distance to closest record, gradient inversion).

Small on purpose, to run on a loaded 2-core CPU in well under half an hour: K = 5 clients (plus
the new client), 20 rounds, one seed; FedLoG on Cora with a short generator pretraining
(gen_epochs 10, gen_networks 10 instead of 100 and 20).

Clip norms are those the clients' uploads reach without DP (measured on these runs at round 20):
a digits MLP round changes the model by ~0.2-0.27 (L2), Cora's GraphSAGE by ~0.6-1.2; digits'
condensed images have L2 norm ~50 per client, FedLoG's synthetic node sets ~1-9.

    python -m experiments.main --mode=privacy --config=experiments/configs/privacy.py
"""

import ml_collections

from experiments.configs.graph_seen import graph_base
from fedjax_syn.runs.config import default_config

ALGORITHMS = {
    "digits": ("fedavg", "fedprox", "fedavg_ft", "fedlog_vision"),
    "cora": ("fedavg", "fedprox", "fedavg_ft", "fedlog"),
}


def digits():
    config = default_config()
    config.dataset = "digits"
    config.num_clients = 5
    config.rounds = 20
    config.prox_mu = 0.1
    config.fedlog = {"syn_per_class": 5}
    config.grid = {"algorithm": ALGORITHMS["digits"]}
    return config


def cora():
    config = graph_base()
    config.dataset = "cora"
    config.num_clients = 5
    config.rounds = 20
    config.fedlog = {"gen_epochs": 10, "gen_networks": 10}
    config.grid = {"algorithm": ALGORITHMS["cora"]}
    return config


def get_config():
    config = ml_collections.ConfigDict()
    config.benchmarks = {"digits": digits(), "cora": cora()}
    config.clip = {
        "digits": {"clip_norm": 0.25, "data_clip_norm": 50.0},
        "cora": {"clip_norm": 1.0, "data_clip_norm": 5.0},
    }
    config.noise_multipliers = (0.0, 0.5, 1.0, 2.0)
    config.audit = {
        "delta": 1e-5,
        "shadows": 8,
        "inversion_steps": 300,
        "inversion_lr": 0.05,
        "seed": 0,
    }
    return config
