"""FedLoG sensitivity and fidelity sweep on Cora, K = 3, closeset, seeds 0, 1, 2: the paper's
hyperparameters (beta, s, gamma), the server's switches, and the released code's behaviours one at
a time next to the documented decisions (docs/fedlog.md). Component ablations (no L_cd, no
prompts, ...) are in ablations.py.

Variants (fields of `cfg.fedlog`, see fedjax_syn/algorithms/fedlog/config.py):
  default               the method as documented
  beta_0p1, beta_0p01   L_norm weight 0.1, 0.01 (the paper's grid {0.01, 0.1, 1}; default 1)
  s_5, s_10             synthetic nodes per class (default 20)
  gamma_1, gamma_5      head-degree threshold of the gate (default 3)
  weighted_avg          model average weighted by training nodes (released: uniform)
  tail_global           global synthetic data from tail instead of head nodes
  fresh_networks        generator pretraining redraws its networks every epoch (as released)
  self_loop             synthetic nodes embedded with the identity adjacency (as released)
  random_prompt         untrained prompt generators (as released)
  released              all of the released code's behaviours together

    python -m experiments.main --config=experiments/configs/fedlog_ablations.py
    python -m experiments.main --config=experiments/configs/fedlog_ablations.py \
        --grid='variant=default,released;seed=0'
"""

from experiments.configs import fedlog_cora
from experiments.configs.ablations import VARIANT_TABLE

VARIANTS = {
    "default": {},
    "beta_0p1": {"fedlog": {"beta": 0.1}},
    "beta_0p01": {"fedlog": {"beta": 0.01}},
    "s_5": {"fedlog": {"syn_per_class": 5}},
    "s_10": {"fedlog": {"syn_per_class": 10}},
    "gamma_1": {"fedlog": {"gamma": 1.0}},
    "gamma_5": {"fedlog": {"gamma": 5.0}},
    "weighted_avg": {"fedlog": {"aggregate": "weighted"}},
    "tail_global": {"fedlog": {"global_synthetic": "tail"}},
    "fresh_networks": {"fedlog": {"gen_fixed_networks": False}},
    "self_loop": {"fedlog": {"synthetic_graph": "self_loop"}},
    "random_prompt": {"fedlog": {"prompt": "random"}},
    "released": {"fedlog": fedlog_cora.fedlog_options(**fedlog_cora.VARIANTS["released"])},
}


def get_config():
    config = fedlog_cora.get_config()
    config.variants = VARIANTS
    config.grid = {"variant": tuple(VARIANTS), "seed": (0, 1, 2)}
    config.table = {
        "title": "FedLoG sensitivity and released-code behaviours (Cora, K = 3, closeset)",
        **VARIANT_TABLE,
    }
    return config
