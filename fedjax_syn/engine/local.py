"""Local training over masked minibatches, for one client (the engine vmaps it).

Two schedules, both with static shapes so every client runs the same program:
- epochs: `epochs` passes over the client's examples in a fresh random order each pass, laid out
  as `epochs * ceil(n_pad / batch)` steps of which those past a client's own data are inactive.
- steps: `steps` minibatches drawn uniformly with replacement from the client's examples.
Padded examples get weight 0 and never affect a gradient.

By default only the active steps run (`active_steps`: a `lax.while_loop` that stops after the
client's last one; under `vmap` it runs as long as the busiest client needs), so a client padded to
the largest client's size pays nothing for its padding steps. `unroll=True` (or an unroll factor
> 1) instead scans every step, inactive ones masked to no-ops. The numbers are the same; on XLA:CPU
the unrolled scan is much faster for convolutional models, whose backward convolutions inside a
loop body are left to a slow generic kernel instead of the optimised one they get outside loops
(jax-ml/jax#12868); it costs compile time that grows with the number of steps. The ConvNet's
default im2col convolutions on CPU (`fedjax_syn/models/conv.py`) are matmuls and do not need it.
Measurements of both choices: BENCHMARKS.md, "Skipping padding steps" and "Engine round: vmapped
vs per-client loop".
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How many minibatches a client runs: `epochs` passes, or `steps` i.i.d. minibatches."""

    batch_size: int = 10
    epochs: int | None = 1
    steps: int | None = None
    drop_last: bool = False  # epochs: floor(n/b) full batches (one batch of all n when n < b)
    unroll: int | bool = 1  # 1: while_loop over active steps; True / k > 1: (un)rolled scan

    @property
    def scans(self) -> bool:
        """Whether every step is scanned (and unrolled) instead of looping over active ones."""
        return self.unroll is True or self.unroll > 1

    def num_steps(self, n_pad: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = -(-n_pad // self.batch_size)
        return self.epochs * per_epoch


def minibatches(mask: jax.Array, key: jax.Array, schedule: Schedule) -> tuple[jax.Array, ...]:
    """Index, weight and active arrays for every step: idx [S, B] int, weight [S, B], active [S]."""
    n_pad = mask.shape[0]
    b = schedule.batch_size
    n_real = jnp.sum(mask)
    if schedule.steps is not None:
        # The real examples' positions first (what follows is never drawn): a compaction, which
        # costs W2's round less than the stable sort it replaced (BENCHMARKS.md, W2).
        order = jnp.nonzero(mask, size=n_pad, fill_value=0)[0]
        draws = jax.random.randint(key, (schedule.steps, b), 0, jnp.maximum(n_real, 1))
        idx = order[draws]
        weight = jnp.broadcast_to(n_real > 0, idx.shape).astype(jnp.float32)
        return idx, weight, jnp.full((schedule.steps,), n_real > 0)
    per_epoch = -(-n_pad // b)
    keys = jax.random.split(key, schedule.epochs)
    # Real examples first, each epoch in its own random order; padding at the end.
    scores = jax.vmap(lambda k: jax.random.uniform(k, (n_pad,)))(keys) + (~mask) * 2.0
    perm = jnp.argsort(scores, axis=1)
    perm = jnp.pad(perm, ((0, 0), (0, per_epoch * b - n_pad)))
    position = jnp.arange(per_epoch * b)
    weight = (position < n_real).astype(jnp.float32)
    # drop_last: floor(n/b) full batches; a client with n < b still takes one step on all n.
    client_steps = jnp.maximum(n_real // b, 1) if schedule.drop_last else -(-n_real // b)
    active = jnp.arange(per_epoch) < client_steps
    idx = perm.reshape(schedule.epochs * per_epoch, b)
    weight = jnp.tile(weight.reshape(per_epoch, b), (schedule.epochs, 1))
    active = jnp.tile(active, schedule.epochs) & (n_real > 0)
    return idx, weight, active


def active_steps(
    step: Callable[[Any, Any], Any], carry: Any, xs: Any, active: jax.Array
) -> tuple[Any, jax.Array]:
    """carry <- step(carry, xs[i]) for every i with active[i], in order, in a `lax.while_loop`
    that stops after the last active step. Returns the final carry and the number of steps run.

    A batched (vmapped) loop runs until its busiest member is done, holding the others' carries,
    so each member ends exactly as it would alone.
    """
    order = jnp.nonzero(active, size=active.shape[0], fill_value=0)[0]  # active steps, in order
    xs = jax.tree.map(lambda a: a[order], xs)
    num_steps = jnp.sum(active)

    def body(state):
        i, carry = state
        return i + 1, step(carry, jax.tree.map(lambda a: a[i], xs))

    _, carry = jax.lax.while_loop(lambda state: state[0] < num_steps, body, (0, carry))
    return carry, num_steps


LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]  # (params, idx, w, rng)


def train(
    loss_fn: LossFn,
    params: Any,
    optimizer: optax.GradientTransformation,
    mask: jax.Array,
    key: jax.Array,
    schedule: Schedule,
    opt_state: Any = None,
) -> tuple[Any, Any, dict[str, jax.Array]]:
    """Runs the schedule; returns (params, opt_state, stats): stats holds the mean loss over the
    steps taken ("loss") and their number ("steps"), which a client reports as its metrics."""
    batch_key, step_key = jax.random.split(key)
    idx, weight, active = minibatches(mask, batch_key, schedule)
    step_keys = jax.random.split(step_key, idx.shape[0])
    opt_state = optimizer.init(params) if opt_state is None else opt_state

    def update(params, opt_state, b_idx, b_weight, b_key):
        loss, grads = jax.value_and_grad(loss_fn)(params, b_idx, b_weight, b_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    xs = (idx, weight, step_keys)
    if not schedule.scans:

        def step(carry, batch):
            params, opt_state, total = carry
            params, opt_state, loss = update(params, opt_state, *batch)
            return params, opt_state, total + loss

        (params, opt_state, total), num_steps = active_steps(
            step, (params, opt_state, jnp.zeros(())), xs, active
        )
        return params, opt_state, step_stats(total, num_steps)

    def masked_step(carry, batch):
        params, opt_state = carry
        *batch, b_active = batch
        new_params, new_opt_state, loss = update(params, opt_state, *batch)
        keep = lambda new, old: jnp.where(b_active, new, old)
        carry = (
            jax.tree.map(keep, new_params, params),
            jax.tree.map(keep, new_opt_state, opt_state),
        )
        return carry, loss * b_active

    (params, opt_state), losses = jax.lax.scan(
        masked_step, (params, opt_state), (*xs, active), unroll=schedule.unroll
    )
    return params, opt_state, step_stats(jnp.sum(losses), jnp.sum(active))


def step_stats(total_loss: jax.Array, num_steps: jax.Array) -> dict[str, jax.Array]:
    """A client's training metrics: mean loss over its steps, and how many it took."""
    steps = num_steps.astype(jnp.float32)
    return {"loss": total_loss / jnp.maximum(steps, 1.0), "steps": steps}
