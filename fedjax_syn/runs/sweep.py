"""Resumable sweeps: a config's grid expanded into runs, run as few compiled programs as shapes
allow, checkpointed every few rounds, and skipped when the ledger already holds them.

A config may carry `grid` (field -> tuple of values, nested like the config itself, so
{"fedlog": {"beta": (0.1, 1.0)}} sweeps an option of FedLoG) and `variants` (name -> field
values) selected by a grid axis named `variant`; every combination is one run. Runs that differ
only in their data (seed, heterogeneity; `batched.DATA_FIELDS`) are batched into one program,
unless they run one client at a time (`client_chunk`), which batching would undo.
The grouping depends on the grid alone, so a rerun forms the same programs.

Resuming: each program checkpoints its whole state with `RunCheckpointer` (server and client
states, base PRNG keys, round counter, curves, elapsed time) after its first round, every
`checkpoint_every` rounds and after its last round, into `checkpoint_dir/<program id>`. Killed
at any moment, the same command restores the newest intact step and continues with the same
compiled program, the same inputs and round keys `fold_in(key, r)`, so the final metrics are
bit-identical to an uninterrupted run. A program's checkpoints are deleted once its records are
in the ledger; a program whose runs are all in the ledger is skipped (by `run_id`).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import math
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fedjax_syn import batched, condense_experiment, experiment, results, tables
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.engine.checkpoint import RunCheckpointer

SWEEP_FIELDS = ("grid", "table", "variants")  # describe a sweep, not a run: dropped from runs
FIGURE_FIELDS = ("plot", "series")  # fields of `table` that choose the figure, not the table


# ---------------------------------------------------------------------------------------------
# Grid expansion.


def set_field(cfg: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """cfg.a.b = value for dotted = "a.b". The top-level field must exist; nested option groups
    (e.g. `fedlog`, empty by default) may gain keys, which their algorithm validates."""
    parts = dotted.split(".")
    node = cfg
    for depth, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            where = ".".join(parts[: depth + 1])
            raise UserError(f"grid field {dotted!r}: {where!r} is not a group of options")
        node = node[part]
    if len(parts) == 1 and parts[0] not in cfg:
        raise UserError(f"grid field {dotted!r} is not a config field")
    with cfg.unlocked():
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise UserError(f"grid field {dotted!r} cannot take {value!r}: {e}") from None


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of a nested dict's leaves: {"fedlog": {"beta": x}} -> fedlog.beta."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def grid_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """One config per point of `config.grid`, in product order (last axis fastest), without the
    sweep-only fields; the config itself (minus those fields) when there is no grid.

    Grid axes mirror the config: {"seed": (0, 1), "fedlog": {"beta": (0.1, 1.0)}} sweeps seed
    and fedlog.beta. A `variant` axis names entries of `config.variants`, each a nested dict of
    field values; the point records the name in its `variant` field.
    """
    axes = _leaves(config.get("grid") or {})
    variants = config.get("variants") or {}
    for name, values in axes:
        check(
            isinstance(values, (list, tuple)) and len(values) > 0,
            f"grid axis {name!r} must be a non-empty list, got {values!r}",
        )
    points = []
    for values in itertools.product(*(v for _, v in axes)):
        point = config.copy_and_resolve_references()
        with point.unlocked():
            for field in SWEEP_FIELDS:
                if field in point:
                    del point[field]
        for (name, _), value in zip(axes, values):
            if name == "variant":
                check(
                    value in variants,
                    f"variant {value!r} is not defined; variants: {', '.join(variants) or 'none'}",
                )
                with point.unlocked():
                    point["variant"] = value
                for field, v in _leaves(variants[value]):
                    set_field(point, field, v)
            else:
                set_field(point, name, value)
        points.append(point)
    return points


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def parse_grid_override(text: str) -> dict[str, list]:
    """'algorithm=fedavg,fedprox;seed=0,1,2' -> {'algorithm': [...], 'seed': [0, 1, 2]}.

    Values are Python literals (bare words are strings); keys may be dotted (fedlog.beta=0.1,1).
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise UserError(f"bad --grid entry {part!r}; expected key=v1,v2")
        key, values = part.split("=", 1)
        out[key.strip()] = [_literal(v.strip()) for v in values.split(",")]
    return out


def override_grid(config: ml_collections.ConfigDict, text: str) -> None:
    """Sets or replaces the grid axes given as `parse_grid_override` text, in place."""
    overrides = parse_grid_override(text)
    if not overrides:
        return
    with config.unlocked():
        if not config.get("grid"):
            config.grid = ml_collections.ConfigDict()
        for dotted, values in overrides.items():
            node = config.grid
            *parents, last = dotted.split(".")
            for part in parents:
                if part not in node:
                    node[part] = ml_collections.ConfigDict()
                node = node[part]
                check(
                    isinstance(node, ml_collections.ConfigDict),
                    f"--grid key {dotted!r}: {part!r} is a grid axis, not a group of options",
                )
            node[last] = tuple(values)


def narrow_grid(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Narrows each grid axis that an override sets to that one value, in place.

    `overrides` are the fields set on the command line (dotted, as `--config.fedlog.beta=0.1`).
    A grid point sets every axis field, so without this `--config.algorithm=fedprox` would be
    overwritten at every point of a grid that sweeps `algorithm`, and silently ignored.
    """
    axes = dict(_leaves(config.get("grid") or {}))
    for field, value in overrides.items():
        if field not in axes:
            continue
        node = config.grid
        *parents, last = field.split(".")
        for part in parents:
            node = node[part]
        with config.unlocked():
            node[last] = (value,)


def apply_command_line(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any], grid: str
) -> None:
    """The runs a command line asks for, in place: `--config.FIELD` overrides narrow the grid
    axes they set (`narrow_grid`), then `--grid` replaces axes (`override_grid`)."""
    both = sorted(set(overrides) & set(parse_grid_override(grid)))
    if both:
        raise UserError(f"--config.{both[0]} and --grid both set {both[0]}; give one of them")
    narrow_grid(config, overrides)
    override_grid(config, grid)


def run_id(cfg: ml_collections.ConfigDict) -> str:
    """The ledger id of a run, exactly as its record will carry it."""
    if cfg.get("track") == "condense":
        return results.run_id(cfg.to_dict())
    return experiment.run_id(cfg)


# ---------------------------------------------------------------------------------------------
# Planning: runs -> programs.


@dataclasses.dataclass(frozen=True)
class Job:
    """One compiled program: a single run, or several batched runs."""

    configs: tuple[ml_collections.ConfigDict, ...]
    run_ids: tuple[str, ...]
    batched: bool

    @property
    def name(self) -> str:
        """Checkpoint folder name: the run id, or a digest of the batched run ids."""
        if not self.batched:
            return self.run_ids[0]
        digest = hashlib.sha256(",".join(self.run_ids).encode()).hexdigest()[:16]
        return f"batch-{digest}"

    @property
    def condense(self) -> bool:
        return self.configs[0].get("track") == "condense"

    @property
    def steps(self) -> int:
        """Rounds of a federated program; iterations of a condensation run."""
        cfg = self.configs[0]
        return cfg.iterations if self.condense else cfg.rounds


def _batchable(cfg: ml_collections.ConfigDict) -> bool:
    """Federated runs batch, except those that run one client (chunk) at a time: vmapped over
    runs, each chunk's local epoch would run as many steps as the busiest run's, on graphs padded
    to the largest run's (Computers K = 10, 3 seeds: 1.8x the time of the runs one by one)."""
    return cfg.get("track") in ("vision", "graph") and not cfg.get("client_chunk")


def plan(
    points: Sequence[ml_collections.ConfigDict], batch_runs: bool = True, max_batch: int = 0
) -> list[Job]:
    """The programs that run `points`: batched groups (when asked and possible) or single runs."""
    ids = [run_id(p) for p in points]
    check(len(set(ids)) == len(ids), "the grid yields the same run twice; remove duplicate values")
    jobs = []
    batchable = [i for i, p in enumerate(points) if batch_runs and _batchable(p)]
    single = [i for i in range(len(points)) if i not in set(batchable)]
    groups = batched.group_runs([points[i] for i in batchable], max_batch)
    for group in groups:
        members = [batchable[i] for i in group]
        if len(members) == 1:
            single.append(members[0])
            continue
        jobs.append(Job(tuple(points[i] for i in members), tuple(ids[i] for i in members), True))
    for i in sorted(single):
        jobs.append(Job((points[i],), (ids[i],), False))
    order = {rid: k for k, rid in enumerate(ids)}
    return sorted(jobs, key=lambda job: order[job.run_ids[0]])


# ---------------------------------------------------------------------------------------------
# Checkpointing a run state (experiment.RunState or batched.BatchedState).


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _host_copy(leaf: Any) -> Any:
    """A host copy, so that the next round may donate (invalidate) the device buffer."""
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf  # multi-process: orbax saves the shards; the save completes before we go on
    return np.array(leaf)


def _template(leaf: Any) -> Any:
    return jax.random.key_data(leaf) if _is_key(leaf) else leaf


def _rewrap(restored: Any, template: Any) -> Any:
    if _is_key(template):
        return jax.random.wrap_key_data(restored, impl=jax.random.key_impl(template))
    return restored


def _arrays(state: Any) -> dict:
    return {"server": state.server, "clients": state.clients, "key": state.key}


def _json_curves(curves: Any) -> Any:
    """NaN (a setting without examples) -> None, as in the ledger."""
    if isinstance(curves, dict):
        return {k: _json_curves(v) for k, v in curves.items()}
    if isinstance(curves, list):
        return [_json_curves(v) for v in curves]
    return None if isinstance(curves, float) and math.isnan(curves) else curves


def _float_curves(curves: Any) -> Any:
    if isinstance(curves, dict):
        return {k: _float_curves(v) for k, v in curves.items()}
    if isinstance(curves, list):
        return [_float_curves(v) for v in curves]
    return float("nan") if curves is None else curves


def save_state(ckpt: RunCheckpointer, state: Any, elapsed_s: float) -> None:
    """Writes `state` as step `state.round` (returns when it is on disk)."""
    meta = {
        "round": state.round,
        "curves": _json_curves(state.curves),
        "eval_rounds": list(state.eval_rounds),
        "elapsed_s": elapsed_s,
    }
    ckpt.save(state.round, jax.tree.map(_host_copy, _arrays(state)), meta)


def restore_state(ckpt: RunCheckpointer, template: Any) -> Any | None:
    """The newest intact checkpointed state shaped like `template`, or None when there is none."""
    arrays = _arrays(template)
    found = ckpt.restore_latest(jax.tree.map(_template, arrays))
    if found is None:
        return None
    step, restored, meta = found
    restored = jax.tree.map(_rewrap, restored, arrays)
    check(meta["round"] == step, f"checkpoint step {step} holds round {meta['round']}")
    return dataclasses.replace(
        template,
        server=restored["server"],
        clients=restored["clients"],
        key=restored["key"],
        round=step,
        curves=_float_curves(meta["curves"]),
        eval_rounds=list(meta["eval_rounds"]),
        elapsed_s=float(meta["elapsed_s"]),
    )


# ---------------------------------------------------------------------------------------------
# Running.


@dataclasses.dataclass(frozen=True)
class _Engine:
    """The functions that compile, start, advance and record a job (single or batched)."""

    compile: Callable[[Job], Any]
    initial_state: Callable[[Any], Any]
    last_round: Callable[[Any], int]
    advance: Callable[..., Any]
    records: Callable[[Any, Any, float], list[dict]]


_SINGLE = _Engine(
    compile=lambda job: experiment.compile_run(job.configs[0]),
    initial_state=experiment.initial_state,
    last_round=experiment.last_round,
    advance=lambda program, state, until, on_round: experiment.advance(
        program, state, until, (lambda r, m: on_round(r, [m])) if on_round else None
    ),
    records=lambda program, state, wall: [
        experiment.make_record(
            program.cfg,
            program.prepared,
            state.curves,
            state.eval_rounds,
            wall,
            program.compile_time,
        )
    ],
)
_BATCHED = _Engine(
    compile=lambda job: batched.compile_batch(job.configs),
    initial_state=batched.initial_state,
    last_round=batched.last_round,
    advance=batched.advance,
    records=batched.make_records,
)


def _checkpoint_rounds(rounds: int, every: int) -> list[int]:
    """Rounds after which to checkpoint: the first, every `every`-th and the last (none when
    every = 0, or no round after a setup round 0). The first round follows compilation and any
    setup round (FedLoG's pretraining takes most of a run), so a run killed before round `every`
    keeps them."""
    if every <= 0 or rounds < 1:
        return []
    return sorted({1, *range(every, rounds + 1, every), rounds})


def run_job(
    job: Job,
    *,
    ledger: str | None,
    checkpoint_dir: str | pathlib.Path | None,
    checkpoint_every: int = 10,
    on_round: Callable[[int, list[dict]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Runs (or resumes) one program to its last round; appends its records not yet in the
    ledger; deletes its checkpoints; returns its records. A condensation run has no rounds to
    checkpoint: it runs whole."""
    if job.condense:
        step = (lambda i, loss: on_round(i + 1, [])) if on_round else None
        record = condense_experiment.run(job.configs[0], on_iteration=step)
        if ledger and jax.process_index() == 0:
            results.append_record(ledger, record)
        return [record]
    engine = _BATCHED if job.batched else _SINGLE
    start = time.perf_counter()
    program = engine.compile(job)
    directory = pathlib.Path(checkpoint_dir) / job.name if checkpoint_dir else None
    ckpt = RunCheckpointer(directory) if directory and checkpoint_every > 0 else None
    try:
        # Restored into the states' shapes: a resumed run never recomputes its initial states.
        state = restore_state(ckpt, engine.initial_state(program, abstract=True)) if ckpt else None
        if state is not None:
            log(f"resumed {job.name} from round {state.round} ({directory})")
        else:
            state = engine.initial_state(program)
        last = engine.last_round(program)
        for stop in _checkpoint_rounds(last, checkpoint_every) or [last]:
            if stop <= state.round:
                continue
            state = engine.advance(program, state, stop, on_round)
            if ckpt is not None:
                save_state(ckpt, state, state.elapsed_s + time.perf_counter() - start)
    finally:
        if ckpt is not None:
            ckpt.close()
    records = engine.records(program, state, state.elapsed_s + time.perf_counter() - start)
    if ledger and jax.process_index() == 0:
        done = _ledger_ids(ledger)
        for record in records:
            if record["run_id"] not in done:
                results.append_record(ledger, record)
    if directory is not None and directory.exists() and jax.process_index() == 0:
        shutil.rmtree(directory)
    return records


def _ledger_ids(ledger: str | pathlib.Path) -> set[str]:
    if not pathlib.Path(ledger).exists():
        return set()
    return {r.get("run_id") for r in results.read_ledger(ledger)}


def summary_line(record: dict) -> str:
    """One line per finished run: what ran, its best-validation and last-round numbers."""
    cfg = record["config"]
    if record.get("track") == "condense":
        numbers = " ".join(
            f"{k}={v:.3f}" for k, v in record["metrics"].items() if isinstance(v, float)
        )
        return (
            f"{record['dataset']} {record['method']} ipc={record['ipc']} seed={record['seed']} | "
            f"{numbers} | {record['wall_time_s']:.1f}s"
        )
    what = [record["dataset"], record["algorithm"], f"seed={record['seed']}"]
    if record.get("track") == "vision":
        what.append(f"alpha={cfg.get('alpha')}")
    else:
        what += [f"K={cfg.get('num_clients')}", str(cfg.get("setting"))]
    if cfg.get("variant"):
        what.append(f"variant={cfg['variant']}")

    def numbers(row: dict) -> str:
        return " ".join(
            f"{k}={v:.3f}" for k, v in row.items() if k not in ("round", "val") and v is not None
        )

    best, last = record["best"], record["last"]
    return (
        f"{' '.join(what)} | best r{best['round']}: {numbers(best)} | "
        f"last r{last['round']}: {numbers(last)} | {record['wall_time_s']:.1f}s"
    )


def run_sweep(
    config: ml_collections.ConfigDict,
    *,
    ledger: str,
    checkpoint_dir: str | pathlib.Path | None = "runs/checkpoints",
    checkpoint_every: int = 10,
    batch_runs: bool = True,
    max_batch: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Runs every point of the config's grid not yet in `ledger`; returns the records of all
    points (earlier ones read from the ledger), in grid order."""
    log = log or (lambda line: tqdm.write(line))
    if jax.process_index() != 0:  # multi-process: every process computes, the first one reports
        progress, log = False, lambda line: None
    points = grid_configs(config)
    jobs = plan(points, batch_runs, max_batch)
    done = _ledger_ids(ledger)
    pending = [job for job in jobs if not set(job.run_ids) <= done]
    skipped = len(points) - sum(len(job.run_ids) for job in pending)
    if skipped:
        log(f"skipping {skipped} of {len(points)} runs already in {ledger}")
    if checkpoint_dir and jax.process_index() == 0:
        running = {job.name for job in pending}
        for job in jobs:  # killed after its records were appended, before its cleanup
            leftover = pathlib.Path(checkpoint_dir) / job.name
            if job.name not in running and leftover.exists():
                shutil.rmtree(leftover)
    fresh: dict[str, dict] = {}
    with tqdm(
        total=len(points), initial=skipped, desc="runs", unit="run", disable=not progress
    ) as grid_bar:
        for job in pending:
            first = job.configs[0]
            label = f"{first.method} ipc={first.ipc}" if job.condense else first.algorithm
            if job.batched:
                label += f" x{len(job.configs)} [{batched.describe(job.configs)}]"
            unit = "iteration" if job.condense else "round"
            with tqdm(
                total=job.steps, desc=label, unit=unit, leave=False, disable=not progress
            ) as bar:

                def on_round(r: int, metrics: list[dict], bar=bar) -> None:
                    bar.update(r - bar.n)
                    val = [m["val"] for m in metrics if m["val"] == m["val"]]
                    if val:
                        bar.set_postfix(val=f"{np.mean(val):.3f}")

                records = run_job(
                    job,
                    ledger=ledger,
                    checkpoint_dir=checkpoint_dir,
                    checkpoint_every=checkpoint_every,
                    on_round=on_round if progress else None,
                    log=log,
                )
            for record in records:
                fresh[record["run_id"]] = record
                log(summary_line(record))
            grid_bar.update(len(job.run_ids))
    stored = {}
    if skipped:
        stored = {r["run_id"]: r for r in results.read_ledger(ledger)}
    ids = [run_id(p) for p in points]
    return [fresh.get(rid) or stored[rid] for rid in ids]


def table_spec(config: ml_collections.ConfigDict, name: str = "table") -> tables.TableSpec:
    """The table a sweep config names in its `table` field (spec fields of
    `tables.spec_from_dict`, plus the figure fields `plot` and `series`), with defaults from its
    track and grid seeds."""
    table = dict((config.get("table") or ml_collections.ConfigDict()).to_dict())
    for field in FIGURE_FIELDS:
        table.pop(field, None)
    track = config.get("track", "vision")
    condense = track == "condense"
    table.setdefault("name", name)
    table.setdefault("kind", "condense" if condense else "accuracy")
    if not condense:
        table.setdefault("rows", ["dataset", "algorithm"])
        table.setdefault(
            "settings",
            list(results.VISION_SETTINGS if track == "vision" else results.GRAPH_SETTINGS),
        )
    grid = config.get("grid") or {}
    table.setdefault("seeds", list(grid["seed"]) if "seed" in grid else [config.get("seed", 0)])
    return tables.spec_from_dict(table)
