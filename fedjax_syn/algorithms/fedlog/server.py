"""FedLoG's server steps as reductions over the clients axis (docs/FEDLOG.md, "Round structure").

- Model average: plain mean over real clients (released), or weighted by training-node counts.
- Blend weights w_kc = r_kc / sum_k' r_k'c from the class shares r_kc of clients' training nodes;
  uniform 1/K over real clients for a class no client trains on.
- Global synthetic nodes: per client, the s slots are permuted by one random permutation shared
  across classes, then x_g[c, j] = sum_k w_kc X^k[c, pi_k(j)].
- Class-wise generators: g_c = sum_k w_kc g^k (parameters blended with the same weights).
Padded (fake) clients carry weight 0 everywhere.
"""

import jax
import jax.numpy as jnp

from fedjax_syn.core.interface import weighted_average


def class_shares(labels: jax.Array, mask: jax.Array, num_classes: int) -> jax.Array:
    """r [C]: the share of each class among one client's training nodes (zeros when none)."""
    counts = jnp.sum(
        (labels[None, :] == jnp.arange(num_classes)[:, None]) & mask[None, :], axis=1
    ).astype(jnp.float32)
    return counts / jnp.maximum(jnp.sum(counts), 1.0)


def blend_weights(shares: jax.Array, client_mask: jax.Array, mode: str = "class_share"):
    """w [K, C] from shares r [K, C]; each column sums to 1 over real clients."""
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


def blend_generators(gens, weights: jax.Array):
    """Stacked client generators (leading K) -> per-class generators (leading C)."""
    return jax.tree.map(lambda leaf: jnp.tensordot(weights.T, leaf, axes=1), gens)


def average_params(params, client_mask: jax.Array, sizes: jax.Array, mode: str = "uniform"):
    """Mean of the stacked client parameters: uniform over real clients, or weighted by size."""
    weights = client_mask.astype(jnp.float32)
    if mode == "weighted":
        weights = weights * sizes
    return weighted_average(params, weights)
