"""Prints the per-client, per-class statistics table of one subgraph-FL split.

Usage:
  python scripts/graph_stats.py --dataset=cora --num_clients=3 --setting=closeset \
      --partitioner=louvain --seed=0 [--data_dir=DIR]

Bad flags or bad input print one line `error: ...` and exit with status 2.
"""

from absl import flags

from experiments import cli
from fedjax_syn.core.errors import UserError
from fedjax_syn.data.graph_split import PARTITIONERS, SETTINGS, build_graph_federation, split_table
from fedjax_syn.data.graphs import GRAPH_DATASETS, load_graph

_DATASET = flags.DEFINE_enum("dataset", "cora", GRAPH_DATASETS, "Graph dataset.")
_NUM_CLIENTS = flags.DEFINE_integer("num_clients", 3, "Training clients K (plus one new client).")
_SETTING = flags.DEFINE_enum("setting", "closeset", SETTINGS, "Unseen-node setting.")
_PARTITIONER = flags.DEFINE_enum("partitioner", "louvain", PARTITIONERS, "Graph partitioner.")
_UNSEEN_FRAC = flags.DEFINE_float("unseen_frac", 0.2, "Fraction of unseen nodes per client.")
_MISSING_FRAC = flags.DEFINE_float("missing_frac", 0.3, "Fraction of missing classes per client.")
_SEED = flags.DEFINE_integer("seed", 0, "Split seed.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Staged datasets folder (default: FEDJAX_SYN_DATA_DIR)."
)


def main(argv: list[str]) -> None:
    del argv
    try:
        data = load_graph(_DATASET.value, data_dir=_DATA_DIR.value)
        fed = build_graph_federation(
            data,
            _NUM_CLIENTS.value,
            partitioner=_PARTITIONER.value,
            setting=_SETTING.value,
            unseen_frac=_UNSEEN_FRAC.value,
            missing_frac=_MISSING_FRAC.value,
            seed=_SEED.value,
        )
    except UserError as e:
        cli.fail(str(e))
    print(split_table(fed), end="")


if __name__ == "__main__":
    cli.run(main)
