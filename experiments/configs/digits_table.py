"""The main job: FedLoG's image recipe (fedlog_vision) beside local / fedavg / fedavg_ft / fedprox on
scikit-learn's digits, alpha in {0.1, 1.0}, two seeds. Embedded data, no download; about 1.5
minutes on a 2-core CPU (BENCHMARKS.md, "Main job").

    python -m experiments.main --config=experiments/configs/digits_table.py
"""

from fedjax_syn.runs.config import default_config


def get_config():
    config = default_config()
    config.dataset = "digits"
    config.model = "mlp"
    config.hidden = (32,)
    config.num_clients = 10
    config.partition = "dirichlet"
    config.rounds = 30
    config.local_epochs = 1
    config.batch_size = 10
    config.lr = 0.05
    config.finetune_epochs = 5
    config.prox_mu = 0.1
    config.grid = {
        "algorithm": ["local", "fedavg", "fedavg_ft", "fedprox", "fedlog_vision"],
        "alpha": [0.1, 1.0],
        "seed": [0, 1],
    }
    config.table = {"rows": ["protocol.alpha", "algorithm"]}
    return config
