"""Regenerates one table end to end, from nothing: data -> splits -> runs -> table -> figures.

Usage:
  python scripts/reproduce.py digits_table --quick        # smoke run, a minute on a laptop CPU
  python scripts/reproduce.py vision_alpha_sweep          # the full table
  python scripts/reproduce.py graph_seen --grid='dataset=cora,citeseer' --out=runs/graph_seen
  python scripts/reproduce.py experiments/configs/ablations.py --max_batch=3

TABLE is a config name under experiments/configs/ (digits_table, vision_alpha_sweep, graph_seen,
graph_generalization, condense_table, ablations) or a config file. --quick keeps at most 3 rounds,
the first seed, dataset and client count, and shortens condensation and FedLoG's round 0. Every
output goes under --out (default runs/reproduce/TABLE[-quick]) and is printed as it is written;
rerunning resumes (finished runs are skipped, interrupted ones continue from their checkpoint).
Bad flags or input print one line `error: ...` and exit with status 2.
"""

from absl import app, flags, logging

from experiments import configs
from fedjax_syn import cli, reproduce
from fedjax_syn.core.errors import UserError

_QUICK = flags.DEFINE_bool("quick", False, "Shrink rounds, seeds and inner loops for a smoke run.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default runs/reproduce/TABLE[-quick]).")
_GRID = flags.DEFINE_string(
    "grid", "", "Replace grid axes, e.g. 'algorithm=fedavg,fedprox;seed=0,1,2'."
)
_BATCH_RUNS = flags.DEFINE_bool(
    "batch_runs", True, "Run runs that differ only in data (seed, alpha, ...) as one program."
)
_MAX_BATCH = flags.DEFINE_integer("max_batch", 0, "At most this many runs per program (0: all).")
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 10, "Checkpoint every this many rounds (0: never)."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def parse(argv: list[str]) -> list[str]:
    """Flags plus exactly one positional argument, the table."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        cli.fail(str(e))
    if len(rest) != 2:
        cli.fail(
            "give exactly one table: a config name (one of "
            f"{', '.join(configs.available())}) or a config file"
        )
    return rest


def main(argv: list[str]) -> None:
    try:
        _reproduce(argv[1])
    except UserError as e:
        cli.fail(str(e))


def _reproduce(table: str) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    name, config = configs.load(table)
    outputs = reproduce.reproduce(
        name,
        config,
        quick=_QUICK.value,
        out=_OUT.value,
        grid=_GRID.value,
        batch_runs=_BATCH_RUNS.value,
        max_batch=_MAX_BATCH.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        progress=_PROGRESS.value,
    )
    print()
    print(outputs.markdown)


if __name__ == "__main__":
    app.run(main, flags_parser=parse)
