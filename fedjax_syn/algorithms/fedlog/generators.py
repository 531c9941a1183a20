"""Prompt generators and their pretraining in setup round 0 (docs/fedlog.md, "The method").

A generator g turns a node's features into a pseudo-neighbour: in rounds >= 1 every global
synthetic node x~ of class c is joined to g_c(x~), so that the encoder meets it in a graph-like
context. The released code uses untrained, randomly initialised generators; the spec's default
pretrains them (`pretrain_generator`) to minimise, over the client's training nodes,

    MSE(g(x_v), mean of v's 1-hop neighbour features)            (nodes with neighbours only)
  + mean over networks of sum over encoder tensors of MSE(grad_real, grad_pairs)

the second term being `pair_gradients.matching_loss`. The released code redraws the networks
every epoch (`gen_fixed_networks=False` does too); the default keeps one bank for all epochs, so
its real-graph gradients are computed once.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedlog import pair_gradients
from fedjax_syn.algorithms.fedlog.config import FedLoGConfig
from fedjax_syn.core.graph import Graph, in_degree, mean_of_neighbours
from fedjax_syn.models.gnn import GNN


def _bias_init(fan_in: int):
    """PyTorch's nn.Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


# PyTorch's nn.Linear weight init (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)), so that
# "random" generators have the released code's statistics.
_TORCH_KERNEL = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class Generator(nn.Module):
    """Pseudo-neighbour generator F -> F: Dense+ReLU per hidden width, dropout, Dense(F) + tanh."""

    hidden: Sequence[int] = (256, 512)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = fan_in = x.shape[-1]
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=_TORCH_KERNEL, bias_init=_bias_init(fan_in))(x)
            x = nn.relu(x)
            fan_in = width
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(features, kernel_init=_TORCH_KERNEL, bias_init=_bias_init(fan_in))(x)
        return jnp.tanh(x)


def generator(config: FedLoGConfig) -> Generator:
    return Generator(config.gen_hidden, config.gen_dropout)


def init_generator(key: jax.Array, features: int, config: FedLoGConfig):
    return generator(config).init(key, jnp.zeros((1, features), jnp.float32))


def apply_generators(gen: Generator, gens, x: jax.Array, key: jax.Array | None = None):
    """Per-class generators (leading axis C) on x [C, m, F] -> prompts [C, m, F]; with `key`,
    with dropout (each class its own mask), else without."""
    if key is None:
        return jax.vmap(lambda params, xc: gen.apply(params, xc))(gens, x)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda params, xc, k: gen.apply(params, xc, train=True, rngs={"dropout": k}))(
        gens, x, keys
    )


def neighbour_mean(graph: Graph) -> tuple[jax.Array, jax.Array]:
    """Mean 1-hop neighbour features [N, F] (the graph's cache when it has one) and whether a node
    has a neighbour [N]."""
    mean = graph.neighbour_mean
    if mean is None:
        mean = mean_of_neighbours(graph, graph.x)
    return mean, in_degree(graph) > 0


def select_nodes(mask: jax.Array, key: jax.Array, cap: int) -> tuple[jax.Array, jax.Array]:
    """Indices [n] of up to `cap` training nodes (a random subset when there are more; cap 0:
    every padded slot) and which of them are real training nodes [n]."""
    n_pad = mask.shape[0]
    size = n_pad if cap == 0 else min(cap, n_pad)
    scores = jax.random.uniform(key, (n_pad,)) + 2.0 * (~mask)  # training nodes first
    idx = jnp.argsort(scores)[:size]
    return idx, mask[idx]


def generator_loss(
    gen_params,
    rng: jax.Array,
    *,
    gen: Generator,
    gnn: GNN,
    bank,
    x: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    target: jax.Array,
    has_neighbour: jax.Array,
) -> jax.Array:
    """Neighbour-feature MSE + gradient matching over the bank (`pair_gradients.matching_bank`),
    on the selected nodes x [n, F] (valid [n] marks real training nodes)."""
    prompts = gen.apply(gen_params, x, train=True, rngs={"dropout": rng})
    counted = (valid & has_neighbour).astype(x.dtype)
    per_node = jnp.mean((prompts - target) ** 2, axis=-1)
    feature = jnp.sum(per_node * counted) / jnp.maximum(jnp.sum(counted), 1.0)
    return feature + pair_gradients.matching_loss(gnn, bank, x, prompts, labels, valid)


def pretrain_generator(
    gen_params,
    gnn: GNN,
    graph: Graph,
    labels: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    bank_key: jax.Array,
    config: FedLoGConfig,
    pair_gradient: bool = True,
):
    """Generator pretraining of one client (pure; the engine vmaps it over clients).

    `bank_key` is shared by all clients: the networks are the same everywhere (and, vmapped,
    built once for all). Returns the trained generator parameters and the loss of every epoch
    [gen_epochs]. `pair_gradient=False` matches through the generic GNN on the pair graphs
    instead of the `PairBank` (same value).
    """
    gen = generator(config)
    select_key, epoch_key = jax.random.split(key)
    idx, valid = select_nodes(mask, select_key, config.gen_nodes)
    means, has_neighbour = neighbour_mean(graph)
    x, node_labels = graph.x[idx], labels[idx]

    def bank(epoch):
        k = bank_key if config.gen_fixed_networks else jax.random.fold_in(bank_key, epoch)
        return pair_gradients.matching_bank(
            gnn, k, config.gen_networks, graph, labels, mask, pair_gradient
        )

    fixed = bank(0) if config.gen_fixed_networks else None
    optimizer = optax.adam(config.gen_lr)

    def epoch(carry, i):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(generator_loss)(
            params,
            jax.random.fold_in(epoch_key, i),
            gen=gen,
            gnn=gnn,
            bank=fixed if fixed is not None else bank(i),
            x=x,
            labels=node_labels,
            valid=valid,
            target=means[idx],
            has_neighbour=has_neighbour[idx],
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(
        epoch, (gen_params, optimizer.init(gen_params)), jnp.arange(config.gen_epochs)
    )
    return params, losses
