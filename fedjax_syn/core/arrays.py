"""Padded client arrays: ragged per-client data as dense arrays with a leading clients axis + masks.

Every client is padded to the same number of examples (nodes) and, where a mesh needs it, the client
axis is padded with empty clients. Masks mark what is real; a padded example, node, edge or client
never changes a gradient, a metric or an aggregate (the engine's tests check this).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class ClientData:
    """One client's training data (stacked: a leading clients axis on every leaf).

    inputs: images [n, ...] or a `Graph` (the training-time graph); labels [n];
    mask [n] marks training targets; val_mask [n] marks validation targets (used for early stopping).
    """

    inputs: Any
    labels: jax.Array
    mask: jax.Array
    val_mask: jax.Array


@struct.dataclass
class EvalGroup:
    """Inputs evaluated together, with one mask per evaluation setting.

    inputs/labels carry a leading clients axis unless `shared`, when every client model is evaluated on
    the same inputs (a global test set, the new client). masks: setting -> [clients, n] bool.
    """

    inputs: Any
    labels: jax.Array
    masks: dict[str, jax.Array]
    shared: bool = struct.field(pytree_node=False, default=False)


@struct.dataclass
class Federation:
    """Everything a run needs on device: training data, evaluation groups, which clients are real."""

    train: ClientData
    eval_groups: dict[str, EvalGroup]
    client_mask: jax.Array  # [clients] bool; False for clients added as padding
    num_classes: int = struct.field(pytree_node=False)

    @property
    def num_clients(self) -> int:
        return int(self.client_mask.shape[0])


def pad_to(array: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """Zero-pads `array` along `axis` to `length`."""
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, length - array.shape[axis])
    return np.pad(array, widths)


def stack_padded(
    arrays: Sequence[np.ndarray], length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks ragged arrays [n_k, ...] into [K, length, ...] plus a [K, length] mask."""
    length = max(len(a) for a in arrays) if length is None else length
    stacked = np.stack([pad_to(np.asarray(a), length) for a in arrays])
    mask = np.arange(length)[None, :] < np.array([len(a) for a in arrays])[:, None]
    return stacked, mask


def pad_clients(tree: Any, num_clients: int) -> Any:
    """Appends empty (all-zero, all-False) clients so the client axis has `num_clients` entries."""
    return jax.tree.map(lambda leaf: pad_to(np.asarray(leaf), num_clients), tree)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_device(tree: Any) -> Any:
    return jax.tree.map(jnp.asarray, tree)
