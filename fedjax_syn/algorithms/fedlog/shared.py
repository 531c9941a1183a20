"""What graph FedLoG (`fedlog`) and its image recipe (`fedlog_vision`) have in common, and
nothing else: the server's class-share blend and model average, adaptive feature scaling, the
per-class accuracy and NLL it reads, and the minibatch loop (docs/fedlog.md, "The method").
Reductions run over the clients axis; padded clients carry weight 0 everywhere.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_syn.core.interface import weighted_average
from fedjax_syn.engine import local

AGGREGATES = ("uniform", "weighted")
BLEND_WEIGHTS = ("class_share", "uniform")


def class_shares(labels: jax.Array, mask: jax.Array, num_classes: int) -> jax.Array:
    """r [C]: the share of each class among one client's training examples (zeros when none)."""
    counts = jnp.sum(
        (labels[None, :] == jnp.arange(num_classes)[:, None]) & mask[None, :], axis=1
    ).astype(jnp.float32)
    return counts / jnp.maximum(jnp.sum(counts), 1.0)


def blend_weights(shares: jax.Array, client_mask: jax.Array, mode: str = "class_share"):
    """w [K, C] from shares r [K, C]: w_kc = r_kc / sum_k' r_k'c, uniform 1/K over real clients
    for a class no client trains on; each column sums to 1 over real clients."""
    real = client_mask.astype(jnp.float32)[:, None]
    uniform = jnp.broadcast_to(real / jnp.maximum(jnp.sum(real), 1.0), shares.shape)
    if mode == "uniform":
        return uniform
    r = shares * real
    total = jnp.sum(r, axis=0, keepdims=True)
    return jnp.where(total > 0, r / jnp.where(total > 0, total, 1.0), uniform)


def slot_permutations(key: jax.Array, num_clients: int, slots: int) -> jax.Array:
    """pi [K, s]: one random permutation of the slots per client."""
    keys = jax.random.split(key, num_clients)
    return jax.vmap(lambda k: jax.random.permutation(k, slots))(keys)


def blend_synthetic(x: jax.Array, weights: jax.Array, perms: jax.Array) -> jax.Array:
    """x [K, C, s, F], w [K, C], pi [K, s] -> x_g [C, s, F] = sum_k w_kc x[k, c, pi_k(j)]."""
    permuted = jnp.take_along_axis(x, perms[:, None, :, None], axis=2)
    return jnp.einsum("kc,kcsf->csf", weights, permuted)


def average_params(params, client_mask: jax.Array, sizes: jax.Array, mode: str = "uniform"):
    """Mean of the stacked client parameters: uniform over real clients (as released), or
    weighted by size."""
    weights = client_mask.astype(jnp.float32)
    if mode == "weighted":
        weights = weights * sizes
    return weighted_average(params, weights)


def nll(log_probs: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted mean negative log-likelihood (0 when every weight is 0)."""
    picked = jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    if weights is None:
        return -jnp.mean(picked)
    weights = weights.astype(picked.dtype)
    return -jnp.sum(picked * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def class_accuracy(
    log_probs: jax.Array, labels: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> jax.Array:
    """Per-class accuracy [C] of argmax predictions over the (masked) examples; 0 for a class
    without any."""
    correct = jnp.argmax(log_probs, axis=-1) == labels
    member = labels[None, :] == jnp.arange(num_classes)[:, None]
    if mask is not None:
        member = member & mask[None, :]
    hits = jnp.sum(member & correct[None, :], axis=1)
    return hits / jnp.maximum(jnp.sum(member, axis=1), 1)


def update_scales(scales: jax.Array, accuracy: jax.Array, threshold: float, step: float):
    """lambda_c += step where the client already gets class c right (accuracy > threshold), else
    -= step; clipped to [0, 1]. Known classes get harder (more averaged) synthetic data."""
    return jnp.clip(scales + jnp.where(accuracy > threshold, step, -step), 0.0, 1.0)


def scale_features(
    x: jax.Array, labels: jax.Array, scales: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """x~ = x + lambda_y (mean over all (masked) global examples - x), per example of class y;
    x [M, ...], labels [M]."""
    w = jnp.ones(labels.shape, x.dtype) if mask is None else mask.astype(x.dtype)
    w = w.reshape((-1,) + (1,) * (x.ndim - 1))
    mean = jnp.sum(x * w, axis=0, keepdims=True) / jnp.maximum(jnp.sum(w), 1.0)
    lam = scales[labels].reshape(w.shape)
    return x + lam * (mean - x)


def run_steps(
    step: Callable[[Any, tuple], Any],
    carry: Any,
    mask: jax.Array,
    key: jax.Array,
    schedule: local.Schedule,
) -> tuple[Any, jax.Array]:
    """carry <- step(carry, (idx [b], weight [b], key)) for each active minibatch of `schedule`
    (the engine's minibatches: same order, same drop-last rule), in order. Returns the final
    carry and the number of steps taken (`engine.local.active_steps`)."""
    batch_key, step_key = jax.random.split(key)
    idx, weight, active = local.minibatches(mask, batch_key, schedule)
    keys = jax.random.split(step_key, idx.shape[0])
    return local.active_steps(step, carry, (idx, weight, keys), active)
