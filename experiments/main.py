"""Runs one experiment, or every run of a config's `grid`, and prints the results table.

    python -m experiments.main                                    # the main job (digits table)
    python -m experiments.main --config=experiments/configs/digits_table.py --config.rounds=5
    python -m experiments.main --config=experiments/configs/cora.py --config.algorithm=fedavg

Each finished run appends one record to the ledger (--ledger). User errors print one line and exit 2.
"""

import ast
import itertools
import pathlib

from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from fedjax_syn import cli, experiment, tables
from fedjax_syn.errors import UserError

_DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "digits_table.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file.")
_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_GRID = flags.DEFINE_string(
    "grid",
    "",
    "Replace grid axes, e.g. 'algorithm=fedavg,fedprox;seed=0,1,2'. Values are Python literals.",
)


def parse_grid_override(text: str) -> dict[str, list]:
    """'a=1,2;b=x' -> {'a': [1, 2], 'b': ['x']}; bare words are strings."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise UserError(f"bad --grid entry {part!r}; expected key=v1,v2")
        key, values = part.split("=", 1)
        out[key.strip()] = [_literal(v.strip()) for v in values.split(",")]
    return out


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def grid_configs(config):
    """One config per point of `config.grid` (the config itself when it has no grid)."""
    grid = config.get("grid")
    if not grid:
        return [config]
    keys = list(grid.keys())
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = config.copy_and_resolve_references()
        with point.unlocked():
            for field in ("grid", "table"):
                if field in point:
                    del point[field]
        for k, v in zip(keys, values):
            point[k] = v
        out.append(point)
    return out


def run_grid(config, ledger: str, progress: bool) -> list[dict]:
    records = []
    points = grid_configs(config)
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
    if _GRID.value:
        with config.unlocked():
            grid = dict(config.get("grid") or {})
            grid.update(parse_grid_override(_GRID.value))
            config.grid = grid
    records = run_grid(config, _LEDGER.value, _PROGRESS.value)
    rows = list(config.get("table", {}).get("rows", ["dataset", "algorithm"]))
    print(tables.render_markdown(records, rows=rows, settings=records[0]["settings"]))
    print(f"\nledger: {_LEDGER.value}")


if __name__ == "__main__":
    cli.run(main)
