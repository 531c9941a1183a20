"""One federated round as one jitted function.

    round(server, client_states, federation, key) -> (server, client_states, metrics)

Every client's update runs at once (vmapped, or chunked with `lax.map`), the server update is a
reduction over the clients axis, and evaluation of every personalised model on every setting is
part of the same compiled program when asked. Under a device mesh the clients axis is sharded and
`jit` turns the reductions into all-reduces; nothing here knows how many devices there are.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms.base import FederatedAlgorithm
from fedjax_syn.data.arrays import Federation
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.mapping import map_clients


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    client_chunk: int | None = None  # None: vmap all clients; k: lax.map over groups of k
    eval_example_chunk: int | None = 512  # images evaluated this many at a time per client
    donate: bool = True  # reuse the state buffers of the previous round


def make_init(alg: FederatedAlgorithm, chunk: int | None = None) -> Callable:
    """init(fed, key) -> (server state, stacked client states) as one jitted function. It holds
    every client's `init_client` (FedLoG: all of round 0), so a program compiles and runs it once:
    see `compile_init`."""

    @jax.jit
    def init(fed, key):
        server_key, client_key = jax.random.split(key)
        one_client = jax.tree.map(lambda leaf: leaf[0], fed.train)
        server = alg.init_server(server_key, one_client)
        keys = jax.random.split(client_key, fed.num_clients)
        clients = map_clients(lambda d, k: alg.init_client(server, d, k), (fed.train, keys), chunk)
        return server, clients

    return init


def init_states(alg: FederatedAlgorithm, fed: Federation, key: jax.Array, chunk: int | None = None):
    """Server state and stacked client states; one jitted call."""
    return make_init(alg, chunk)(fed, key)


def compile_init(init: Callable, *args) -> tuple[Callable[[], Any], Any]:
    """(run, shapes): `run()` computes init(*args) with the executable compiled here, and `shapes`
    are its outputs as `jax.ShapeDtypeStruct`s, which is all a round needs to compile and a
    checkpoint to restore into: neither computes the initial states. Outputs split over devices
    keep their sharding; single-device ones have none, like the uncommitted arrays they are."""
    lowered = init.lower(*args)
    compiled = lowered.compile()

    def shape(info, sharding):
        if isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = None
        return jax.ShapeDtypeStruct(info.shape, info.dtype, sharding=sharding)

    shapes = jax.tree.map(shape, lowered.out_info, compiled.output_shardings)
    return lambda: compiled(*args), shapes


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
    update_key, server_key, personal_key = jax.random.split(key, 3)
    keys = jax.random.split(update_key, fed.num_clients)
    update = lambda state, data, k: alg.client_update(server, state, data, k)
    client_states, uploads = map_clients(
        update, (client_states, fed.train, keys), config.client_chunk
    )
    server = alg.server_update(server, uploads, fed.client_mask, server_key)
    mask = fed.client_mask.astype(jnp.float32)
    metrics: dict[str, Any] = {
        "train_loss": jnp.sum(uploads["loss"] * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    }
    if evaluate:
        keys = jax.random.split(personal_key, fed.num_clients)
        personal = lambda state, data, k: alg.personalize(server, state, data, k)
        models = map_clients(personal, (client_states, fed.train, keys), config.client_chunk)
        metrics["counts"] = evaluation.evaluate(
            alg.predict, models, fed, config.client_chunk, config.eval_example_chunk
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
