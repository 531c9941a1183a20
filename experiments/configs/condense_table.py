"""Condensation table: test accuracy of ConvNets trained only on a condensed set, against the same
networks trained on as many random real images per class, for gradient matching (Zhao et al.,
ICLR 2021), with and without differentiable Siamese augmentation (DSA, Zhao & Bilen, ICML 2021),
and distribution matching (Zhao & Bilen, WACV 2023; its paper augments with DSA) at 1, 10 and 50
images per class, seeds 0, 1, 2, with the published figures beside ours. FedLoG's vision recipe
condenses client data the same way. `mnist_5k` (5,000 real MNIST training images, 500 per class,
`fedjax_syn.data.vision`) stands in for MNIST where its 60,000 training images are not at hand.

Each run condenses the whole training set (`fedjax_syn.runs.condense`) and trains
`eval_nets` fresh networks for `eval_epochs` epochs on the result.

    python -m experiments.main --mode=reproduce --table=condense_table
    python -m experiments.main --config=experiments/configs/condense_table.py \
        --grid='dataset=fashion_mnist;method=dm;dsa=True;ipc=1,10' --config.iterations=100
"""

from fedjax_syn.runs.condense import default_config


def get_config():
    config = default_config()  # the papers' protocol: ConvNet, 1000 iterations, 5 x 300 epochs
    config.dataset = "fashion_mnist"
    config.grid = {
        "dataset": ("mnist", "mnist_5k", "fashion_mnist"),
        "method": ("gm", "dm"),
        "dsa": (False, True),
        "ipc": (1, 10, 50),
        "seed": (0, 1, 2),
    }
    config.table = {
        "title": "Dataset condensation: test accuracy of networks trained on the small set",
        "rows": ("dataset", "method", "config.dsa", "ipc", "config.iterations"),
        "metrics": ("syn_acc", "random_acc"),
    }
    return config
