"""Setup round 0, first part: encoder pretraining with early stopping (docs/fedlog.md, "The
method").

phi + a linear head (the task's GNN) are trained with cross-entropy for at most `pretrain_epochs`
epochs, stopping after `patience` epochs without a new best VALIDATION accuracy (ties count as new
bests, as released) and restoring the best state. The released code stops on test accuracy (a
leak) and keeps the last state; `restore_best=False` gives the latter.

The epoch loop is a `lax.while_loop`; under `vmap` over clients it runs until the last client
stops, the others' states held, so each client stops exactly as it would alone.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedlog.config import FedLoGConfig, epoch_schedule, model_optimizer
from fedjax_syn.algorithms.fedlog.shared import run_steps
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.engine.task import Task


class Pretrained(NamedTuple):
    params: Any  # the GNN's parameters (encoder + head) at the best (or last) epoch
    best_val: jax.Array  # best validation accuracy
    epochs: jax.Array  # epochs run


def pretrain_encoder(
    task: Task, params, data: ClientData, key: jax.Array, config: FedLoGConfig
) -> Pretrained:
    """Trains `params` (a `GNN`'s) on one client with early stopping on validation accuracy."""
    optimizer, schedule = model_optimizer(config), epoch_schedule(config)

    def step(carry, batch):
        params, opt_state = carry
        idx, weight, rng = batch
        grads = jax.grad(task.loss)(params, data.inputs, data.labels, idx, weight, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def epoch(state):
        i, params, opt_state, best, best_val, wait = state
        k = jax.random.fold_in(key, i)
        (params, opt_state), _ = run_steps(step, (params, opt_state), data.mask, k, schedule)
        correct = jnp.argmax(task.logits(params, data.inputs), axis=-1) == data.labels
        acc = jnp.sum(correct & data.val_mask) / jnp.maximum(jnp.sum(data.val_mask), 1)
        better = acc >= best_val
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
        wait = jnp.where(better, 0, wait + 1)
        return i + 1, params, opt_state, best, jnp.maximum(acc, best_val), wait

    def running(state):
        i, *_, wait = state
        return (i < config.pretrain_epochs) & (wait < config.patience)

    zero = jnp.int32(0)
    start = (zero, params, optimizer.init(params), params, jnp.float32(-1.0), zero)
    epochs, last, _, best, best_val, _ = jax.lax.while_loop(running, epoch, start)
    return Pretrained(best if config.restore_best else last, best_val, epochs)
