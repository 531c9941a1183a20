"""How a client finds its own slot of per-client server state.

The engine hands every client the whole server state and maps one client function over the clients
axis; it never tells a client which slot it occupies. A server that keeps something per client
(FED-PUB's personalised models, GCFL+'s cluster of each client) files it by slot, as the uploads
arrive stacked in slot order. Each client therefore draws a random 64-bit id when it starts and
sends it with every upload; the server keeps the uploaded ids by slot, and a client finds its slot
by matching its id, as a real server addresses a client by name. Before the first upload nothing
matches and a client reads slot 0, which such servers start from the common initial model. Two of K
clients draw the same id with probability about K^2 / 2^65.
"""

from typing import Any

import jax
import jax.numpy as jnp


def new_id(key: jax.Array) -> jax.Array:
    """A client's random id: two uint32 words."""
    return jax.random.bits(key, (2,), jnp.uint32)


def no_ids(num_clients: int) -> jax.Array:
    """The server's ids before any upload: all zero, which no client's id matches in practice."""
    return jnp.zeros((num_clients, 2), jnp.uint32)


def find(ids: jax.Array, own: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(slot, found): the slot whose stored id [K, 2] equals `own` [2]; slot 0 when none does."""
    match = jnp.all(ids == own, axis=-1)
    return jnp.argmax(match), jnp.any(match)


def take(stacked: Any, index: jax.Array) -> Any:
    """Row `index` of every leaf of a tree stacked over slots."""
    return jax.tree.map(lambda leaf: leaf[index], stacked)


def keep_present(stored: jax.Array, uploaded: jax.Array, client_mask: jax.Array) -> jax.Array:
    """The ids [K, 2] after a round: each present client's upload, the stored id where a client's
    upload is masked out (a padded client, or one whose non-finite update was dropped and zeroed,
    id included), so that a dropped client still finds its slot next round."""
    return jnp.where(client_mask[:, None] > 0, uploaded, stored)
