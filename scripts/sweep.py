"""Runs every point of a config's grid, resumably, and prints the table the config names.

Usage:
  python scripts/sweep.py --config=experiments/configs/vision_alpha_sweep.py
  python scripts/sweep.py --config=experiments/configs/graph_seen.py \
      --grid='dataset=cora;num_clients=3' --checkpoint_every=5 --ledger=runs/graph.jsonl

A grid axis set with --config.FIELD=v is narrowed to v; --grid replaces axes; every run is
validated before the first one starts. Runs already in the ledger (same run_id) are skipped.
Each program (one run, or runs batched along a leading runs axis when only their data differ and
their clients are vmapped; --nobatch_runs turns that off) saves its state every
--checkpoint_every rounds; after a crash or `kill -9`, the same command resumes from the newest
intact checkpoint and ends with the same numbers as an uninterrupted sweep. One line is printed
per finished run. Bad flags or input print one line `error: ...` and exit with status 2.

Several hosts (docs/scale.md): start the same command on every host with --distributed and
--config.shard=True; the clients axis is then split over every device of every host, process 0
writes the ledger, and --checkpoint_dir must be a folder all hosts share.
"""

import pathlib

import jax
from absl import flags, logging
from ml_collections import config_flags

from fedjax_syn import cli, sweep, tables, validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file.")
_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", "runs/checkpoints", "Where programs checkpoint their state."
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 10, "Checkpoint every this many rounds (0: never)."
)
_BATCH_RUNS = flags.DEFINE_bool(
    "batch_runs", True, "Run runs that differ only in data (seed, alpha, ...) as one program."
)
_MAX_BATCH = flags.DEFINE_integer("max_batch", 0, "At most this many runs per program (0: all).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_GRID = flags.DEFINE_string(
    "grid", "", "Replace grid axes, e.g. 'algorithm=fedavg,fedprox;seed=0,1,2;fedlog.beta=0.1,1'."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-process run (TPU pod slice, several GPU hosts): call jax.distributed.initialize() "
    "first; the cluster is auto-detected unless the three flags below are given.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    if _DISTRIBUTED.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    config = _CONFIG.value
    if config is None:
        cli.fail("--config is required, e.g. --config=experiments/configs/vision_alpha_sweep.py")
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    sweep.apply_command_line(config, overrides, _GRID.value)
    validate.validate_config(config)
    name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem
    records = sweep.run_sweep(
        config,
        ledger=_LEDGER.value,
        checkpoint_dir=_CHECKPOINT_DIR.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        batch_runs=_BATCH_RUNS.value,
        max_batch=_MAX_BATCH.value,
        progress=_PROGRESS.value,
    )
    table = tables.build_table(records, sweep.table_spec(config, name), source=_LEDGER.value)
    if jax.process_index() == 0:
        print(tables.to_markdown(table))
        print(f"ledger: {_LEDGER.value}")


if __name__ == "__main__":
    cli.run(main)
