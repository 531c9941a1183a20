"""Dataset condensation with distribution matching (Zhao & Bilen, WACV 2023).

Synthetic images of class c are learned so that their mean embedding under a randomly
initialised encoder equals the mean embedding of real images of class c:
min_S E_net sum_c || mean_i enc(real_c,i) - mean_j enc(S_c,j) ||^2. No bi-level optimisation and
no network training: each iteration draws fresh networks and makes one SGD-momentum step on S
(lr 1.0 in the paper). The encoder is the model's submodule named "encoder" (the vision models'
feature extractor before the linear head).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.condense.augment import augment
from fedjax_syn.condense.core import (
    CondenseConfig,
    image_optimizer,
    init_nets,
    map_classes,
    real_batch,
)


def encode(model: nn.Module, params, x: jax.Array) -> jax.Array:
    """Output of the model's "encoder" submodule on x, [b, features]."""
    _, state = model.apply(
        params,
        x,
        capture_intermediates=lambda m, method: m.name == "encoder" and method == "__call__",
        mutable=["intermediates"],
    )
    return state["intermediates"]["encoder"]["__call__"][0]


def dm_match_loss(
    syn, nets, real_x, real_w, class_mask, key, *, config: CondenseConfig, model: nn.Module
) -> jax.Array:
    """Sum over present classes of the squared distance between the (weighted) mean real and mean
    synthetic embedding, averaged over the stacked networks. With DSA, a class's real and
    synthetic batch share one augmentation draw."""
    num_classes = syn.shape[0]
    net_keys = jax.random.split(key, jax.tree.leaves(nets)[0].shape[0])

    def one_net(params, k):
        def one_class(syn_c, real_c, w_c, kc):
            if config.dsa:
                real_c = augment(kc, real_c, config.dsa_config)
                syn_c = augment(kc, syn_c, config.dsa_config)
            real_emb = encode(model, params, real_c)
            real_mean = jnp.sum(w_c[:, None] * real_emb, 0) / jnp.maximum(jnp.sum(w_c), 1e-12)
            syn_mean = jnp.mean(encode(model, params, syn_c), axis=0)
            return jnp.sum((jax.lax.stop_gradient(real_mean) - syn_mean) ** 2)

        keys = jax.random.split(k, num_classes)
        d = map_classes(one_class, config, syn, real_x, real_w, keys)
        return jnp.sum(jnp.where(class_mask, d, 0.0))

    return jnp.mean(jax.vmap(one_net)(nets, net_keys))


def dm_iteration(syn, opt_state, x, y, mask, class_mask, key, *, config, model, params=None):
    """One distribution-matching iteration, on the arguments of `gm_iteration`; returns (syn,
    opt_state, loss before the update)."""
    k_nets, k_real, k_aug = jax.random.split(key, 3)
    nets = init_nets(k_nets, model, x[:1], config.num_nets, params)
    real_x, real_w = real_batch(k_real, x, y, mask, syn.shape[0], config.batch_real)
    loss, grads = jax.value_and_grad(dm_match_loss)(
        syn, nets, real_x, real_w, class_mask, k_aug, config=config, model=model
    )
    updates, opt_state = image_optimizer(config).update(grads, opt_state, syn)
    return optax.apply_updates(syn, updates), opt_state, loss
