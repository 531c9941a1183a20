"""The one command line: run a config's grid, reproduce a paper table, or render tables and
figures from a results ledger.

    python -m experiments.main                                   # the main job (digits table)
    python -m experiments.main --config=experiments/configs/cora.py --config.algorithm=fedavg
    python -m experiments.main --config=experiments/configs/graph_seen.py --grid='dataset=cora'
    python -m experiments.main --mode=reproduce --table=digits_table --quick
    python -m experiments.main --mode=tables --ledger=results/graph/ledger.jsonl --spec=graph
    python -m experiments.main --mode=plots --ledger=runs/ledger.jsonl --plot=alpha
    python -m experiments.main --mode=plots --plot=verdict --ledger=results/comparison/ledger.jsonl \
        --spec=experiments/configs/comparison.py --out=results/comparison
    python -m experiments.main --mode=splits --config=experiments/configs/cora.py
    python -m experiments.main --mode=plan --config=experiments/configs/comparison.py \
        --ledger=results/comparison/ledger.jsonl
    python -m experiments.main --mode=privacy --config=experiments/configs/privacy.py

Modes:
  run        every run of the config's grid not yet in --ledger, resumably (runs that differ
             only in their data share one program; each program checkpoints every
             --checkpoint_every rounds and a rerun after a crash continues from there), then the
             table the config names;
  reproduce  --table (a config name or file) from nothing: data, split statistics, runs, table
             and figures under --out;
  tables     tables from --ledger (--spec: a named spec, inline JSON, a JSON file or a
             sweep config file);
  plots      the local-overfitting figures from --ledger, or (--plot=verdict) the judged rows
             of a --spec table against the best other row of each complete cell;
  splits     the per-client, per-class statistics of every split the config's grid trains on;
  plan       where the config's sweep stands, without running anything: per group of runs, how
             many are in --ledger, running in another process, checkpointed (at which round)
             or pending, their wall time so far and an estimate of the rest from the ledger's
             finished runs (fedjax_syn/runs/progress.py);
  privacy    a privacy config's runs at every DP noise level, trained and audited (what their
             uploads give away), appended to --ledger (default results/privacy/ledger.jsonl),
             then privacy.md and privacy.png under --out (default results/privacy).

A field the config's grid sweeps, set with --config.FIELD=v, narrows that axis to v (e.g.
--config.algorithm=fedprox runs FedProx only); --grid replaces axes. Every run is validated before
the first one starts. Several hosts (docs/scale.md): start the same command on every host with
--distributed and --config.shard=True. User errors print one line `error: ...` and exit 2.
"""

import dataclasses
import json
import pathlib

import jax
import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, configs
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.data.graph_arrays import GRAPH_SETTINGS
from fedjax_syn.data.vision_arrays import VISION_SETTINGS
from fedjax_syn.report import render, specs, tables
from fedjax_syn.runs import grid, progress, sweep, validate
from fedjax_syn.runs.ledger import read_ledger, write_atomic
from fedjax_syn.runs.records import select

MODES = ("run", "reproduce", "tables", "plots", "splits", "plan", "privacy")
_PRIVACY_OUT = "results/privacy"
_DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "digits_table.py")

_MODE = flags.DEFINE_enum("mode", "run", MODES, "What to do (see the module docstring).")
try:  # the default config is parsed here, with any --config.FIELD overrides on the command line
    _CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file.")
except (AttributeError, KeyError) as e:
    cli.fail_bad_override(e)
_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_GRID = flags.DEFINE_string(
    "grid", "", "Replace grid axes, e.g. 'algorithm=fedavg,fedprox;seed=0,1,2;fedlog.beta=0.1,1'."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Output folder (reproduce: runs/reproduce/TABLE; tables: print only; plots: figures; "
    "privacy: results/privacy).",
)
# run, reproduce and plan
_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", "runs/checkpoints", "run, plan: where programs checkpoint their state."
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every",
    10,
    "Checkpoint every this many rounds or condensation iterations (0: never; a checkpoint "
    "already there still resumes).",
)
_BATCH_RUNS = flags.DEFINE_bool(
    "batch_runs", True, "Run runs that differ only in data (seed, alpha, ...) as one program."
)
_MAX_BATCH = flags.DEFINE_integer("max_batch", 0, "At most this many runs per program (0: all).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-process run (TPU pod slice, several GPU hosts): call jax.distributed.initialize() "
    "first; the cluster is auto-detected unless the three flags below are given.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_TABLE = flags.DEFINE_string("table", None, "reproduce: a config name or a config file.")
_QUICK = flags.DEFINE_bool("quick", False, "reproduce: shrink rounds, seeds and inner loops.")
# tables
_SPEC = flags.DEFINE_string(
    "spec",
    "vision",
    f"tables, and plots with --plot=verdict: named spec ({', '.join(specs.NAMED_SPECS)}), JSON, "
    "a JSON file, or a sweep config file (.py) whose table to draw.",
)
_FORMAT = flags.DEFINE_enum("format", "md", ["md", "latex", "both"], "tables: output format(s).")
_SEEDS = flags.DEFINE_list(
    "seeds", None, "tables: expected seeds (e.g. 0,1,2); restricts the query, reports missing runs."
)
# plots
_PLOT = flags.DEFINE_enum(
    "plot",
    "alpha",
    ["alpha", "curves", "gap", "verdict"],
    "plots: accuracy vs alpha, per-round curves, best-validation minus last-round accuracy, or "
    "the verdict of the --spec table's judged rows (its verdict_for) in each complete cell.",
)
_TRACK = flags.DEFINE_enum("track", "vision", ["vision", "graph"], "plots: runs and settings.")
_FILTERS = flags.DEFINE_string(
    "filters", "{}", 'plots: ledger filters as JSON, dotted keys allowed: {"dataset": "digits"}.'
)
_SETTINGS = flags.DEFINE_list(
    "settings",
    None,
    "plots: settings to draw (default: the track's; for --plot=curves its first three).",
)
_METRIC = flags.DEFINE_enum(
    "metric", "best", ["best", "last"], "plots: round of --plot=alpha and --plot=verdict."
)
_NAME = flags.DEFINE_string(
    "name", None, "plots: file name stem (default: <track>_<plot>; <spec name>_verdict)."
)


def _command_line_config() -> tuple[ml_collections.ConfigDict, list[ml_collections.ConfigDict]]:
    """The config as the command line narrows it, and its runs, every one validated."""
    config = _CONFIG.value
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    grid.apply_command_line(config, overrides, _GRID.value)
    return config, validate.validate_config(config)


def run_mode() -> None:
    if _DISTRIBUTED.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    config, _ = _command_line_config()
    name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem
    spec = specs.table_spec(config, name)  # checked before the runs, not after them
    records = sweep.run_sweep(
        config,
        ledger=_LEDGER.value,
        checkpoint_dir=_CHECKPOINT_DIR.value,
        checkpoint_every=_CHECKPOINT_EVERY.value,
        batch_runs=_BATCH_RUNS.value,
        max_batch=_MAX_BATCH.value,
        progress=_PROGRESS.value,
    )
    table = tables.build_table(records, spec, source=_LEDGER.value)
    if jax.process_index() == 0:
        print(render.to_markdown(table))
        print(f"ledger: {_LEDGER.value}")


# The modes that need matplotlib (reproduce, plots, splits) or scipy (privacy) import their
# modules when they run: every other command, and every one-line error, starts ~2 s sooner.


def reproduce_mode() -> None:
    from fedjax_syn.report import reproduce

    check(_TABLE.value, f"--mode=reproduce needs --table: one of {', '.join(configs.available())}")
    name, config = configs.load(_TABLE.value)
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


def tables_mode() -> None:
    spec = configs.table_spec(_SPEC.value)
    if _SEEDS.value is not None:
        try:
            seeds = tuple(int(s) for s in _SEEDS.value)
        except ValueError:
            raise UserError(f"--seeds must be integers, got {_SEEDS.value}") from None
        spec = dataclasses.replace(spec, seeds=seeds)
    table = tables.build_table(read_ledger(_LEDGER.value), spec, source=_LEDGER.value)
    rendered = {}
    if _FORMAT.value in ("md", "both"):
        rendered["md"] = render.to_markdown(table)
    if _FORMAT.value in ("latex", "both"):
        rendered["tex"] = render.to_latex(table)
    for text in rendered.values():
        print(text)
    for suffix, text in rendered.items() if _OUT.value else ():
        path = pathlib.Path(_OUT.value) / f"{spec.name}.{suffix}"
        write_atomic(path, text)
        print(f"wrote {path}")


def plots_mode() -> None:
    from fedjax_syn.report import plots

    if _PLOT.value == "verdict":
        spec = configs.table_spec(_SPEC.value)
        table = tables.build_table(read_ledger(_LEDGER.value), spec, source=_LEDGER.value)
        paths = _figure_paths(_NAME.value or f"{spec.name}_verdict")
        plots.plot_verdict(table, metric=_METRIC.value, paths=paths)
        for path in paths:
            print(f"wrote {path}")
        return
    try:
        filters = json.loads(_FILTERS.value)
    except json.JSONDecodeError as e:
        raise UserError(f"--filters {_FILTERS.value!r} is not valid JSON: {e}") from None
    check(isinstance(filters, dict), f"--filters must be a JSON object, got {_FILTERS.value}")
    default = VISION_SETTINGS if _TRACK.value == "vision" else GRAPH_SETTINGS
    settings = tuple(_SETTINGS.value or default)
    paths = _figure_paths(_NAME.value or f"{_TRACK.value}_{_PLOT.value}")
    records = select(read_ledger(_LEDGER.value), **{"track": _TRACK.value, **filters})
    if _PLOT.value == "alpha":
        plots.plot_accuracy_vs_alpha(records, settings, metric=_METRIC.value, paths=paths)
    elif _PLOT.value == "curves":
        plots.plot_round_curves(records, settings if _SETTINGS.value else settings[:3], paths=paths)
    else:
        plots.plot_best_last_gap(records, settings, paths=paths)
    for path in paths:
        print(f"wrote {path}")


def _figure_paths(stem: str) -> list[pathlib.Path]:
    return [pathlib.Path(_OUT.value or "figures") / f"{stem}.{ext}" for ext in ("png", "pdf")]


def splits_mode() -> None:
    from fedjax_syn.report import reproduce

    _, points = _command_line_config()
    for name, text in reproduce.split_tables(points, cache={}).items():
        print(f"{name}\n{text}")


def plan_mode() -> None:
    config, points = _command_line_config()
    jobs = sweep.plan(points, _BATCH_RUNS.value, _MAX_BATCH.value)
    path = pathlib.Path(_LEDGER.value)
    records = read_ledger(path) if path.exists() else []
    done = {record.get("run_id") for record in records}
    states = progress.job_progress(jobs, done, _CHECKPOINT_DIR.value, progress.held_flocks())
    print(progress.report(config, states, records))


def privacy_mode() -> None:
    from fedjax_syn.privacy import benchmark

    check(
        not _GRID.value,
        f"--mode=privacy takes no --grid (got {_GRID.value!r}): a privacy config holds one grid "
        "per benchmark; edit them in the config",
    )

    ledger = _LEDGER.value if flags.FLAGS["ledger"].present else f"{_PRIVACY_OUT}/ledger.jsonl"
    for path in benchmark.run_benchmark(_CONFIG.value, ledger, _OUT.value or _PRIVACY_OUT):
        print(f"wrote {path}")
    print(f"ledger: {ledger}")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    check(_MAX_BATCH.value >= 0, f"--max_batch must be >= 0 (0: no limit), got {_MAX_BATCH.value}")
    every = _CHECKPOINT_EVERY.value
    check(every >= 0, f"--checkpoint_every must be >= 0 (0: never), got {every}")
    modes = {
        "run": run_mode,
        "reproduce": reproduce_mode,
        "tables": tables_mode,
        "plots": plots_mode,
        "splits": splits_mode,
        "plan": plan_mode,
        "privacy": privacy_mode,
    }
    modes[_MODE.value]()


if __name__ == "__main__":
    cli.run(main)
