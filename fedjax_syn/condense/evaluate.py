"""Evaluating a condensed set the way the condensation papers do: train freshly initialised
networks on the small set only, then measure test accuracy (Zhao et al., ICLR 2021: SGD momentum
0.9, lr 0.01 divided by 10 halfway, weight decay 5e-4, batch 256; 300 epochs there, 1000 in the
later papers). The networks are trained together, vmapped, in one jitted function. Compare
against the same number of randomly chosen real images per class (`random_subset`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_syn.condense.augment import DSAConfig, augment_each
from fedjax_syn.condense.core import num_batches, weighted_cross_entropy
from fedjax_syn.core.errors import check


def random_subset(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, num_classes: int, ipc: int
) -> tuple[np.ndarray, np.ndarray]:
    """ipc real examples per class drawn without replacement (all of a class's examples when it
    has fewer), class-major: the baseline a condensed set must beat."""
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        chosen.append(rng.choice(members, size=min(ipc, members.size), replace=False))
    idx = np.concatenate(chosen)
    return x[idx], y[idx]


@functools.partial(
    jax.jit,
    static_argnames=("model", "num_nets", "epochs", "batch_size", "lr", "momentum", "wd", "dsa"),
)
def train_networks(
    key: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    model: nn.Module,
    num_nets: int,
    epochs: int,
    batch_size: int = 256,
    lr: float = 0.01,
    momentum: float = 0.9,
    wd: float = 5e-4,
    dsa: DSAConfig | None = None,
):
    """Trains `num_nets` fresh networks on (x, y); returns their stacked parameters."""
    n = x.shape[0]
    batches, size = num_batches(n, batch_size)
    padded = batches * size
    schedule = optax.piecewise_constant_schedule(lr, {batches * (epochs // 2): 0.1})
    optimizer = optax.chain(optax.add_decayed_weights(wd), optax.sgd(schedule, momentum=momentum))

    def step(carry, batch):
        params, opt_state = carry
        idx, w, k = batch
        xb = augment_each(k, x[idx], dsa) if dsa is not None else x[idx]
        grads = jax.grad(weighted_cross_entropy)(params, model, xb, y[idx], w)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, k):
        k_perm, k_aug = jax.random.split(k)
        order = jnp.pad(jax.random.permutation(k_perm, n), (0, padded - n)).reshape(batches, size)
        weights = (jnp.arange(padded) < n).reshape(batches, size).astype(x.dtype)
        carry, _ = jax.lax.scan(step, carry, (order, weights, jax.random.split(k_aug, batches)))
        return carry, None

    def one_net(k):
        k_init, k_train = jax.random.split(k)
        params = model.init(k_init, x[:1])
        carry = (params, optimizer.init(params))
        (params, _), _ = jax.lax.scan(epoch, carry, jax.random.split(k_train, epochs))
        return params

    return jax.vmap(one_net)(jax.random.split(key, num_nets))


@functools.partial(jax.jit, static_argnames=("model",))
def _correct(nets, x, y, *, model: nn.Module) -> jax.Array:
    logits = jax.vmap(lambda p: model.apply(p, x))(nets)
    return jnp.sum(jnp.argmax(logits, -1) == y[None, :], axis=1)


def accuracies(
    nets, model: nn.Module, x: np.ndarray, y: np.ndarray, chunk: int = 500
) -> np.ndarray:
    """Test accuracy of every stacked network, [num_nets], evaluated in chunks of the test set."""
    correct = 0
    for start in range(0, len(y), chunk):
        xb = jnp.asarray(x[start : start + chunk])
        correct = correct + _correct(nets, xb, jnp.asarray(y[start : start + chunk]), model=model)
    return np.asarray(correct) / len(y)


def evaluate_synthetic(
    key: jax.Array,
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_nets: int = 5,
    epochs: int = 300,
    batch_size: int = 256,
    lr: float = 0.01,
    dsa: DSAConfig | None = None,
) -> np.ndarray:
    """Test accuracies [num_nets] of fresh networks trained on (train_x, train_y) only. With `dsa`,
    training images get independent DSA augmentations (the DSA papers' evaluation)."""
    check(len(train_y) > 0, "cannot evaluate an empty training set")
    check(num_nets >= 1 and epochs >= 1, f"need num_nets, epochs >= 1: {num_nets}, {epochs}")
    nets = train_networks(
        key,
        jnp.asarray(train_x, jnp.float32),
        jnp.asarray(train_y, jnp.int32),
        model=model,
        num_nets=num_nets,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        dsa=dsa,
    )
    return accuracies(nets, model, test_x, test_y)
