"""FedLoG's minibatch loops: only a client's own steps run (`engine.local.active_steps`).

The minibatches are the engine's (`local.minibatches`): same order, same drop-last rule (FedLoG:
floor(n / 64) full batches, one batch of all n nodes when n < 64).
"""

from collections.abc import Callable
from typing import Any

import jax

from fedjax_syn.engine import local


def run_steps(
    step: Callable[[Any, tuple], Any],
    carry: Any,
    mask: jax.Array,
    key: jax.Array,
    schedule: local.Schedule,
) -> tuple[Any, jax.Array]:
    """carry <- step(carry, (idx [b], weight [b], key)) for each active minibatch of `schedule`,
    in order. Returns the final carry and the number of steps taken."""
    batch_key, step_key = jax.random.split(key)
    idx, weight, active = local.minibatches(mask, batch_key, schedule)
    keys = jax.random.split(step_key, idx.shape[0])
    return local.active_steps(step, carry, (idx, weight, keys), active)


def fedlog_schedule(batch_size: int) -> local.Schedule:
    """One epoch of floor(n / b) full minibatches (one of all n when n < b)."""
    return local.Schedule(batch_size=batch_size, epochs=1, drop_last=True)
