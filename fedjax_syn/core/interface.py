"""The algorithm interface: a tuple of pure functions over pytrees, in the spirit of optax.

The engine and every algorithm import it from here; the engine never imports an algorithm. An
algorithm never loops over clients and never sees devices or checkpoints: the engine maps the
per-client functions over the clients axis (vmap, chunked map, or a mesh) and calls the server
function on the stacked uploads. A run is:

    server  = init_server(key, one client's data)
    state   = init_client(server, data, key)                          # every client at once
    [round 0, only when `setup_client` is set: its own jitted program]
    state, upload, metrics = setup_client(server, state, data, key)  # every client at once
    server  = server_update(server, uploads, client_mask, key)
    [round r = 1, 2, ...: one jitted program each]
    state, upload, metrics = client_update(server, state, data, key)  # every client at once
    server  = server_update(server, uploads, client_mask, key)         # reductions over clients
    model   = personalize(server, state, data, key)                    # every client at once
    logits  = predict(model, inputs)                                   # for evaluation

Every evaluated round scores up to three models per client, on every setting: `personalized`
(the model `personalize` returns), `local` (`ClientResult.model`, the client's model right after
its local update: the protocol of the released FedLoG code) and `global` (`global_model(server)`,
the server's model). An algorithm without a local or a global model leaves that field None, and
that mode is not recorded.

`metrics` are per-client scalars the client reports (its mean training loss, the local steps it
took, ...): returned, never smuggled through the upload. State is free-form: FedAvg's server
state is the global parameters; FedLoG's client state carries synthetic nodes and per-class
scales across rounds, and its uploads are not parameters.

A one-time `setup_client` (FedLoG's round 0: pretraining and the first synthetic data) is a round
of its own, numbered 0, so that an algorithm's round r is the engine's round r.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.core.arrays import ClientData, Federation

PyTree = Any
Metrics = dict[str, jax.Array]  # metric name -> one client's scalar


class ClientResult(NamedTuple):
    """What one client's update returns: its next state, what it sends, what it reports."""

    state: PyTree
    upload: PyTree
    metrics: Metrics
    model: PyTree = None  # its model right after the local update ("local" evaluation), if any


ClientUpdate = Callable[[PyTree, PyTree, ClientData, jax.Array], ClientResult]


class FederatedAlgorithm(NamedTuple):
    name: str
    init_server: Callable[[jax.Array, ClientData], PyTree]  # (key, one client's data) -> server
    init_client: Callable[[PyTree, ClientData, jax.Array], PyTree]  # per client
    client_update: ClientUpdate  # (server, state, data, key), per client
    server_update: Callable[[PyTree, PyTree, jax.Array, jax.Array], PyTree]
    personalize: Callable[[PyTree, PyTree, ClientData, jax.Array], PyTree]
    predict: Callable[[PyTree, Any], jax.Array]  # (eval model, inputs) -> logits [n, C]
    setup_client: ClientUpdate | None = None  # round 0, run once before round 1
    global_model: Callable[[PyTree], PyTree] | None = None  # server -> model ("global" evaluation)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a builder may know about the data before anything is computed: static facts shared
    by every run of a program (after padding), so builders need no access to the arrays."""

    track: str  # "vision" or "graph"
    num_classes: int
    feature_shape: tuple[int, ...]  # one image's shape, or one node's feature vector's
    num_clients: int  # length of the clients axis (padded clients included)
    max_train_examples: int  # the largest client's training examples (nodes)
    settings: tuple[str, ...]  # the evaluation settings every round reports

    @classmethod
    def of(cls, track: str, feds: Sequence[Federation], settings: Sequence[str]) -> "DataSpec":
        """The spec of federations that share one program (the largest client over all)."""
        fed = feds[0]
        inputs = fed.train.inputs
        features = inputs.x if track == "graph" else inputs  # [clients, n, ...]
        largest = max(int(np.asarray(f.train.mask).sum(axis=-1).max()) for f in feds)
        return cls(
            track=track,
            num_classes=fed.num_classes,
            feature_shape=tuple(features.shape[2:]),
            num_clients=fed.num_clients,
            max_train_examples=largest,
            settings=tuple(settings),
        )


def weighted_average(stacked: PyTree, weights: jax.Array) -> PyTree:
    """sum_k w_k x_k / sum_k w_k over the leading clients axis; clients with weight 0 drop out.
    Written as a product with the weights: XLA:CPU ran `sum(x * w, axis=0)` over a few large
    stacked leaves up to 3600x slower (`python -m benchmarks.averaging`)."""
    weights = weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights), 1e-12)

    def average(leaf):
        summed = jnp.tensordot(weights, leaf, axes=1)
        return (summed / total).astype(leaf.dtype)

    return jax.tree.map(average, stacked)


def num_examples(data: ClientData) -> jax.Array:
    """Number of real training examples (nodes) of one client, float32."""
    return jnp.sum(data.mask).astype(jnp.float32)


def no_state(*_) -> dict:
    """Client state of algorithms that keep none between rounds."""
    return {}
