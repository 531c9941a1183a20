"""FedLoG ablations on Cora and CiteSeer, K = 3, closeset, seeds 0, 1, 2: each variant removes or
swaps one component (docs/fedlog.md) and reports every setting, so one can see which component
buys which kind of generalization.

Variants (fields of `cfg.fedlog`, see fedjax_syn/algorithms/fedlog/config.py):
  full            the method as documented
  no_cd           no loss on the global synthetic data (cd_weight 0): no knowledge transfer
  no_prompt       synthetic nodes without generated prompt neighbours
  random_prompt   untrained, randomly initialised prompt generators (the released code)
  no_scaling      no adaptive feature scaling of the global synthetic nodes
  uniform_blend   global synthetic data blended with weights 1/K instead of class shares
  head_and_tail   tail synthetic nodes shared as well as head ones
  small_beta      L_norm weight 0.01 instead of 1

    python -m experiments.main --mode=reproduce --table=ablations
    python -m experiments.main --config=experiments/configs/ablations.py --grid='variant=full,no_cd'
"""

from experiments.configs.graph_seen import graph_base

VARIANTS = {
    "full": {},
    "no_cd": {"fedlog": {"cd_weight": 0.0}},
    "no_prompt": {"fedlog": {"prompt": "none"}},
    "random_prompt": {"fedlog": {"prompt": "random"}},
    "no_scaling": {"fedlog": {"feature_scaling": False}},
    "uniform_blend": {"fedlog": {"weights": "uniform"}},
    "head_and_tail": {"fedlog": {"global_synthetic": "both"}},
    "small_beta": {"fedlog": {"beta": 0.01}},
}


# A row and a bar per variant, every setting.
VARIANT_TABLE = {
    "rows": ("dataset", "config.variant"),
    "settings": ("seen", "unseen_node", "missing_class", "new_client"),
    "metric": "both",
    "plot": "gap",
    "series": "config.variant",
}


def get_config():
    config = graph_base()
    config.algorithm = "fedlog"
    config.num_clients = 3
    config.variants = VARIANTS
    config.grid = {
        "dataset": ("cora", "citeseer"),
        "variant": tuple(VARIANTS),
        "seed": (0, 1, 2),
    }
    config.table = {"title": "FedLoG ablations (K = 3, closeset)", **VARIANT_TABLE}
    return config
