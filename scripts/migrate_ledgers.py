"""Brings ledgers written by earlier versions to the current record format; running it again
changes nothing. Every metric stays as it was.

1. FedLoG's rounds. Earlier, FedLoG's round 0 (pretraining and the first synthetic data) ran
   inside the engine's initialisation and was evaluated at the engine's round 1, so a record's
   round i held FedLoG's round i - 1. Now the setup is round 0 itself, and a run of `rounds` R
   ends at round R - 1: `eval_rounds` and the best / last round of the older fedlog and
   fedlog_vision records (whose last round is R) move one lower.
2. Condensation runs. They were written by a command line of their own, whose config spelled a
   few fields differently (`num_eval_nets`, None for "the default"); the config and run id
   become those of the same run through `python -m experiments.main`, so a rerun finds it.

Usage:
  python scripts/migrate_ledgers.py results/graph/ledger.jsonl results/vision/ledger.jsonl \
      results/condense/fashion_mnist.jsonl
"""

import json
import sys

from fedjax_syn.runs.condense import default_config, identity
from fedjax_syn.runs.ledger import read_ledger, run_id, write_atomic

SETUP_ALGORITHMS = ("fedlog", "fedlog_vision")
RENAMED = {"num_eval_nets": "eval_nets"}


def renumber_setup_round(record: dict) -> bool:
    """Renumbers a FedLoG record from before the setup round; returns whether it did."""
    if record.get("algorithm") not in SETUP_ALGORITHMS:
        return False
    if record["eval_rounds"][-1] != record["config"]["rounds"]:
        return False
    record["eval_rounds"] = [r - 1 for r in record["eval_rounds"]]
    for row in ("best", "last"):
        record[row]["round"] -= 1
    return True


def adopt_condense_config(record: dict) -> bool:
    """Gives a condensation record the config of the run's current form; returns whether it
    changed anything."""
    if record.get("track") != "condense" or "track" in record["config"]:
        return False
    cfg = default_config()
    for field, value in record["config"].items():
        cfg[RENAMED.get(field, field)] = 0 if value is None else value
    record["config"] = cfg.to_dict()
    record["run_id"] = run_id(identity(cfg))
    return True


def main(paths: list[str]) -> None:
    for path in paths:
        records = read_ledger(path)
        changed = sum(renumber_setup_round(r) or adopt_condense_config(r) for r in records)
        lines = "".join(
            json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records
        )
        write_atomic(path, lines)
        print(f"{path}: {changed} of {len(records)} records brought up to date")


if __name__ == "__main__":
    main(sys.argv[1:])
