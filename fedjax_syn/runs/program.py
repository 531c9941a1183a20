"""One program for every run: 1..R runs on a leading `runs` axis, one compilation, one pass per
round. A single run is a program of one.

Runs that differ only in what they train on (seed, heterogeneity level, other protocol
parameters; `config.DATA_FIELDS`) execute the same computation once their federations are padded
to common sizes, so a 3-seed x 5-alpha sweep is one compilation and one pass per round instead of
fifteen of each.

Why padding keeps every run's numbers: each federation is zero-padded along every axis (more
examples, nodes, edges or shared test items) and padding is always masked (`core.arrays`). Random
draws are unchanged too: with JAX's partitionable threefry (the default), `uniform(key, (n,))`
and `split(key, n)` are prefixes of the same draws at a larger n, and draws over `[n, ...]` are
prefixes along the leading axis, so a padded client shuffles its real examples exactly as before.
What remains is float rounding: XLA may order a batched reduction differently, so a run batched
with others equals its run alone to float tolerance, not bit for bit.

Arrays equal in every run (the official test set, or everything when the program has one run)
are passed once, unbatched (`in_axes` None). The number of clients must agree (it shapes every
run's client keys).

Non-finite updates: every round reports which clients' results are finite ([runs, K] bool,
`engine.round`). The host reads these flags whenever it syncs anyway (an evaluated round, the
end of `advance`), never adding a sync of its own; with `on_nonfinite="stop"` it then raises a
`NonFiniteError` naming the first bad run, client and round before recording anything, so a sweep
saves no checkpoint of the poisoned state; with "drop" it logs one warning per dropped update and
records it in the run's `dropped` list.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fedjax_syn.algorithms import registry
from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.core.errors import NonFiniteError, UserError, check
from fedjax_syn.engine import evaluation, layout, sharding
from fedjax_syn.engine.round import (
    EngineConfig,
    compile_init,
    first_round,
    init_step,
    round_step,
)
from fedjax_syn.runs import config as run_config
from fedjax_syn.runs import layouts
from fedjax_syn.runs.checkpoint import clock, time_spent
from fedjax_syn.runs.ledger import append_record, versions
from fedjax_syn.runs.prepare import Prepared, build_algorithm, prepare
from fedjax_syn.runs.records import MODES, curve_name, curves_of_mode, summarize_curves

OnRound = Callable[[int, list[dict]], None]  # (round, each run's new curve points)
Dropped = list[list[list[int]]]  # per run, the [round, client] of each dropped update

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Stacking runs.


def _pad_to_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.pad(array, [(0, t - s) for s, t in zip(array.shape, shape)])


def stack_federations(feds: Sequence[Federation]) -> tuple[Federation, Federation]:
    """(stacked federation, its vmap in_axes): every leaf zero-padded to the runs' largest shape;
    leaves equal in every run are kept once (axis None), the others stacked on axis 0."""
    structures = {jax.tree.structure(f) for f in feds}
    if len(structures) != 1:
        raise UserError(
            "runs cannot share one program: their federations differ in structure "
            "(dataset, settings or number of classes); run them with batching off"
        )
    stacked, axes = [], []
    for per_run in zip(*(jax.tree.leaves(f) for f in feds)):
        arrays = [np.asarray(a) for a in per_run]
        if len({a.dtype for a in arrays}) != 1 or len({a.ndim for a in arrays}) != 1:
            raise UserError("runs cannot share one program: a data array differs in type or rank")
        shape = tuple(max(dims) for dims in zip(*(a.shape for a in arrays)))
        padded = [_pad_to_shape(a, shape) for a in arrays]
        if all(np.array_equal(padded[0], p) for p in padded[1:]):
            stacked.append(jnp.asarray(padded[0]))
            axes.append(None)
        else:
            stacked.append(jnp.asarray(np.stack(padded)))
            axes.append(0)
    treedef = structures.pop()
    return jax.tree.unflatten(treedef, stacked), jax.tree.unflatten(treedef, axes)


def _fill(tree: Any, value: bool) -> Any:
    return jax.tree.map(lambda _: value, tree)


def _client_specs(fed: Federation) -> Federation:
    """Per leaf: whether it has a clients axis (all but a shared group's inputs and labels)."""
    groups = {
        name: EvalGroup(
            _fill(g.inputs, not g.shared), not g.shared, _fill(g.masks, True), shared=g.shared
        )
        for name, g in fed.eval_groups.items()
    }
    return fed.replace(train=_fill(fed.train, True), eval_groups=groups, client_mask=True)


def shard_stacked(fed: Federation, axes: Federation, mesh: jax.sharding.Mesh) -> Federation:
    """Puts the clients axis (after the runs axis where stacked) on the mesh, replicates the rest."""
    per_client = jax.tree.leaves(_client_specs(fed))
    leaves, treedef = jax.tree.flatten(fed)
    placed = []
    for leaf, axis, has_clients in zip(leaves, jax.tree.leaves(axes, is_leaf=_none), per_client):
        if not has_clients:
            spec = PartitionSpec()
        else:
            spec = PartitionSpec("clients") if axis is None else PartitionSpec(None, "clients")
        placed.append(jax.device_put(leaf, NamedSharding(mesh, spec)))
    return jax.tree.unflatten(treedef, placed)


def _none(x: Any) -> bool:
    return x is None


# ---------------------------------------------------------------------------------------------
# The program.


@dataclasses.dataclass
class State:
    """The runs between rounds: everything the next round and the records depend on.

    `server` and `clients` carry the runs axis and live on device (the next round donates their
    buffers); `key` holds each run's base key (round r uses `fold_in(key, r)`), `round` the last
    finished round, each run's curves one entry per evaluated round, and its dropped updates
    (`on_nonfinite="drop"`). A sweep checkpoints this to resume bit-identically.
    """

    server: Any
    clients: Any
    key: jax.Array  # [runs] base keys
    round: int
    curves: list[dict[str, list[float]]]
    eval_rounds: list[int]
    dropped: Dropped
    elapsed_s: float = 0.0  # wall time spent on these runs by earlier processes
    cpu_s: float | None = 0.0  # their CPU time; None when one of them did not record it


@dataclasses.dataclass
class Program:
    """The runs' stacked data and their compiled start and round."""

    cfgs: list[ml_collections.ConfigDict]
    prepared: list[Prepared]
    fed: Federation
    first_round: int  # 0: the algorithm has a setup round, run by `init`; else 1
    init: Callable[[], tuple[Any, Any, dict]]  # computes (server, clients, round-0 metrics)
    state_shapes: tuple[Any, Any]  # their shapes and shardings, without computing them
    compiled: dict[bool, Callable]  # evaluate -> round
    compile_time: float  # the initialisation and the round programs

    @property
    def num_runs(self) -> int:
        return len(self.cfgs)

    @property
    def last_round(self) -> int:
        """`rounds` rounds in all, counting a setup round 0."""
        return self.cfgs[0].rounds - 1 + self.first_round


def _base_keys(cfgs: Sequence[ml_collections.ConfigDict]) -> jax.Array:
    """[runs] keys, each `jax.random.key(seed)`."""
    data = [jax.random.key_data(jax.random.key(c.seed)) for c in cfgs]
    return jax.random.wrap_key_data(jnp.stack(data))


_fold_all = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


def _over_runs(fn: Callable, in_axes: tuple) -> Callable:
    """`jax.vmap(fn, in_axes)` over the runs axis (the last argument, the runs' keys, always has
    it). A program of one run calls `fn` on that run itself and gives its outputs the axis back:
    a vmap of one is not free, it turns every `lax.cond` into both branches and selects a
    `while_loop`'s whole carry on every iteration."""

    def first_run(tree, axis):
        if axis is None:
            return tree
        if axis == 0:
            return jax.tree.map(lambda leaf: leaf[0], tree)
        return jax.tree.map(
            lambda a, leaf: leaf if a is None else leaf[0], axis, tree, is_leaf=_none
        )

    def call(*args):
        if args[-1].shape[0] != 1:
            return jax.vmap(fn, in_axes=in_axes)(*args)
        out = fn(*(first_run(arg, axis) for arg, axis in zip(args, in_axes)))
        return jax.tree.map(lambda leaf: leaf[None], out)

    return call


def _programs(alg, engine: EngineConfig, axes: Federation) -> tuple[Callable, Callable]:
    """The jitted start (initialisation and any setup round) and round of the stacked runs."""

    @jax.jit
    def init(fed, keys):
        one = lambda f, k: init_step(alg, f, jax.random.fold_in(k, 0), engine)
        return _over_runs(one, (axes, 0))(fed, keys)

    def one_round(server, clients, fed, keys, evaluate):
        step = lambda s, c, f, k: round_step(alg, s, c, f, k, evaluate=evaluate, config=engine)
        return _over_runs(step, (0, 0, axes, 0))(server, clients, fed, keys)

    round_fn = jax.jit(
        one_round, static_argnames=("evaluate",), donate_argnums=(0, 1) if engine.donate else ()
    )
    return init, round_fn


def _placeholder(shapes: Any) -> Any:
    """Arrays of the given shapes (zeros; fixed keys) for timing a round."""

    def one(s):
        if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), s.shape)
        return jnp.zeros(s.shape, s.dtype)

    return jax.tree.map(one, shapes)


def _measured_layout(cfg, alg, engine, fed, axes, keys, num_clients: int) -> Any:
    """The client layout of `cfg`'s program: stored, or timed on rounds of placeholder states."""
    init, _ = _programs(alg, engine, axes)
    server, clients, _ = jax.eval_shape(init, fed, keys)
    key = layout.shape_key(run_config.program_key(cfg), fed, server, clients)

    def round_for(chosen: layout.Layout):
        chunk, vmap_single = chosen
        trial = dataclasses.replace(
            engine, client_chunk=chunk, vmap_single=vmap_single, donate=False
        )
        _, round_fn = _programs(alg, trial, axes)
        state = _placeholder((server, clients))
        return lambda: round_fn(*state, fed, keys, evaluate=False)

    return layouts.choose_layout(key, round_for, num_clients)


def compile_program(
    cfgs: Sequence[ml_collections.ConfigDict],
    prepared: Sequence[Prepared] | None = None,
) -> Program:
    """Prepares every run's data (unless given), stacks it, and compiles the program's start
    (initialisation and any setup round) and its round, with and without evaluation. With
    `client_chunk = layouts.AUTO` the client layout is the fastest measured (stored in
    `layouts.default_path()`)."""
    cfgs = list(cfgs)
    run_config.check_batchable(cfgs)
    prepared = [prepare(c) for c in cfgs] if prepared is None else list(prepared)
    cfg = cfgs[0]
    fed, axes = stack_federations([p.fed for p in prepared])
    if cfg.shard:
        fed = shard_stacked(fed, axes, sharding.client_mesh())
    alg = build_algorithm(cfg, prepared)
    engine = run_config.engine_config(cfg)
    keys = _base_keys(cfgs)
    start = time.perf_counter()
    if cfg.client_chunk == layouts.AUTO:
        num_clients = prepared[0].fed.num_clients
        chunk, vmap_single = _measured_layout(cfg, alg, engine, fed, axes, keys, num_clients)
        engine = dataclasses.replace(engine, client_chunk=chunk, vmap_single=vmap_single)
    init, round_fn = _programs(alg, engine, axes)
    run_init, shapes = compile_init(init, fed, keys)
    # The round that evaluates always; the one that does not only when some rounds skip it.
    needed = (True, False) if cfg.eval_every > 1 else (True,)
    compiled = {
        flag: round_fn.lower(*shapes, fed, keys, evaluate=flag).compile() for flag in needed
    }
    compile_time = time.perf_counter() - start
    return Program(cfgs, prepared, fed, first_round(alg), run_init, shapes, compiled, compile_time)


def initial_state(program: Program, abstract: bool = False) -> State:
    """The state before round 1: freshly initialised server and clients, and round 0 (the
    algorithm's setup round, if it has one) run and recorded. `abstract`: the server and clients
    as shapes only, the template a checkpoint restores into without computing anything."""
    curves: list[dict[str, list[float]]] = [{} for _ in range(program.num_runs)]
    dropped: Dropped = [[] for _ in range(program.num_runs)]
    state = State(None, None, _base_keys(program.cfgs), 0, curves, [], dropped)
    if abstract:
        state.server, state.clients = program.state_shapes
        return state
    state.server, state.clients, metrics = program.init()
    if metrics:
        _screen(program, [(0, metrics.pop("finite"))], state.dropped)
        _record_round(program, state.curves, state.eval_rounds, 0, fetch(metrics))
    return state


def _screen(program: Program, unread: list[tuple[int, jax.Array]], dropped: Dropped) -> None:
    """Reads the finite flags ([runs, K]) of the rounds in `unread`, in order: raises at the first
    non-finite update under on_nonfinite="stop"; else logs and records each dropped update."""
    for r, flags in unread:
        for i, k in np.argwhere(~fetch(flags)).tolist():
            cfg = program.cfgs[i]
            where = (
                f"in run {run_config.run_id(cfg)} ({cfg.dataset}/{cfg.algorithm} seed "
                f"{cfg.seed}), client {k}, round {r}"
            )
            if cfg.on_nonfinite == "stop":
                raise NonFiniteError(
                    f"non-finite update {where}; the run stopped (set on_nonfinite='drop' to "
                    "drop such updates instead)"
                )
            _log.warning("dropped a non-finite update %s", where)
            dropped[i].append([r, k])


def _record_round(program: Program, curves, eval_rounds: list[int], r: int, metrics) -> list[dict]:
    """Appends every run's round-r metrics (host copies) to its curves; returns the new points."""
    settings = ("val", *program.prepared[0].settings)
    points = []
    for i, run_curves in enumerate(curves):
        run = jax.tree.map(lambda leaf, i=i: leaf[i], metrics)
        point = {f"train_{name}": float(v) for name, v in run["train"].items()}
        for mode, counts in run["counts"].items():
            acc = evaluation.accuracies(counts)
            point |= {curve_name(mode, name): acc[name] for name in settings}
        for name, value in point.items():
            run_curves.setdefault(name, []).append(value)
        points.append(point)
    eval_rounds.append(r)
    return points


def advance(program: Program, state: State, until: int, on_round: OnRound | None = None) -> State:
    """Runs rounds state.round + 1 .. until; returns the new state (the old one is donated)."""
    cfg, last = program.cfgs[0], program.last_round
    check(until <= last, f"cannot advance to round {until}: the runs' last round is {last}")
    server, clients = state.server, state.clients
    curves = [{k: list(v) for k, v in c.items()} for c in state.curves]
    eval_rounds = list(state.eval_rounds)
    dropped = [list(d) for d in state.dropped]
    unread: list[tuple[int, jax.Array]] = []  # finite flags not yet screened
    for r in range(state.round + 1, until + 1):
        evaluate = r % cfg.eval_every == 0 or r == last
        server, clients, metrics = program.compiled[evaluate](
            server, clients, program.fed, _fold_all(state.key, r)
        )
        unread.append((r, metrics.pop("finite")))
        if evaluate:
            _screen(program, unread, dropped)
            unread = []
            points = _record_round(program, curves, eval_rounds, r, fetch(metrics))
            if on_round is not None:
                on_round(r, points)
    _screen(program, unread, dropped)
    return dataclasses.replace(
        state,
        server=server,
        clients=clients,
        round=until,
        curves=curves,
        eval_rounds=eval_rounds,
        dropped=dropped,
    )


def fetch(tree: Any) -> Any:
    """Host (numpy) copies of round outputs. In a multi-process run an output split over hosts
    (per-client counts on a global mesh) is gathered from every process first."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def make_records(
    program: Program, state: State, wall_time: float, cpu_time: float | None = None
) -> list[dict]:
    """One ledger record per run; wall, CPU and compile time are the program's, shared equally
    (CPU time: the process's, every thread; None when not measured)."""
    n = program.num_runs
    return [
        make_record(
            cfg,
            prepared,
            curves,
            state.eval_rounds,
            dropped,
            wall_time / n,
            program.compile_time / n,
            runs_in_program=n,
            cpu_time=None if cpu_time is None else cpu_time / n,
        )
        for cfg, prepared, curves, dropped in zip(
            program.cfgs, program.prepared, state.curves, state.dropped
        )
    ]


def make_record(
    cfg: ml_collections.ConfigDict,
    prepared: Prepared,
    curves: dict[str, list[float]],
    eval_rounds: list[int],
    dropped: list[list[int]],
    wall_time: float,
    compile_time: float,
    runs_in_program: int = 1,
    cpu_time: float | None = None,
) -> dict:
    """The ledger record of a finished run (`runs_in_program` > 1: it ran batched with others,
    and its wall, CPU and compile times are its share of the program's; `dropped`: the [round,
    client] of each update left out as non-finite)."""
    summaries = {}
    for mode in MODES:
        mode_curves = curves_of_mode(curves, mode)
        if mode_curves:
            rows = summarize_curves(mode_curves, val_key="val")
            summaries[mode] = {
                which: {k: eval_rounds[v] if k == "round" else _finite(v) for k, v in row.items()}
                for which, row in zip(("best", "last"), rows)
            }
    config = cfg.to_dict()
    return {
        "run_id": run_config.run_id(cfg),
        "track": cfg.track,
        "dataset": cfg.dataset,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "protocol": prepared.protocol,
        "config": config,
        "options": registry.resolved_options(cfg),
        "settings": list(prepared.settings),
        "eval_rounds": eval_rounds,
        "dropped": dropped,
        "curves": {k: [_finite(v) for v in vals] for k, vals in curves.items()},
        **summaries.pop("personalized"),  # "best", "last": the personalised models'
        "modes": summaries,  # the other evaluation modes' {"best", "last"}
        "wall_time_s": wall_time,
        "cpu_time_s": cpu_time,
        "compile_time_s": compile_time,
        "runs_in_program": runs_in_program,
        "versions": versions(),
    }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a setting with no examples (e.g. no missing class) is recorded as null."""
    return None if value is None or np.isnan(value) else float(value)


def run(
    cfgs: Sequence[ml_collections.ConfigDict],
    *,
    ledger: str | None = None,
    on_round: OnRound | None = None,
    prepared: Sequence[Prepared] | None = None,
) -> list[dict]:
    """Runs every config to its last round as one program; returns (and appends) its records."""
    start = clock()
    program = compile_program(cfgs, prepared)
    state = advance(program, initial_state(program), program.last_round, on_round)
    records = make_records(program, state, *time_spent(start))
    if ledger:
        for record in records:
            append_record(ledger, record)
    return records
