"""Distances between two gradient pytrees, the objective of gradient matching.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, eq. (10): the
layer-wise distance sums, over the output units of every weight tensor, 1 - cosine between the
real and the synthetic gradient rows. Comparing rows per output unit (instead of one flattened
vector) keeps a layer with large gradients from drowning the others, and per-unit cosine ignores
each unit's gradient scale. Biases and normalisation scales (rank-1 tensors) are skipped.

Layout: flax kernels put the output axis LAST (Dense: (in, out); Conv: (h, w, in, out)), unlike
PyTorch's (out, in, ...), so rows are taken along the last axis here.
"""

import jax
import jax.numpy as jnp

from fedjax_syn.core.errors import check_choice

DISTANCES = ("layerwise_cos", "mse", "cos")
_EPS = 1e-6  # added to the product of norms, as in the paper's released code


def _safe_norm(x: jax.Array, axis=None) -> jax.Array:
    """Euclidean norm whose gradient at the zero vector is 0 instead of NaN (a dead unit's
    synthetic gradient row is exactly zero)."""
    sq = jnp.sum(x * x, axis=axis)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _one_minus_cos(a: jax.Array, b: jax.Array) -> jax.Array:
    """1 - cos(a, b) along the last axis, with the paper's epsilon in the denominator."""
    dot = jnp.sum(a * b, axis=-1)
    return 1.0 - dot / (_safe_norm(a, axis=-1) * _safe_norm(b, axis=-1) + _EPS)


def output_rows(g: jax.Array) -> jax.Array:
    """A flax weight gradient as [out, rest]: the output axis (last) first, the rest flattened."""
    return jnp.moveaxis(g, -1, 0).reshape(g.shape[-1], -1)


def _layerwise_cos(g_real: jax.Array, g_syn: jax.Array) -> jax.Array:
    if g_real.ndim < 2:
        return jnp.zeros((), g_real.dtype)
    return jnp.sum(_one_minus_cos(output_rows(g_real), output_rows(g_syn)))


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def gradient_distance(g_real, g_syn, kind: str = "layerwise_cos") -> jax.Array:
    """Distance between two gradient pytrees of the same structure; a scalar.

    - "layerwise_cos": sum over weight tensors and their output units of 1 - cosine (rank-1
      tensors contribute 0);
    - "mse": sum of squared differences over all entries;
    - "cos": 1 - cosine of the whole flattened gradients.
    """
    check_choice("gradient distance", kind, DISTANCES)
    if kind == "layerwise_cos":
        terms = jax.tree.leaves(jax.tree.map(_layerwise_cos, g_real, g_syn))
        return sum(terms, jnp.zeros(()))
    real, syn = _flat(g_real), _flat(g_syn)
    if kind == "mse":
        return jnp.sum((real - syn) ** 2)
    return _one_minus_cos(real, syn)
