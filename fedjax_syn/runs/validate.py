"""Checks a whole config, every point of its grid, before the first run starts.

Each run checks its own fields when it starts, but a grid runs for hours: a bad value in its last
point would otherwise surface only after every earlier run. So entry points validate every point
first, against the names and ranges the runs accept. Cheap: no data is loaded and no model built.
Algorithm option groups (e.g. `fedlog`) are checked by their algorithm's own option parser.
"""

import math

import ml_collections

from fedjax_syn.algorithms import common, registry
from fedjax_syn.condense.core import METHODS
from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.data.graph_split import PARTITIONERS, SETTINGS
from fedjax_syn.data.graphs import GRAPH_DATASETS
from fedjax_syn.data.partition import PARTITIONS
from fedjax_syn.data.vision import VISION_DATASETS
from fedjax_syn.runs import condense
from fedjax_syn.runs import config as run_config
from fedjax_syn.runs.grid import grid_configs

TRACKS = ("vision", "graph", "condense")

# Smallest allowed value of integer fields, per kind of run.
_FEDERATED_MINIMA = {
    "seed": 0,
    "num_clients": 1,
    "rounds": 1,
    "batch_size": 1,
    "width": 1,
    "local_steps": 0,
    "eval_every": 1,
    "eval_example_chunk": 1,
}
_CONDENSE_MINIMA = {
    "seed": 0,
    "ipc": 1,
    "iterations": 0,
    "num_nets": 1,  # a condensation run draws its networks itself
    "width": 1,
    "depth": 1,
    "eval_nets": 1,
    "eval_epochs": 1,
    "eval_batch_size": 1,
    "test_size": 0,  # 0: the whole test set
}


def validate_config(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """The runs of `config` (one per grid point), each validated; raises `UserError` at the
    first bad value."""
    points = grid_configs(config)
    for point in points:
        validate_run(point)
    return points


def validate_run(cfg: ml_collections.ConfigDict) -> None:
    """Raises `UserError` naming the first field of one run that no run would accept."""
    check_choice("track", cfg.get("track"), TRACKS)
    if cfg.track == "condense":
        _check_types(cfg, condense.default_config())
        _check_condense(cfg)
    else:
        _check_types(cfg, run_config.default_config())
        _check_federated(cfg)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (tuple, list)):
        return "a tuple"
    return type(value).__name__


def _check_types(cfg: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    """Each field has its default's type. ConfigDict admits None and a bool for an int, which
    would fail later with a traceback instead of a message."""
    for field, default in defaults.items():
        if field not in cfg or isinstance(default, ml_collections.ConfigDict):
            continue
        value, want = cfg[field], _kind(default)
        ok = _kind(value) == want or (want == "a number" and _kind(value) == "an integer")
        check(ok, f"{field} must be {want}, got {value!r}")


def _check_minima(cfg: ml_collections.ConfigDict, minima: dict[str, int]) -> None:
    for field, low in minima.items():
        check(cfg[field] >= low, f"{field} must be >= {low}, got {cfg[field]!r}")


def _check_fraction(cfg: ml_collections.ConfigDict, field: str) -> None:
    check(0 <= cfg[field] < 1, f"{field} must be in [0, 1), got {cfg[field]!r}")


def _check_track_of_dataset(cfg: ml_collections.ConfigDict) -> None:
    """A dataset of the other track is a wrong config, not an unknown dataset: say which to use."""
    if cfg.track == "vision" and cfg.dataset in GRAPH_DATASETS:
        raise UserError(
            f"dataset {cfg.dataset!r} is a graph dataset but this config is for the vision track; "
            "start from a graph config, e.g. "
            f"--config=experiments/configs/graph_seen.py --config.dataset={cfg.dataset}"
        )
    if cfg.track == "graph" and cfg.dataset in VISION_DATASETS:
        raise UserError(
            f"dataset {cfg.dataset!r} is a vision dataset but this config is for the graph track; "
            "start from a vision config, e.g. the default (no --config) or "
            f"--config=experiments/configs/vision_alpha_sweep.py --config.dataset={cfg.dataset}"
        )


def _check_federated(cfg: ml_collections.ConfigDict) -> None:
    _check_track_of_dataset(cfg)
    if cfg.track == "vision":
        check_choice("vision dataset", cfg.dataset, VISION_DATASETS)
        check_choice("model", cfg.model, run_config.VISION_MODELS)
        check_choice("partition", cfg.partition, PARTITIONS)
        check(
            cfg.min_class_count >= 1, f"min_class_count must be >= 1, got {cfg.min_class_count!r}"
        )
        _check_fraction(cfg, "missing_frac")
    else:
        check_choice("graph dataset", cfg.dataset, GRAPH_DATASETS)
        check_choice("model", cfg.model, run_config.GRAPH_MODELS)
        check_choice("partitioner", cfg.partitioner, PARTITIONERS)
        check_choice("setting", cfg.setting, SETTINGS)
        _check_fraction(cfg, "unseen_frac")
        _check_fraction(cfg, "graph_missing_frac")
    registry.check_track(cfg.algorithm, cfg.track)
    registry.check_options(cfg)
    check_choice("optimizer", cfg.optimizer, common.OPTIMIZERS)
    check_choice("on_nonfinite", cfg.on_nonfinite, run_config.ON_NONFINITE)
    _check_minima(cfg, _FEDERATED_MINIMA)
    run_config.check_client_chunk(cfg.client_chunk)
    if not cfg.local_steps:
        check(cfg.local_epochs >= 1, f"local_epochs must be >= 1, got {cfg.local_epochs!r}")
    if cfg.algorithm in ("fedavg_ft", "fedbabu"):  # the algorithms that fine-tune
        check(
            cfg.finetune_epochs >= 1, f"finetune_epochs must be >= 1, got {cfg.finetune_epochs!r}"
        )
    check(
        math.isfinite(cfg.alpha) and cfg.alpha > 0,
        f"alpha must be a finite number > 0, got {cfg.alpha!r}",
    )
    check(cfg.lr > 0, f"lr must be > 0, got {cfg.lr!r}")
    check(
        all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in cfg.hidden),
        f"hidden must be a tuple of layer widths >= 1, got {cfg.hidden!r}",
    )


def _check_condense(cfg: ml_collections.ConfigDict) -> None:
    check_choice("vision dataset", cfg.dataset, VISION_DATASETS)
    check_choice("condensation method", cfg.method, METHODS)
    check_choice("model", cfg.model, condense.MODELS)
    _check_minima(cfg, _CONDENSE_MINIMA)
    check(cfg.eval_lr > 0, f"eval_lr must be > 0, got {cfg.eval_lr!r}")
    condense.check_options(cfg)  # init, batch_real, loop counts: what `CondenseConfig` checks
