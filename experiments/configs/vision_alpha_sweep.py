"""Vision heterogeneity sweep: five baselines (local, FedAvg, FedProx, FedPer, FedAvg-FT) and FedLoG's image recipe (`fedlog_vision`) on
Fashion-MNIST under Dirichlet(alpha) label skew, alpha in {0.05, 0.1, 0.3, 1.0, 10.0}
(../shared/docs/PROTOCOL.md, vision track), K = 10 clients plus one new client, seeds 0, 1, 2.

The table reports Seen / Global / Missing Class / New Client at the best-validation round and the
last round; the figure plots accuracy against alpha, one panel per setting. Seeds and alphas of one
algorithm differ only in their data, so `python -m experiments.main` runs them as one batched program (15
runs); on a machine with little memory, cap that with --max_batch.

    python -m experiments.main --mode=reproduce --table=vision_alpha_sweep
    python -m experiments.main --config=experiments/configs/vision_alpha_sweep.py --max_batch=5
    python -m experiments.main --config=experiments/configs/vision_alpha_sweep.py \
        --config.dataset=digits --config.model=mlp          # the same sweep on embedded digits
"""

from fedjax_syn.runs.config import default_config

ALPHAS = (0.05, 0.1, 0.3, 1.0, 10.0)


def get_config():
    config = default_config()
    config.track = "vision"
    config.dataset = "fashion_mnist"
    config.model = "convnet"
    config.width = 64
    config.num_clients = 10
    config.partition = "dirichlet"
    config.min_class_count = 2
    config.rounds = 50
    config.local_epochs = 1
    config.batch_size = 32
    config.optimizer = "sgd"
    config.lr = 0.01
    config.momentum = 0.9
    config.finetune_epochs = 5
    config.prox_mu = 0.01
    config.eval_every = 1
    config.client_chunk = 0
    config.grid = {
        "algorithm": ("local", "fedavg", "fedprox", "fedper", "fedavg_ft", "fedlog_vision"),
        "alpha": ALPHAS,
        "seed": (0, 1, 2),
    }
    config.table = {
        "title": "Image classification under Dirichlet(alpha) label skew",
        "rows": ("dataset", "protocol.alpha", "algorithm"),
        "settings": ("seen", "global", "missing_class", "new_client"),
        "metric": "both",
        "plot": "alpha",
    }
    return config
