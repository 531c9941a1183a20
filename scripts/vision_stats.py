"""Prints the per-client, per-class split table of a vision federation (PROTOCOL.md, vision track).

Example:
  python scripts/vision_stats.py --dataset=digits --num_clients=5 --partition=dirichlet --alpha=0.3

Bad input ends with a one-line `error: ...` on stderr and exit status 2.
"""

from absl import flags

from experiments import cli
from fedjax_syn.core.errors import UserError
from fedjax_syn.data.partition import PARTITIONS
from fedjax_syn.data.vision import VISION_DATASETS, load_vision
from fedjax_syn.data.vision_split import build_vision_federation, class_count_table

_DATASET = flags.DEFINE_enum("dataset", "digits", VISION_DATASETS, "Vision dataset.")
_NUM_CLIENTS = flags.DEFINE_integer("num_clients", 10, "Training clients (plus one new client).")
_PARTITION = flags.DEFINE_enum("partition", "dirichlet", PARTITIONS, "Partition method.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "Dirichlet concentration (dirichlet only).")
_CLASSES_PER_PART = flags.DEFINE_integer("classes_per_part", 2, "Classes per client (shards only).")
_MIN_CLASS_COUNT = flags.DEFINE_integer(
    "min_class_count", 2, "A class with fewer examples in a client is missing for it."
)
_MISSING_FRAC = flags.DEFINE_float(
    "missing_frac", 0.0, "Fraction of each client's present classes to hide as well."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the partition and the per-client splits.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Local datasets folder (default: $FEDJAX_SYN_DATA_DIR)."
)
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data dir (default: TFDS's).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        data = load_vision(_DATASET.value, _DATA_DIR.value, _TFDS_DATA_DIR.value)
        fed = build_vision_federation(
            data,
            _NUM_CLIENTS.value,
            _PARTITION.value,
            alpha=_ALPHA.value,
            classes_per_part=_CLASSES_PER_PART.value,
            seed=_SEED.value,
            min_class_count=_MIN_CLASS_COUNT.value,
            missing_frac=_MISSING_FRAC.value,
        )
    except UserError as e:
        cli.fail(str(e))
    print(
        f"{_DATASET.value}: {_NUM_CLIENTS.value} clients + 1 new client, "
        f"partition={_PARTITION.value}, alpha={_ALPHA.value}, seed={_SEED.value}\n"
    )
    print(class_count_table(fed))


if __name__ == "__main__":
    cli.run(main)
