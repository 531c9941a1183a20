"""One federated round as one jitted function, and the one-time start of a run as another.

    init(fed, key)                          -> (server, client_states, round-0 metrics)
    round(server, client_states, fed, key)  -> (server, client_states, metrics)

Every client's update runs at once (vmapped, or chunked with `lax.map`), the server update is a
reduction over the clients axis, and evaluation of every personalised model on every setting is
part of the same compiled program when asked, in every evaluation mode the algorithm has
(`personalized`, `local`, `global`: core/interface.py). An algorithm with a `setup_client` stage runs it
inside `init` as round 0, evaluated like any round; without one `init` only initialises, and its
metrics are empty. Under a device mesh the clients axis is sharded and `jit` turns the reductions
into all-reduces; nothing here knows how many devices there are, or which algorithm it runs.

Every round (the setup round included) also reports `metrics["finite"]`, [K] bool: whether every
float entry of each client's new state and upload is finite (padded clients always are). It is
reductions over outputs the round computes anyway, so it never changes them; the host decides
what a false flag means (`runs.program`). `EngineConfig.on_nonfinite="drop"` also acts on it in the
round: a client with a non-finite result keeps its previous state, its upload is zeroed and left
out of the server update (`client_mask`), of the round's mean training metrics and of the
`local` evaluation; "stop" (the default) changes nothing and leaves the decision to the host.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_syn.core.arrays import Federation
from fedjax_syn.core.interface import ClientUpdate, FederatedAlgorithm
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.mapping import map_clients


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    client_chunk: int | None = None  # None: vmap all clients; k: lax.map over groups of k
    vmap_single: bool = False  # with client_chunk 1: each client's update as a vmap of one
    eval_example_chunk: int | None = 512  # images evaluated this many at a time per client
    donate: bool = True  # reuse the state buffers of the previous round
    on_nonfinite: str = "stop"  # "stop": only report; "drop": also drop such clients' updates


def first_round(alg: FederatedAlgorithm) -> int:
    """The first round a run numbers: 0 when the algorithm has a setup round, else 1."""
    return 0 if alg.setup_client is not None else 1


def client_mean(metrics: dict[str, jax.Array], client_mask: jax.Array) -> dict[str, jax.Array]:
    """Each per-client metric [K] averaged over the real clients."""
    count = jnp.maximum(jnp.sum(client_mask.astype(jnp.float32)), 1.0)
    # `where`, not a product: a left-out client's NaN must not reach the mean (NaN * 0 is NaN).
    return {
        name: jnp.sum(jnp.where(client_mask, value, 0)) / count for name, value in metrics.items()
    }


def all_finite(*trees: Any) -> jax.Array:
    """Whether every float entry of `trees` is finite: one reduction per leaf, no host sync."""
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(trees)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return functools.reduce(jnp.logical_and, flags, jnp.ones((), bool))


def _per_client(flags: jax.Array, leaf: jax.Array) -> jax.Array:
    """[K] flags broadcastable against a stacked leaf."""
    return flags.reshape((-1,) + (1,) * (leaf.ndim - 1))


def _federate(
    alg: FederatedAlgorithm,
    update: ClientUpdate,
    server: Any,
    client_states: Any,
    fed: Federation,
    key: jax.Array,
    config: EngineConfig,
):
    """One round's client updates (by `update`) and server update; returns the new states, the
    round's metrics, the clients' just-updated models (None if the algorithm has none), the
    clients whose update counts (`client_mask`, less any dropped) and the key for
    personalisation."""
    update_key, server_key, personal_key = jax.random.split(key, 3)
    keys = jax.random.split(update_key, fed.num_clients)

    def checked_update(state, data, k):
        # Checked per client, right after its update, while its results are still in cache
        # (a second pass over every client's stacked results cost W2's round 4%, BENCHMARKS.md).
        new_state, upload, metrics, local_model = update(server, state, data, k)
        return new_state, upload, metrics, local_model, all_finite(new_state, upload)

    new_states, uploads, client_metrics, local_models, finite = map_clients(
        checked_update,
        (client_states, fed.train, keys),
        config.client_chunk,
        config.vmap_single,
    )
    counted = fed.client_mask
    if config.on_nonfinite == "drop":
        keep = lambda new, old: jnp.where(_per_client(finite, new), new, old)
        new_states = jax.tree.map(keep, new_states, client_states)
        uploads = jax.tree.map(lambda leaf: keep(leaf, jnp.zeros_like(leaf)), uploads)
        counted = counted & finite
    server = alg.server_update(server, uploads, counted, server_key)
    metrics: dict[str, Any] = {
        "train": client_mean(client_metrics, counted),
        "finite": finite | ~fed.client_mask,
    }
    return server, new_states, metrics, local_models, counted, personal_key


def _evaluate(alg, server, client_states, local_models, counted, fed, key, config: EngineConfig):
    """Per-client counts of every evaluation mode the algorithm has: {mode: {setting: ...}}.
    A client whose update was dropped has no `local` model this round: its counts there are 0."""
    keys = jax.random.split(key, fed.num_clients)
    personal = lambda state, data, k: alg.personalize(server, state, data, k)
    models = {
        "personalized": map_clients(personal, (client_states, fed.train, keys), config.client_chunk)
    }
    if local_models is not None:
        models["local"] = local_models
    if alg.global_model is not None:
        one = alg.global_model(server)
        models["global"] = jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf, (fed.num_clients, *leaf.shape)), one
        )
    counts = {
        mode: evaluation.evaluate(
            alg.predict, stacked, fed, config.client_chunk, config.eval_example_chunk
        )
        for mode, stacked in models.items()
    }
    if config.on_nonfinite == "drop" and "local" in counts:
        dropped = ~counted & fed.client_mask
        counts["local"] = jax.tree.map(lambda c: jnp.where(dropped, 0, c), counts["local"])
    return counts


def init_step(alg: FederatedAlgorithm, fed: Federation, key: jax.Array, config: EngineConfig):
    """The un-jitted start of a run: initial states, then round 0 (evaluated) if the algorithm
    has a setup stage. `make_init` compiles it."""
    server_key, client_key = jax.random.split(key)
    one_client = jax.tree.map(lambda leaf: leaf[0], fed.train)
    server = alg.init_server(server_key, one_client)
    keys = jax.random.split(client_key, fed.num_clients)
    init = lambda data, k: alg.init_client(server, data, k)
    clients = map_clients(init, (fed.train, keys), config.client_chunk)
    if alg.setup_client is None:
        return server, clients, {}
    server, clients, metrics, local_models, counted, personal_key = _federate(
        alg, alg.setup_client, server, clients, fed, jax.random.fold_in(key, 1), config
    )
    metrics["counts"] = _evaluate(
        alg, server, clients, local_models, counted, fed, personal_key, config
    )
    return server, clients, metrics


def make_init(alg: FederatedAlgorithm, config: EngineConfig = EngineConfig()) -> Callable:
    """init(fed, key) -> (server, client states, round-0 metrics) as one jitted function."""
    return jax.jit(lambda fed, key: init_step(alg, fed, key, config))


def init_states(alg: FederatedAlgorithm, fed: Federation, key: jax.Array, chunk: int | None = None):
    """Server state and stacked client states after `init` (round 0 included); one jitted call."""
    server, clients, _ = make_init(alg, EngineConfig(client_chunk=chunk))(fed, key)
    return server, clients


def compile_init(init: Callable, *args) -> tuple[Callable[[], Any], Any]:
    """(run, shapes): `run()` computes init(*args) with the executable compiled here, and `shapes`
    are its (server, clients) outputs as `jax.ShapeDtypeStruct`s, which is all a round needs to
    compile and a checkpoint to restore into: neither computes the initial states. Outputs split
    over devices keep their sharding; single-device ones have none, like the uncommitted arrays
    they are."""
    lowered = init.lower(*args)
    compiled = lowered.compile()

    def shape(info, sharding):
        if isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = None
        return jax.ShapeDtypeStruct(info.shape, info.dtype, sharding=sharding)

    server, clients, _ = jax.tree.map(shape, lowered.out_info, compiled.output_shardings)
    return lambda: compiled(*args), (server, clients)


def round_step(
    alg: FederatedAlgorithm,
    server: Any,
    client_states: Any,
    fed: Federation,
    key: jax.Array,
    *,
    evaluate: bool,
    config: EngineConfig,
):
    """The un-jitted round; `make_round` compiles it."""
    server, client_states, metrics, local_models, counted, personal_key = _federate(
        alg, alg.client_update, server, client_states, fed, key, config
    )
    if evaluate:
        metrics["counts"] = _evaluate(
            alg, server, client_states, local_models, counted, fed, personal_key, config
        )
    return server, client_states, metrics


def make_round(alg: FederatedAlgorithm, config: EngineConfig = EngineConfig()) -> Callable:
    """round(server, client_states, fed, key, evaluate=bool) as one jitted function."""
    fn = lambda server, clients, fed, key, evaluate: round_step(
        alg, server, clients, fed, key, evaluate=evaluate, config=config
    )
    return jax.jit(
        fn, static_argnames=("evaluate",), donate_argnums=(0, 1) if config.donate else ()
    )
