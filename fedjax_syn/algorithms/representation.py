"""What representation-level algorithms (MOON, FedProto) share: a minibatch's cross-entropy and its
encoder representations from one training-mode forward pass, so that a regulariser on the
representations costs no second pass of the model being trained."""

from typing import Any

import jax
import optax

from fedjax_syn.core.arrays import ClientData
from fedjax_syn.engine.task import Task, weighted_mean


def cross_entropy_and_features(
    task: Task,
    params: Any,
    data: ClientData,
    idx: jax.Array,
    weights: jax.Array,
    rng: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """(weighted mean cross-entropy of the minibatch `idx`, as `Task.loss` computes it; its
    representations [B, d]). On graphs the whole subgraph is propagated first."""
    features, logits = task.embed(params, data.inputs, idx, train=True, rng=rng)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, data.labels[idx])
    return weighted_mean(losses, weights), features
