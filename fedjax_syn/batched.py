"""Several independent runs as one compiled program: a leading `runs` axis, vmapped over the round.

Runs that differ only in what they train on (seed, heterogeneity level, other protocol
parameters) execute the same computation on arrays of the same shapes once their federations
are padded to common sizes. Stacking them on a leading runs axis and `vmap`ping the round makes a
3-seed x 5-alpha sweep one compilation and one pass per round instead of fifteen of each.

Why padding keeps every run's numbers: each federation is zero-padded along every axis (more
examples, nodes, edges or shared test items) and padding is always masked (`data.arrays`). Random
draws are unchanged too: with JAX's partitionable threefry (the default), `uniform(key, (n,))`
and `split(key, n)` are prefixes of the same draws at a larger n, and draws over `[n, ...]` are
prefixes along the leading axis, so a padded client shuffles its real examples exactly as before.
What remains is float rounding: XLA may order a batched reduction differently, so a batched run
equals its single run to float tolerance, not bit for bit. A run's numbers therefore depend only
on its config up to rounding, whichever runs it was batched with.

Arrays equal in every run (e.g. the official test set) are passed once, unbatched (`in_axes`
None). The number of clients must agree (it shapes every run's client keys).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fedjax_syn import experiment, results
from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.engine import sharding
from fedjax_syn.engine.round import compile_init, first_round, init_step, round_step

# Config fields that only change the data a run trains on, never the shapes of its program once
# padded: runs differing only in these can share one compiled program.
DATA_FIELDS = (
    "seed",
    "alpha",
    "partition",
    "classes_per_part",
    "min_class_count",
    "missing_frac",
    "partitioner",
    "setting",
    "unseen_frac",
    "graph_missing_frac",
)


def program_key(cfg: ml_collections.ConfigDict) -> str:
    """Runs with equal keys can be batched: their configs agree outside `DATA_FIELDS`."""
    config = cfg.to_dict()
    return results.run_id({k: v for k, v in config.items() if k not in DATA_FIELDS})


def group_runs(configs: Sequence[ml_collections.ConfigDict], max_runs: int = 0) -> list[list[int]]:
    """Indices of `configs` grouped by `program_key` in first-seen order, at most `max_runs` per
    group (0: no limit). The grouping depends on the configs only, so it is stable across resumes.
    """
    check(max_runs >= 0, f"max_runs must be >= 0, got {max_runs}")
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(program_key(cfg), []).append(i)
    out = []
    for members in groups.values():
        size = max_runs or len(members)
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return out


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
    leaves = [jax.tree.leaves(f) for f in feds]
    stacked, axes = [], []
    for per_run in zip(*leaves):
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
    """Puts the clients axis (after the runs axis where stacked) on the mesh; the rest replicated."""
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


@dataclasses.dataclass
class BatchedState:
    """`experiment.RunState` with a leading runs axis on the arrays and one curve dict per run."""

    server: Any
    clients: Any
    key: jax.Array  # [runs] base keys
    round: int
    curves: list[dict[str, list[float]]]
    eval_rounds: list[int]
    elapsed_s: float = 0.0


@dataclasses.dataclass
class BatchedProgram:
    """Several runs' stacked data and their one compiled, vmapped round."""

    cfgs: list[ml_collections.ConfigDict]
    prepared: list[experiment.Prepared]
    fed: Federation
    first_round: int  # 0: the algorithm has a setup round, run by `init`; else 1
    init: Callable[[], tuple[Any, Any, dict]]  # computes (server, clients, round-0 metrics)
    state_shapes: tuple[Any, Any]  # their shapes and shardings, without computing them
    compiled: dict[bool, Callable]
    compile_time: float  # the initialisation and the round programs

    @property
    def num_runs(self) -> int:
        return len(self.cfgs)


def _check_batchable(cfgs: Sequence[ml_collections.ConfigDict]) -> None:
    check(len(cfgs) >= 1, "a batched program needs at least one run")
    keys = {program_key(c) for c in cfgs}
    if len(keys) > 1:
        first = cfgs[0].to_dict()
        fields = sorted(
            k
            for c in cfgs[1:]
            for k, v in c.to_dict().items()
            if k not in DATA_FIELDS and first.get(k) != v
        )
        raise UserError(
            f"runs cannot share one program: they differ in {sorted(set(fields))}; only "
            f"{', '.join(DATA_FIELDS)} may differ"
        )
    cfg = cfgs[0]
    check(cfg.rounds >= 1, f"rounds must be >= 1, got {cfg.rounds}")
    check(cfg.eval_every >= 1, f"eval_every must be >= 1, got {cfg.eval_every}")


def _base_keys(cfgs: Sequence[ml_collections.ConfigDict]) -> jax.Array:
    """[runs] keys, each exactly `jax.random.key(seed)` as a single run makes it."""
    data = [jax.random.key_data(jax.random.key(c.seed)) for c in cfgs]
    return jax.random.wrap_key_data(jnp.stack(data))


def compile_batch(
    cfgs: Sequence[ml_collections.ConfigDict],
    prepared: Sequence[experiment.Prepared] | None = None,
) -> BatchedProgram:
    """Prepares every run's data (unless given), stacks it and compiles one vmapped round."""
    cfgs = list(cfgs)
    _check_batchable(cfgs)
    prepared = [experiment.prepare(c) for c in cfgs] if prepared is None else list(prepared)
    cfg = cfgs[0]
    fed, axes = stack_federations([p.fed for p in prepared])
    if cfg.shard:
        fed = shard_stacked(fed, axes, sharding.client_mesh())
    alg = experiment.build_algorithm(cfg, prepared)
    engine = experiment.engine_config(cfg)

    def one_round(server, clients, fed, keys, evaluate):
        step = lambda s, c, f, k: round_step(alg, s, c, f, k, evaluate=evaluate, config=engine)
        return jax.vmap(step, in_axes=(0, 0, axes, 0))(server, clients, fed, keys)

    round_fn = jax.jit(
        one_round, static_argnames=("evaluate",), donate_argnums=(0, 1) if engine.donate else ()
    )
    base = _base_keys(cfgs)

    @jax.jit
    def init_all(fed, base):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(base, 0)
        init_one = lambda f, k: init_step(alg, f, k, engine)
        return jax.vmap(init_one, in_axes=(axes, 0))(fed, keys)

    compile_start = time.perf_counter()
    init, shapes = compile_init(init_all, fed, base)
    needed = {True, cfg.eval_every == 1}
    compiled = {
        flag: round_fn.lower(*shapes, fed, base, evaluate=flag).compile() for flag in needed
    }
    compile_time = time.perf_counter() - compile_start
    return BatchedProgram(
        cfgs, prepared, fed, first_round(alg), init, shapes, compiled, compile_time
    )


def initial_state(program: BatchedProgram, abstract: bool = False) -> BatchedState:
    """As `experiment.initial_state`, for every run of the program."""
    curves: list[dict[str, list[float]]] = [{} for _ in range(program.num_runs)]
    state = BatchedState(None, None, _base_keys(program.cfgs), 0, curves, [])
    if abstract:
        state.server, state.clients = program.state_shapes
        return state
    state.server, state.clients, metrics = program.init()
    if metrics:
        _record_round(program, state.curves, state.eval_rounds, 0, experiment.fetch(metrics))
    return state


def last_round(program: BatchedProgram) -> int:
    """As `experiment.last_round`: `rounds` rounds in all, counting a setup round 0."""
    return program.cfgs[0].rounds - 1 + program.first_round


def _record_round(program, curves, eval_rounds: list[int], r: int, metrics) -> list[dict]:
    """Appends every run's round-r metrics to its curves; returns each run's new points."""
    settings = program.prepared[0].settings
    points = [
        experiment.record_round(run_curves, [], r, _run_metrics(metrics, i), settings)
        for i, run_curves in enumerate(curves)
    ]
    eval_rounds.append(r)
    return points


_fold_all = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))


def _run_metrics(metrics: dict, i: int) -> dict:
    """Run i's slice of a batched round's metrics."""
    return jax.tree.map(lambda leaf: leaf[i], metrics)


def advance(
    program: BatchedProgram,
    state: BatchedState,
    until: int,
    on_round: Callable[[int, list[dict]], None] | None = None,
) -> BatchedState:
    """Runs rounds state.round + 1 .. until for every run; `on_round(r, per-run metrics)`."""
    cfg, last = program.cfgs[0], last_round(program)
    check(until <= last, f"cannot advance to round {until}: the runs' last round is {last}")
    server, clients = state.server, state.clients
    curves = [{k: list(v) for k, v in c.items()} for c in state.curves]
    eval_rounds = list(state.eval_rounds)
    for r in range(state.round + 1, until + 1):
        do_eval = r % cfg.eval_every == 0 or r == last
        server, clients, metrics = program.compiled[do_eval](
            server, clients, program.fed, _fold_all(state.key, r)
        )
        if do_eval:
            points = _record_round(program, curves, eval_rounds, r, experiment.fetch(metrics))
            if on_round is not None:
                on_round(r, points)
    return dataclasses.replace(
        state, server=server, clients=clients, round=until, curves=curves, eval_rounds=eval_rounds
    )


def make_records(program: BatchedProgram, state: BatchedState, wall_time: float) -> list[dict]:
    """One ledger record per run, as `experiment.run` writes it; wall and compile time are the
    program's, shared equally by its runs."""
    n = program.num_runs
    return [
        experiment.make_record(
            cfg,
            prepared,
            curves,
            state.eval_rounds,
            wall_time / n,
            program.compile_time / n,
            runs_in_program=n,
        )
        for cfg, prepared, curves in zip(program.cfgs, program.prepared, state.curves)
    ]


def run_batch(
    cfgs: Sequence[ml_collections.ConfigDict],
    *,
    ledger: str | None = None,
    on_round: Callable[[int, list[dict]], None] | None = None,
) -> list[dict]:
    """Runs every config to the end as one program; returns (and appends) one record per run."""
    start = time.perf_counter()
    program = compile_batch(cfgs)
    state = advance(program, initial_state(program), last_round(program), on_round)
    records = make_records(program, state, time.perf_counter() - start)
    if ledger:
        for record in records:
            results.append_record(ledger, record)
    return records


def describe(cfgs: Sequence[ml_collections.ConfigDict]) -> str:
    """The fields that tell a group's runs apart, e.g. 'seed=0,1,2 alpha=0.1,1.0'."""
    parts = []
    for field in DATA_FIELDS:
        values = list(dict.fromkeys(json.dumps(c.get(field)) for c in cfgs))
        if len(values) > 1 or field == "seed":
            parts.append(f"{field}={','.join(values)}")
    return " ".join(parts)
