"""Runs one experiment, or every run of a config's `grid`, and prints the results table.

    python -m experiments.main                                    # the main job (digits table)
    python -m experiments.main --config=experiments/configs/digits_table.py --config.rounds=5
    python -m experiments.main --config=experiments/configs/cora.py --config.algorithm=fedavg

A field the config's grid sweeps, set with --config.FIELD=v, narrows that axis to v (e.g.
--config.algorithm=fedprox runs FedProx only); --grid replaces axes. Every run is validated before
the first one starts. Each finished run appends one record to the ledger (--ledger). User errors
print one line and exit 2.
"""

import pathlib

import ml_collections
from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from fedjax_syn import cli, experiment, sweep, tables, validate

_DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "digits_table.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file.")
_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_GRID = flags.DEFINE_string(
    "grid",
    "",
    "Replace grid axes, e.g. 'algorithm=fedavg,fedprox;seed=0,1,2'. Values are Python literals.",
)


def run_grid(points: list[ml_collections.ConfigDict], ledger: str, progress: bool) -> list[dict]:
    records = []
    for point in tqdm(points, desc="runs", disable=not progress or len(points) == 1):
        bar = tqdm(
            total=point.rounds,
            desc=f"{point.algorithm} seed={point.seed}",
            leave=False,
            disable=not progress,
        )

        def on_round(r, metrics, bar=bar):
            bar.update(r - bar.n)
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if v is not None and v == v})

        record = experiment.run(point, ledger=ledger, on_round=on_round)
        bar.close()
        best = record["best"]
        logging.info(
            "%s %s seed=%d best round %d: %s (%.1fs, compile %.1fs)",
            record["dataset"],
            record["algorithm"],
            record["seed"],
            best["round"],
            ", ".join(f"{k}={v:.3f}" for k, v in best.items() if k != "round" and v is not None),
            record["wall_time_s"],
            record["compile_time_s"],
        )
        records.append(record)
    return records


def main(argv):
    del argv
    config = _CONFIG.value
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    sweep.apply_command_line(config, overrides, _GRID.value)
    points = validate.validate_config(config)
    records = run_grid(points, _LEDGER.value, _PROGRESS.value)
    rows = list(config.get("table", {}).get("rows", ["dataset", "algorithm"]))
    print(tables.render_markdown(records, rows=rows, settings=records[0]["settings"]))
    print(f"\nledger: {_LEDGER.value}")


if __name__ == "__main__":
    cli.run(main)
