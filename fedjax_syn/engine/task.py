"""A task binds a flax model to the kind of inputs it reads (images or a graph).

The engine and the algorithms only ever call `task.init`, `task.logits` and `task.loss`; they never
look inside the inputs, so one training loop serves images (a minibatch gathers rows) and graphs (the
whole client subgraph is propagated, then the minibatch's target nodes are read off).
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Task(NamedTuple):
    model: nn.Module
    graph: bool  # True: inputs are a `Graph` and logits are per node

    def init(self, key: jax.Array, inputs: Any) -> Any:
        sample = inputs if self.graph else inputs[:1]
        return self.model.init({"params": key, "dropout": key}, sample)

    def logits(
        self,
        params: Any,
        inputs: Any,
        idx: jax.Array | None = None,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Logits for the examples (nodes) at `idx`, or for all of them."""
        rngs = {"dropout": rng} if rng is not None else {}
        if self.graph:
            out = self.model.apply(params, inputs, train=train, rngs=rngs)
            return out if idx is None else out[idx]
        x = inputs if idx is None else inputs[idx]
        return self.model.apply(params, x, train=train, rngs=rngs)

    def embed(
        self,
        params: Any,
        inputs: Any,
        idx: jax.Array | None = None,
        *,
        train: bool = False,
        rng: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """(representations, logits) for the examples (nodes) at `idx`, or for all of them: the
        `encoder` submodule's output, which representation-level algorithms (MOON, FedProto)
        compare, beside the head's logits from the same forward pass."""
        rngs = {"dropout": rng} if rng is not None else {}
        x = inputs if self.graph or idx is None else inputs[idx]
        out, state = self.model.apply(
            params,
            x,
            train=train,
            rngs=rngs,
            capture_intermediates=lambda module, method: module.name == "encoder",
            mutable=["intermediates"],
        )
        (features,) = state["intermediates"]["encoder"]["__call__"]
        if self.graph and idx is not None:
            return features[idx], out[idx]
        return features, out

    def loss(
        self,
        params: Any,
        inputs: Any,
        labels: jax.Array,
        idx: jax.Array,
        weights: jax.Array,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Weighted mean cross-entropy of the minibatch `idx`; zero-weight rows (padding) drop out."""
        logits = self.logits(params, inputs, idx, train=True, rng=rng)
        return weighted_mean(
            optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]), weights
        )


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w), and 0 when every weight is 0 (an all-padding batch)."""
    weights = weights.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)
