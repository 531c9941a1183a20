"""Dataset condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021; DSA variant:
Zhao & Bilen, ICML 2021).

Synthetic images S_c of class c are learned so that, for networks met along a training
trajectory, the gradient of the loss on S_c points where the gradient on real images of class c
points: min_S sum_c D(grad L(real_c), grad L(S_c)). One iteration is one jitted function of fresh
networks, `outer_loop` matching steps and `inner_loop` training epochs between them
(`CondenseConfig`; docs/condense.md, "Loops").
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.condense.augment import augment, augment_each
from fedjax_syn.condense.core import (
    CondenseConfig,
    image_optimizer,
    init_nets,
    map_classes,
    num_batches,
    real_batch,
    weighted_cross_entropy,
)
from fedjax_syn.condense.distance import gradient_distance


def class_distances(
    params, syn, real_x, real_w, key, *, config: CondenseConfig, model: nn.Module
) -> jax.Array:
    """Per-class gradient distance [C] for one network. syn [C, ipc, ...], real_x [C, b, ...],
    real_w [C, b]. With DSA, a class's real and synthetic batch share one augmentation draw."""
    num_classes = syn.shape[0]

    def one_class(syn_c, real_c, w_c, label, k):
        if config.dsa:
            real_c = augment(k, real_c, config.dsa_config)
            syn_c = augment(k, syn_c, config.dsa_config)
        grad = jax.grad(weighted_cross_entropy)
        g_real = grad(params, model, real_c, jnp.full(real_c.shape[:1], label), w_c)
        ones = jnp.ones(syn_c.shape[:1], syn_c.dtype)
        g_syn = grad(params, model, syn_c, jnp.full(syn_c.shape[:1], label), ones)
        return gradient_distance(jax.lax.stop_gradient(g_real), g_syn, config.distance)

    labels = jnp.arange(num_classes)
    keys = jax.random.split(key, num_classes)
    return map_classes(one_class, config, syn, real_x, real_w, labels, keys)


def match_loss(
    syn, nets, real_x, real_w, class_mask, key, *, config: CondenseConfig, model: nn.Module
) -> jax.Array:
    """Sum over present classes of the gradient distance, averaged over the stacked networks."""
    keys = jax.random.split(key, jax.tree.leaves(nets)[0].shape[0])

    def one_net(params, k):
        d = class_distances(params, syn, real_x, real_w, k, config=config, model=model)
        return jnp.sum(jnp.where(class_mask, d, 0.0))

    return jnp.mean(jax.vmap(one_net)(nets, keys))


def train_on_synthetic(nets, syn, class_mask, key, *, config: CondenseConfig, model: nn.Module):
    """inner_loop epochs of plain SGD (lr_net) of every stacked network on the synthetic set,
    shuffled minibatches of batch_train; rows of absent classes carry weight 0. With DSA, each
    image gets its own augmentation draw, as in the released code."""
    _, inner = config.loops
    num_classes, ipc = syn.shape[:2]
    n = num_classes * ipc
    x = syn.reshape((n, *syn.shape[2:]))
    y = jnp.repeat(jnp.arange(num_classes), ipc)
    valid = jnp.repeat(class_mask, ipc)
    batches, size = num_batches(n, config.batch_train)
    padded = batches * size

    def step(params, batch):
        idx, w, k = batch
        xb = augment_each(k, x[idx], config.dsa_config) if config.dsa else x[idx]
        grads = jax.grad(weighted_cross_entropy)(params, model, xb, y[idx], w)
        return jax.tree.map(lambda p, g: p - config.lr_net * g, params, grads), None

    def epoch(params, k):
        k_order, k_aug = jax.random.split(k)
        order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_order, (n,)), 2.0))
        order = jnp.pad(order, (0, padded - n)).reshape(batches, size)
        weights = (jnp.arange(padded) < n).reshape(batches, size) & valid[order]
        keys = jax.random.split(k_aug, batches)
        params, _ = jax.lax.scan(step, params, (order, weights.astype(x.dtype), keys))
        return params, None

    def one_net(params, k):
        params, _ = jax.lax.scan(epoch, params, jax.random.split(k, inner))
        return params

    keys = jax.random.split(key, jax.tree.leaves(nets)[0].shape[0])
    return jax.vmap(one_net)(nets, keys)


def _loss_on_fresh_batch(syn, nets, key, x, y, mask, class_mask, *, config, model) -> jax.Array:
    """match_loss on real batches drawn with `key`."""
    k_real, k_aug = jax.random.split(key)
    real_x, real_w = real_batch(k_real, x, y, mask, syn.shape[0], config.batch_real)
    return match_loss(syn, nets, real_x, real_w, class_mask, k_aug, config=config, model=model)


def gm_iteration(
    syn: jax.Array,
    opt_state,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    class_mask: jax.Array,
    key: jax.Array,
    *,
    config: CondenseConfig,
    model: nn.Module,
    params=None,
):
    """One gradient-matching iteration; returns (syn, opt_state, mean matching loss over the
    iteration's outer steps, each measured before its update)."""
    outer, _ = config.loops
    optimizer = image_optimizer(config)
    k_nets, k_steps = jax.random.split(key)
    steps = jax.vmap(jax.random.split)(jax.random.split(k_steps, outer))  # [outer, (train, match)]
    nets = init_nets(k_nets, model, x[:1], config.num_nets, params)

    def outer_step(carry, step):
        syn, opt_state, nets = carry
        i, k_t, k_m = step
        # Train between matching steps only (not before the first): a real conditional, since
        # the step index is never batched, not even when clients are vmapped.
        nets = jax.lax.cond(
            i > 0,
            lambda n: train_on_synthetic(n, syn, class_mask, k_t, config=config, model=model),
            lambda n: n,
            nets,
        )
        loss, grads = jax.value_and_grad(_loss_on_fresh_batch)(
            syn, nets, k_m, x, y, mask, class_mask, config=config, model=model
        )
        updates, opt_state = optimizer.update(grads, opt_state, syn)
        return (optax.apply_updates(syn, updates), opt_state, nets), loss

    (syn, opt_state, _), losses = jax.lax.scan(
        outer_step, (syn, opt_state, nets), (jnp.arange(outer), steps[:, 0], steps[:, 1])
    )
    return syn, opt_state, jnp.mean(losses)
