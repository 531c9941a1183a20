"""Regenerating one paper-style table from nothing: data -> splits -> runs -> table -> figures.

A table is a config (the entry point loads it from `experiments/configs/` or a file) whose
`grid` names its runs and whose `table` names its layout. `reproduce` loads every dataset the
grid uses (reporting where it came from), writes the statistics of every split the runs train
on, runs the grid with the resumable sweep runner, renders the table from the ledger, and draws
its figure, all under one output folder it reports:

    OUT/ledger.jsonl, OUT/checkpoints/, OUT/splits/*.txt, OUT/tables/<name>.{md,tex},
    OUT/figures/<name>*.{png,pdf}

`quick=True` shrinks the work for a smoke run: at most 3 rounds, the first seed, the first dataset,
client count and images per class, and the expensive inner loops of condensation and FedLoG's
round 0, keeping the axes the table compares (algorithms, heterogeneity levels, settings, variants).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from fedjax_syn.report import plots, render, specs, tables
from fedjax_syn.runs import sweep, validate
from fedjax_syn.runs.grid import override_grid
from fedjax_syn.runs.ledger import write_atomic
from fedjax_syn.runs.prepare import build_split
from fedjax_syn.runs.records import lookup

QUICK_ROUNDS = 3
QUICK_FEDLOG = {"pretrain_epochs": 2, "gen_epochs": 2, "gen_networks": 2}
QUICK_CONDENSE = {"iterations": 2, "eval_epochs": 2, "eval_nets": 1}
_FIRST_ONLY = ("seed", "dataset", "num_clients", "ipc")  # grid axes quick keeps one value of


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` sized for a smoke run (see the module docstring)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if config.get("track") == "condense":
            for field, cap in QUICK_CONDENSE.items():
                config[field] = min(config[field], cap)
        else:
            config.rounds = min(config.rounds, QUICK_ROUNDS)
            config.eval_every = 1
        grid = config.get("grid") or ml_collections.ConfigDict()
        for axis in _FIRST_ONLY:
            if axis in grid:
                grid[axis] = tuple(grid[axis][:1])
        algorithms = set(grid.get("algorithm", ())) | {config.get("algorithm")}
        if algorithms & {"fedlog", "fedlog_released"}:
            for field, cap in QUICK_FEDLOG.items():
                config.fedlog[field] = min(config.fedlog.get(field, cap), cap)
    return config


@dataclasses.dataclass
class Outputs:
    """Where everything went."""

    folder: pathlib.Path
    ledger: pathlib.Path
    checkpoints: pathlib.Path
    splits: list[pathlib.Path]
    tables: list[pathlib.Path]
    figures: list[pathlib.Path]
    records: list[dict]
    markdown: str


def _load(cfg, cache: dict) -> Any:
    key = (cfg.track, cfg.dataset, cfg.data_dir)
    if key not in cache:
        if cfg.track == "graph":
            from fedjax_syn.data.graphs import load_graph

            cache[key] = load_graph(cfg.dataset, cfg.data_dir or None)
        else:
            from fedjax_syn.data.vision import load_vision

            cache[key] = load_vision(cfg.dataset, cfg.data_dir or None)
    return cache[key]


def describe_data(
    points: Sequence[ml_collections.ConfigDict], cache: dict, log: Callable[[str], None]
) -> None:
    """Loads every dataset of the grid once (failing early, before any run) and reports it."""
    seen = set()
    for cfg in points:
        if (cfg.track, cfg.dataset) in seen:
            continue
        seen.add((cfg.track, cfg.dataset))
        data = _load(cfg, cache)
        if cfg.track == "graph":
            log(
                f"data: {cfg.dataset}: {data.x.shape[0]} nodes, {data.edges.shape[1]} undirected "
                f"edges, {data.x.shape[1]} features, {data.num_classes} classes"
            )
        else:
            log(
                f"data: {cfg.dataset}: {len(data.train_y)} train / {len(data.test_y)} test "
                f"images {'x'.join(map(str, data.train_x.shape[1:]))}, {data.num_classes} classes"
            )


_SPLIT_FIELDS = {
    "vision": ("num_clients", "partition", "alpha", "min_class_count", "missing_frac", "seed"),
    "graph": ("num_clients", "partitioner", "setting", "unseen_frac", "graph_missing_frac", "seed"),
}


def _split_name(cfg) -> str:
    parts = [cfg.dataset] + [f"{f}={cfg[f]}" for f in _SPLIT_FIELDS[cfg.track]]
    if cfg.track == "vision" and cfg.partition == "shards":
        parts.append(f"classes_per_part={cfg.classes_per_part}")
    return "_".join(parts).replace("/", "-")


def split_tables(points: Sequence[ml_collections.ConfigDict], cache: dict) -> dict[str, str]:
    """Per distinct split of the grid, its name and its per-client, per-class statistics."""
    texts: dict[str, str] = {}
    for cfg in points:
        if cfg.track not in _SPLIT_FIELDS or _split_name(cfg) in texts:
            continue
        split = build_split(cfg, _load(cfg, cache))
        if cfg.track == "graph":
            from fedjax_syn.data.graph_split import split_table

            text = split_table(split)
        else:
            from fedjax_syn.data.vision_split import class_count_table

            text = class_count_table(split)
        texts[_split_name(cfg)] = text if text.endswith("\n") else text + "\n"
    return texts


def write_splits(
    points: Sequence[ml_collections.ConfigDict], folder: pathlib.Path, cache: dict
) -> list[pathlib.Path]:
    """`split_tables`, one file each under `folder`."""
    paths = []
    for name, text in split_tables(points, cache).items():
        paths.append(folder / f"{name}.txt")
        write_atomic(paths[-1], text)
    return paths


def draw_figures(
    records: Sequence[dict],
    config: ml_collections.ConfigDict,
    spec: specs.TableSpec,
    folder: pathlib.Path,
) -> list[pathlib.Path]:
    """The table's figure (`table.plot`: alpha, curves or gap), one per combination of the row
    keys it does not draw (e.g. one per dataset and K); none for condensation tables."""
    if config.get("track") == "condense" or not records:
        return []
    table = config.get("table") or {}
    kind = specs.figure_kind(config)
    series = table.get("series", "algorithm")
    settings = tuple(table.get("settings") or records[0]["settings"])
    drawn = {series, "protocol.alpha"} if kind == "alpha" else {series}
    facets: dict[tuple, list[dict]] = {}
    for record in records:
        key = tuple(lookup(record, k, None) for k in spec.rows if k not in drawn)
        facets.setdefault(key, []).append(record)
    paths = []
    for values, members in facets.items():
        stem = "_".join([spec.name, kind, *(f"{v}" for v in values)]).replace("/", "-")
        targets = [folder / f"{stem}.{ext}" for ext in ("png", "pdf")]
        if kind == "alpha":
            plots.plot_accuracy_vs_alpha(members, settings, series_key=series, paths=targets)
        elif kind == "curves":
            plots.plot_round_curves(members, settings[:3], series_key=series, paths=targets)
        else:
            plots.plot_best_last_gap(members, settings, series_key=series, paths=targets)
        paths += targets
    return paths


def reproduce(
    name: str,
    config: ml_collections.ConfigDict,
    *,
    quick: bool = False,
    out: str | pathlib.Path | None = None,
    grid: str = "",
    batch_runs: bool = True,
    max_batch: int = 0,
    checkpoint_every: int = 10,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Outputs:
    """Regenerates the table `name` described by `config` end to end; see the module docstring."""
    if quick:
        config = shrink(config)
    override_grid(config, grid)
    folder = pathlib.Path(out or f"runs/reproduce/{name}{'-quick' if quick else ''}")
    ledger, checkpoints = folder / "ledger.jsonl", folder / "checkpoints"
    points = validate.validate_config(config)  # every run, before any data is loaded
    spec = specs.table_spec(config, name)  # and the table and its figure
    log(f"table {name}: {len(points)} runs{' (quick)' if quick else ''}; output in {folder}")

    cache: dict = {}
    describe_data(points, cache, log)
    splits = write_splits(points, folder / "splits", cache)
    if splits:
        log(f"splits: {len(splits)} split statistics tables in {folder / 'splits'}")
    del cache

    records = sweep.run_sweep(
        config,
        ledger=str(ledger),
        checkpoint_dir=checkpoints,
        checkpoint_every=checkpoint_every,
        batch_runs=batch_runs,
        max_batch=max_batch,
        progress=progress,
        log=log,
    )
    log(f"runs: {len(records)} records in {ledger}")

    built = tables.build_table(records, spec, source=str(ledger))
    markdown = render.to_markdown(built)
    table_paths = [folder / "tables" / f"{spec.name}.{ext}" for ext in ("md", "tex")]
    write_atomic(table_paths[0], markdown)
    write_atomic(table_paths[1], render.to_latex(built))
    log(f"table: {table_paths[0]} and {table_paths[1]}")

    figures = draw_figures(records, config, spec, folder / "figures")
    if figures:
        log(f"figures: {', '.join(str(p) for p in figures)}")
    return Outputs(folder, ledger, checkpoints, splits, table_paths, figures, records, markdown)
