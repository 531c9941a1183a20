"""Minibatch loops that run only a client's own steps.

`engine.local.train` scans over every padded step and masks the ones past a client's data, so
every client pays for the largest padded size. Here the active steps are moved to the front and
run in a `lax.while_loop` that stops after the client's last one; under `vmap` the loop runs as
long as the busiest client needs (the others' states held by a select), so padding costs no extra
steps. The minibatches are the engine's (`local.minibatches`): same order, same drop-last rule
(FedLoG: floor(n / 64) full batches, one batch of all n nodes when n < 64).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
    order = jnp.argsort(~active, stable=True)  # active steps first, in their order
    idx, weight = idx[order], weight[order]
    num_steps = jnp.sum(active)

    def body(state):
        i, carry = state
        return i + 1, step(carry, (idx[i], weight[i], jax.random.fold_in(step_key, i)))

    start = (jnp.int32(0), carry)
    _, carry = jax.lax.while_loop(lambda state: state[0] < num_steps, body, start)
    return carry, num_steps


def fedlog_schedule(batch_size: int) -> local.Schedule:
    """One epoch of floor(n / b) full minibatches (one of all n when n < b)."""
    return local.Schedule(batch_size=batch_size, epochs=1, drop_last=True)
