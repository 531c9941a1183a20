"""Reconstruction from a shared model update by gradient inversion, and how much a reconstruction
(or a shared synthetic image) looks like a real record.

The attack (Geiping et al., NeurIPS 2020, "Inverting Gradients"): the server knows the model it
sent and the update that came back, which points (for plain SGD, exactly) along the sum of the
client's gradients. It optimises dummy inputs, with the labels taken as known, so that their
gradient at the sent model points the same way: minimise 1 - cos(grad(dummies), update). One
example through a layer with a bias is identifiable this way: the weight gradient is the bias
gradient times the input.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def flatten(tree: Any) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.vdot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)


def invert_update(
    gradient: Callable[[jax.Array], Any],
    target: Any,
    x0: jax.Array,
    steps: int,
    lr: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """(dummies, their final cosine mismatch) after `steps` Adam steps from `x0`, minimising
    1 - cos(gradient(dummies), target); `gradient` maps dummy inputs to a pytree shaped like
    `target` (the update)."""
    want = flatten(target)
    objective = lambda x: 1.0 - cosine(flatten(gradient(x)), want)
    optimizer = optax.adam(lr)

    def step(carry, _):
        x, state = carry
        loss, grad = jax.value_and_grad(objective)(x)
        updates, state = optimizer.update(grad, state, x)
        return (optax.apply_updates(x, updates), state), loss

    (x, _), _ = jax.lax.scan(step, (x0, optimizer.init(x0)), None, length=steps)
    return x, objective(x)


def ssim(a: np.ndarray, b: np.ndarray, low: float, high: float) -> np.ndarray:
    """Structural similarity of image pairs [..., H, W, C] (broadcast) over the whole image (one
    window: 8x8 digits are smaller than SSIM's usual 11x11 window). SSIM is defined for
    non-negative intensities: pixels are clipped to the data's range [low, high] and shifted to
    start at 0 (standardised images are negative where the background is)."""
    a = np.clip(np.asarray(a, np.float64), low, high) - low
    b = np.clip(np.asarray(b, np.float64), low, high) - low
    data_range = high - low
    axes = (-3, -2, -1)
    mu_a, mu_b = a.mean(axes), b.mean(axes)
    var_a, var_b = a.var(axes), b.var(axes)
    cov = ((a - mu_a[..., None, None, None]) * (b - mu_b[..., None, None, None])).mean(axes)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )


def best_match_ssim(images: np.ndarray, records: np.ndarray, low: float, high: float) -> np.ndarray:
    """For each image [m, H, W, C], its SSIM with the most similar record [n, H, W, C]."""
    pairs = ssim(np.asarray(images)[:, None], np.asarray(records)[None, :], low, high)
    return pairs.max(axis=1)
