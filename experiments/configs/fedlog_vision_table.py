"""FedLoG's image recipe against the baselines it is meant to improve on: Fashion-MNIST, K = 10
clients plus one new client, Dirichlet(alpha) label skew with alpha in {0.1, 0.5}, seeds 0, 1, 2;
`fedlog_vision` (per-client gradient-matching condensation against the global model, class-share
weighted global synthetic set, fine-tuning on local + adaptively scaled global synthetic data) vs
`fedavg_ft` (local fine-tuning: the local-overfitting baseline) and `fedavg`. Seen / Global /
Missing Class / New Client, best-validation and last round.

Variants (the config argument after the colon):
  mlp      (default) an MLP 784-256-128-10, minibatches of 64, 20 rounds, evaluated every 5
           rounds (fedavg_ft fine-tunes 5 epochs at every evaluation): the scale a 2-core CPU
           runs in well under an hour.
  convnet  the DC ConvNet (width 64), 50 rounds evaluated every round, as in
           vision_alpha_sweep.py: for accelerators.

    python -m experiments.main --config=experiments/configs/fedlog_vision_table.py \
        --ledger=results/vision/ledger.jsonl
    python -m experiments.main --config=experiments/configs/fedlog_vision_table.py:convnet
"""

from experiments.configs.vision_alpha_sweep import get_config as alpha_sweep
from fedjax_syn.core.errors import check_choice

VARIANTS = ("mlp", "convnet")


def get_config(variant: str = "mlp"):
    check_choice("fedlog_vision_table variant", variant, VARIANTS)
    config = alpha_sweep()
    if variant == "mlp":
        config.model = "mlp"
        config.hidden = (256, 128)
        config.batch_size = 64
        config.rounds = 20
        config.eval_every = 5
    config.grid = {
        "algorithm": ("fedavg", "fedavg_ft", "fedlog_vision"),
        "alpha": (0.1, 0.5),
        "seed": (0, 1, 2),
    }
    config.table.title = f"FedLoG's image recipe on Fashion-MNIST ({variant}, K = 10)"
    return config
