"""One run end to end: config -> data -> splits -> client arrays -> rounds -> a ledger record.

The configuration is an `ml_collections.ConfigDict` (see `default_config`); everything that
identifies a run is recorded verbatim in its ledger record, so tables can be regenerated from the
ledger alone.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from fedjax_syn import results
from fedjax_syn.algorithms import registry
from fedjax_syn.core.arrays import Federation, round_up
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.engine import evaluation, sharding
from fedjax_syn.engine.round import EngineConfig, compile_init, first_round, make_init, make_round
from fedjax_syn.engine.task import Task

VISION_MODELS = ("mlp", "convnet")
GRAPH_MODELS = ("gcn", "sage")
# Config fields that choose how a run executes, never what it computes (tests/test_engine.py:
# chunked == vmapped, unrolled == while-loop, sharded == single device). A run's identity ignores
# them, so a sweep switched to another layout still finds the runs its ledger holds.
EXECUTION_FIELDS = ("client_chunk", "eval_example_chunk", "unroll", "shard")


def default_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with defaults; experiment configs override a subset."""
    return ml_collections.ConfigDict(
        {
            "track": "vision",
            "dataset": "digits",
            "data_dir": "",
            "seed": 0,
            # Protocol (PROTOCOL.md). Vision: partition over num_clients + 1 parts.
            "num_clients": 10,
            "partition": "dirichlet",
            "alpha": 0.5,
            "classes_per_part": 2,
            "min_class_count": 2,
            "missing_frac": 0.0,
            # Graph protocol.
            "partitioner": "louvain",
            "setting": "closeset",
            "unseen_frac": 0.2,
            "graph_missing_frac": 0.3,
            "normalize_features": True,
            # Model.
            "model": "mlp",
            "hidden": (32,),
            "width": 128,
            "dropout": 0.5,
            # Algorithm and optimisation.
            "algorithm": "fedavg",
            "rounds": 20,
            "local_epochs": 1,
            "local_steps": 0,  # > 0: fixed local steps instead of epochs
            "batch_size": 10,
            "drop_last": False,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "weighted": True,
            "finetune_epochs": 5,
            "prox_mu": 0.01,
            "fedlog": {},
            # Engine.
            "eval_every": 1,
            "unroll": False,  # unroll local training (faster ConvNets on CPU, longer compile)
            "client_chunk": 0,  # 0: vmap every client at once
            "eval_example_chunk": 512,
            "shard": False,  # put the clients axis on a mesh of all local devices
        }
    )


@dataclasses.dataclass
class Prepared:
    """What a run needs besides the config: device arrays, the task, protocol and settings."""

    fed: Federation
    task: Task
    protocol: dict
    settings: tuple[str, ...]


def _num_client_slots(cfg) -> int | None:
    if not cfg.shard:
        return None
    return round_up(cfg.num_clients, jax.device_count())


def prepare(cfg) -> Prepared:
    check_choice("track", cfg.track, ("vision", "graph"))
    check(cfg.num_clients >= 1, f"num_clients must be >= 1, got {cfg.num_clients}")
    if cfg.track == "vision":
        return _prepare_vision(cfg)
    return _prepare_graph(cfg)


def build_split(cfg, data):
    """The federation (clients, new client, held-out nodes or classes) a config's fields ask for,
    from the loaded dataset of its track: one place maps config fields to split arguments."""
    if cfg.track == "vision":
        from fedjax_syn.data.vision_split import build_vision_federation

        return build_vision_federation(
            data,
            cfg.num_clients,
            cfg.partition,
            alpha=cfg.alpha,
            classes_per_part=cfg.classes_per_part,
            seed=cfg.seed,
            min_class_count=cfg.min_class_count,
            missing_frac=cfg.missing_frac,
        )
    from fedjax_syn.data.graph_split import build_graph_federation

    return build_graph_federation(
        data,
        cfg.num_clients,
        partitioner=cfg.partitioner,
        setting=cfg.setting,
        unseen_frac=cfg.unseen_frac,
        missing_frac=cfg.graph_missing_frac,
        seed=cfg.seed,
    )


def _prepare_vision(cfg) -> Prepared:
    from fedjax_syn.data.vision import load_vision
    from fedjax_syn.data.vision_arrays import VISION_SETTINGS, vision_arrays
    from fedjax_syn.models.vision import MLP, ConvNet

    check_choice("model", cfg.model, VISION_MODELS)
    data = load_vision(cfg.dataset, cfg.data_dir or None)
    split = build_split(cfg, data)
    fed = vision_arrays(split, _num_client_slots(cfg))
    model = (
        MLP(data.num_classes, tuple(cfg.hidden))
        if cfg.model == "mlp"
        else ConvNet(data.num_classes, cfg.width)
    )
    protocol = {
        "num_clients": cfg.num_clients,
        "partition": cfg.partition,
        "alpha": cfg.alpha,
        "min_class_count": cfg.min_class_count,
        "missing_frac": cfg.missing_frac,
    }
    return Prepared(fed, Task(model, graph=False), protocol, VISION_SETTINGS)


def _prepare_graph(cfg) -> Prepared:
    from fedjax_syn.data.graph_arrays import GRAPH_SETTINGS, graph_arrays
    from fedjax_syn.data.graphs import load_graph
    from fedjax_syn.models.gnn import GNN

    check_choice("model", cfg.model, GRAPH_MODELS)
    data = load_graph(cfg.dataset, cfg.data_dir or None)
    split = build_split(cfg, data)
    fed = graph_arrays(split, _num_client_slots(cfg), normalize=cfg.normalize_features)
    model = GNN(data.num_classes, cfg.model, tuple(cfg.hidden), cfg.dropout)
    return Prepared(fed, Task(model, graph=True), dict(split.protocol), GRAPH_SETTINGS)


def run_id(cfg) -> str:
    """The ledger id of a run: its config with the execution fields at their defaults."""
    config = cfg.to_dict()
    defaults = default_config()
    for field in EXECUTION_FIELDS:
        if field in config:
            config[field] = defaults[field]
    return results.run_id(config)


def engine_config(cfg) -> EngineConfig:
    check(cfg.client_chunk >= 0, f"client_chunk must be >= 0, got {cfg.client_chunk}")
    return EngineConfig(
        client_chunk=cfg.client_chunk or None, eval_example_chunk=cfg.eval_example_chunk
    )


@dataclasses.dataclass
class RunState:
    """A run between rounds: everything the next round and the final record depend on.

    `server` and `clients` live on device (the next round donates their buffers); `key` is the
    run's base key (round r uses `fold_in(key, r)`), `round` the last finished round, and the
    curves hold one entry per evaluated round. A sweep checkpoints this to resume bit-identically.
    """

    server: Any
    clients: Any
    key: jax.Array
    round: int
    curves: dict[str, list[float]]
    eval_rounds: list[int]
    elapsed_s: float = 0.0  # wall time spent on this run by earlier processes


@dataclasses.dataclass
class Program:
    """One run's data on device and its compiled round (with and without evaluation)."""

    cfg: ml_collections.ConfigDict
    prepared: Prepared
    fed: Federation
    first_round: int  # 0: the algorithm has a setup round, run by `init`; else 1
    init: Callable[[], tuple[Any, Any, dict]]  # computes (server, clients, round-0 metrics)
    state_shapes: tuple[Any, Any]  # their shapes and shardings, without computing them
    compiled: dict[bool, Callable]
    compile_time: float  # the initialisation and the round programs


def build_algorithm(cfg, prepared: Sequence[Prepared]):
    """The algorithm of `cfg` for the runs of one program, which share the data spec."""
    spec = DataSpec.of(cfg.track, [p.fed for p in prepared], prepared[0].settings)
    return registry.build(cfg, prepared[0].task, spec)


def compile_run(cfg, prepared: Prepared | None = None) -> Program:
    """Prepares the data (unless given), builds the algorithm and compiles its round."""
    check(cfg.rounds >= 1, f"rounds must be >= 1, got {cfg.rounds}")
    check(cfg.eval_every >= 1, f"eval_every must be >= 1, got {cfg.eval_every}")
    prepared = prepare(cfg) if prepared is None else prepared
    fed = prepared.fed
    alg = build_algorithm(cfg, [prepared])
    if cfg.shard:
        fed = sharding.shard_federation(fed, sharding.client_mesh())
    engine = engine_config(cfg)
    round_fn = make_round(alg, engine)
    key = jax.random.key(cfg.seed)
    compile_start = time.perf_counter()
    init, shapes = compile_init(make_init(alg, engine), fed, jax.random.fold_in(key, 0))
    needed = {True, cfg.eval_every == 1}  # the no-evaluation variant only when it is used
    compiled = {flag: round_fn.lower(*shapes, fed, key, evaluate=flag).compile() for flag in needed}
    compile_time = time.perf_counter() - compile_start
    return Program(cfg, prepared, fed, first_round(alg), init, shapes, compiled, compile_time)


def initial_state(program: Program, abstract: bool = False) -> RunState:
    """The state before round 1: freshly initialised server and clients, and round 0 (the
    algorithm's setup round, if it has one) run and recorded. `abstract`: the server and clients
    as shapes only, the template a checkpoint restores into without computing anything."""
    state = RunState(None, None, jax.random.key(program.cfg.seed), 0, {}, [])
    if abstract:
        state.server, state.clients = program.state_shapes
        return state
    state.server, state.clients, metrics = program.init()
    if metrics:
        record_round(state.curves, state.eval_rounds, 0, fetch(metrics), program.prepared.settings)
    return state


def last_round(program: Program) -> int:
    """The run's last round: `rounds` rounds in all, counting a setup round 0."""
    return program.cfg.rounds - 1 + program.first_round


def record_round(curves, eval_rounds, r: int, metrics, settings) -> dict[str, float]:
    """Appends round r's evaluated metrics (host copies) to `curves`; returns the new points."""
    acc = evaluation.accuracies(metrics["counts"])
    points = {f"train_{name}": float(v) for name, v in metrics["train"].items()}
    points |= {name: acc[name] for name in ("val", *settings)}
    for name, value in points.items():
        curves.setdefault(name, []).append(value)
    eval_rounds.append(r)
    return points


def advance(
    program: Program,
    state: RunState,
    until: int,
    on_round: Callable[[int, dict], None] | None = None,
) -> RunState:
    """Runs rounds state.round + 1 .. until; returns the new state (the old one is donated)."""
    cfg, last = program.cfg, last_round(program)
    check(until <= last, f"cannot advance to round {until}: the run's last round is {last}")
    server, clients = state.server, state.clients
    curves = {k: list(v) for k, v in state.curves.items()}
    eval_rounds = list(state.eval_rounds)
    for r in range(state.round + 1, until + 1):
        do_eval = r % cfg.eval_every == 0 or r == last
        server, clients, metrics = program.compiled[do_eval](
            server, clients, program.fed, jax.random.fold_in(state.key, r)
        )
        if do_eval:
            points = record_round(curves, eval_rounds, r, fetch(metrics), program.prepared.settings)
            if on_round is not None:
                on_round(r, points)
    return dataclasses.replace(
        state, server=server, clients=clients, round=until, curves=curves, eval_rounds=eval_rounds
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


def run(
    cfg,
    *,
    ledger: str | None = None,
    on_round: Callable[[int, dict], None] | None = None,
    prepared: Prepared | None = None,
) -> dict[str, Any]:
    """Runs `cfg.rounds` rounds, evaluating every `eval_every`; returns (and appends) the record."""
    start = time.perf_counter()
    program = compile_run(cfg, prepared)
    state = advance(program, initial_state(program), last_round(program), on_round)
    record = make_record(
        cfg,
        program.prepared,
        state.curves,
        state.eval_rounds,
        time.perf_counter() - start,
        program.compile_time,
    )
    if ledger:
        results.append_record(ledger, record)
    return record


def make_record(
    cfg, prepared: Prepared, curves, eval_rounds, wall_time, compile_time, runs_in_program=1
) -> dict:
    """The ledger record of a finished run (`runs_in_program` > 1: it ran batched with others,
    and its wall and compile times are its share of the program's)."""
    best, last = results.summarize_curves(
        {k: v for k, v in curves.items() if not k.startswith("train_")}, val_key="val"
    )
    best["round"] = eval_rounds[best["round"]]
    last["round"] = eval_rounds[last["round"]]
    config = cfg.to_dict()
    return {
        "run_id": run_id(cfg),
        "track": cfg.track,
        "dataset": cfg.dataset,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "protocol": prepared.protocol,
        "config": config,
        "settings": list(prepared.settings),
        "eval_rounds": eval_rounds,
        "curves": {k: [_finite(v) for v in vals] for k, vals in curves.items()},
        "best": {k: v if k == "round" else _finite(v) for k, v in best.items()},
        "last": {k: v if k == "round" else _finite(v) for k, v in last.items()},
        "wall_time_s": wall_time,
        "compile_time_s": compile_time,
        "runs_in_program": runs_in_program,
        "versions": results.versions(),
    }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a setting with no examples (e.g. no missing class) is recorded as null."""
    return None if value is None or np.isnan(value) else float(value)
