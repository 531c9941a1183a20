"""Which FedLoG component gives the client's own model its missing classes: Cora, K = 3, under
the comparison's protocol (row-normalised features, beta 0.01 as validation chose there), the
method as documented against it without prompts, without adaptive feature scaling and without
the loss on the global synthetic data (L_cd), seeds 0, 1, 2, scored with each client's model
right after its local update (`local`, the released protocol) and with the server's (`global`).

    python -m experiments.main --config=experiments/configs/fedlog_components.py \
        --ledger=results/comparison/fedlog_components_cora3.jsonl
    python -m experiments.main --mode=tables --ledger=results/comparison/fedlog_components_cora3.jsonl \
        --spec=experiments/configs/fedlog_components.py --out=results/comparison
"""

from experiments.configs import ablations

VARIANTS = ("full", "no_prompt", "no_scaling", "no_cd")


def get_config():
    config = ablations.get_config()
    config.normalize_features = True
    config.grid = {
        "dataset": ("cora",),
        "variant": VARIANTS,
        "fedlog": {"beta": (0.01,)},
        "seed": (0, 1, 2),
    }
    config.table = {
        "title": "FedLoG's components on Cora K = 3, scored local and global",
        "rows": ("dataset", "config.variant"),
        "settings": ("seen", "unseen_node", "missing_class", "new_client"),
        "metric": "best",
        "modes": ("local", "global"),
        "expected_rows": tuple(("cora", v) for v in VARIANTS),
    }
    return config
