"""Renumbers the rounds of FedLoG records written before FedLoG's setup became round 0.

Earlier, FedLoG's round 0 (pretraining and the first synthetic data) ran inside the engine's
initialisation and was evaluated at the engine's round 1, so a record's round i held FedLoG's
round i - 1. Now the setup is round 0 itself, and a run of `rounds` R ends at round R - 1. This rewrites `eval_rounds` and the
best / last round of the older records (fedlog and fedlog_vision whose last round is R) one lower;
every metric, run id and config stays as it was. Running it again changes nothing.

Usage:
  python scripts/migrate_setup_round.py results/graph/ledger.jsonl results/vision/ledger.jsonl
"""

import json
import sys

from fedjax_syn.results import read_ledger, write_atomic

SETUP_ALGORITHMS = ("fedlog", "fedlog_vision")


def migrate(record: dict) -> bool:
    """Renumbers `record` in place when it predates the setup round; returns whether it did."""
    old = record["eval_rounds"][-1] == record["config"]["rounds"]
    if record.get("algorithm") not in SETUP_ALGORITHMS or not old:
        return False
    record["eval_rounds"] = [r - 1 for r in record["eval_rounds"]]
    for row in ("best", "last"):
        record[row]["round"] -= 1
    return True


def main(paths: list[str]) -> None:
    for path in paths:
        records = read_ledger(path)
        changed = sum(migrate(r) for r in records)
        lines = "".join(
            json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records
        )
        write_atomic(path, lines)
        print(f"{path}: {changed} of {len(records)} records renumbered")


if __name__ == "__main__":
    main(sys.argv[1:])
