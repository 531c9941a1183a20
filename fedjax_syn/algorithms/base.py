"""The algorithm interface: a tuple of pure functions over pytrees, in the spirit of optax.

An algorithm never loops over clients and never sees devices or checkpoints. The engine maps the
per-client functions over the clients axis (vmap, chunked map, or a mesh) and calls the server
function on the stacked uploads. One round is:

    client_state, upload = client_update(server, client_state, data, key)   # every client at once
    server               = server_update(server, uploads, client_mask, key)  # reductions over clients
    eval_model           = personalize(server, client_state, data, key)     # every client at once
    logits               = predict(eval_model, inputs)                      # for evaluation

State is free-form: FedAvg's server state is the global parameters; FedLoG's client state carries
synthetic nodes and per-class scales across rounds, and its uploads are not parameters.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_syn.data.arrays import ClientData

PyTree = Any


class FederatedAlgorithm(NamedTuple):
    name: str
    init_server: Callable[[jax.Array, ClientData], PyTree]  # (key, one client's data) -> server
    init_client: Callable[[PyTree, ClientData, jax.Array], PyTree]  # per client
    client_update: Callable[[PyTree, PyTree, ClientData, jax.Array], tuple[PyTree, PyTree]]
    server_update: Callable[[PyTree, PyTree, jax.Array, jax.Array], PyTree]
    personalize: Callable[[PyTree, PyTree, ClientData, jax.Array], PyTree]
    predict: Callable[[PyTree, Any], jax.Array]  # (eval model, inputs) -> logits [n, C]


def weighted_average(stacked: PyTree, weights: jax.Array) -> PyTree:
    """sum_k w_k x_k / sum_k w_k over the leading clients axis; clients with weight 0 drop out."""
    weights = weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(weights), 1e-12)

    def average(leaf):
        w = weights.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return (jnp.sum(leaf * w, axis=0) / total).astype(leaf.dtype)

    return jax.tree.map(average, stacked)


def num_examples(data: ClientData) -> jax.Array:
    """Number of real training examples (nodes) of one client, float32."""
    return jnp.sum(data.mask).astype(jnp.float32)


def no_state(*_) -> dict:
    """Client state of algorithms that keep none between rounds."""
    return {}
