"""FedLoG's prompt generators and their round-0 pretraining (docs/FEDLOG.md, step 5).

A generator g (MLP F -> 256 -> 512 -> F, ReLU, ReLU, dropout 0.5, tanh) turns a node's features
into a pseudo-neighbour. In rounds >= 1 every global synthetic node x~ of class c is joined to
g_c(x~), so the encoder meets it in a graph-like context. The released code uses untrained,
randomly initialised generators; FEDLOG.md's default pretrains them (`pretrain_generator`): for
100 epochs (Adam 1e-2, full batch over the client's training nodes) minimise

    MSE(g(x_v), mean of v's 1-hop neighbour features)            (nodes with neighbours only)
  + mean over networks of sum over encoder tensors of MSE(grad_real, grad_pairs)

where, for a randomly initialised GraphSAGE+linear network (the task's GNN), grad_real is the
gradient of the cross-entropy on the real training-time subgraph and grad_pairs the gradient on
the per-node graphs [x_v, g(x_v)] (centre embeddings, same labels). Gradients are taken with
respect to the encoder (as released) and the networks run without dropout.

What is computed once: with `gen_fixed_networks` (default) one bank of networks serves every epoch,
so each network's real-graph gradient -- everything that does not depend on the generator -- is
computed once per client instead of once per epoch; the bank is drawn from the key all clients
share, so it is built once for all clients. The released code redraws the networks every epoch
(`gen_fixed_networks=False` does too, recomputing the real gradients each epoch). Neighbour means
and the node subset are computed once as well. Gradient matching on the pair graphs is written
out for their structure (`PairBank`, `pair_matching_loss`: no edge gathers or scatters, the last
layer on the centre nodes only, the bank's first layers folded into one wide matrix, their products
with the real features taken once): on Cora K = 3, 106 instead of 186 GFLOP per epoch by XLA's
count, 1.5x faster than the generic GNN on the pair graphs.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedlog.config import FedLoGConfig
from fedjax_syn.algorithms.fedlog.model import nll, prompt_pairs
from fedjax_syn.core.graph import Graph, in_degree, isolated_nodes, mean_of_neighbours
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
_TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to (-2, 2)


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


def apply_generators(gen: Generator, gens, x: jax.Array) -> jax.Array:
    """Per-class generators (leading axis C) on x [C, m, F] -> prompts [C, m, F] (no dropout)."""
    return jax.vmap(lambda params, xc: gen.apply(params, xc))(gens, x)


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


def init_networks(gnn: GNN, key: jax.Array, num: int, features: int):
    """`num` freshly initialised GNNs (encoder + linear head), stacked on a leading axis.

    flax's default initialisation of the GNN's layers -- LeCun-normal kernels (N(0, 1/fan_in)
    truncated at two standard deviations) and zero biases -- drawn for every kernel of every
    network in one call: one random-number kernel to compile instead of one per tensor.
    """
    sample = isolated_nodes(jnp.zeros((1, features), jnp.float32))
    abstract = jax.eval_shape(lambda k: gnn.init({"params": k}, sample), key)
    leaves, treedef = jax.tree.flatten(abstract)
    sizes = [leaf.size if leaf.ndim == 2 else 0 for leaf in leaves]
    draws = jax.random.truncated_normal(key, -2.0, 2.0, (num, sum(sizes)), jnp.float32)
    out, offset = [], 0
    for leaf, size in zip(leaves, sizes):
        if leaf.ndim != 2:
            out.append(jnp.zeros((num, *leaf.shape), leaf.dtype))
            continue
        std = (1.0 / leaf.shape[0]) ** 0.5 / _TRUNCATED_STD
        out.append(draws[:, offset : offset + size].reshape(num, *leaf.shape) * std)
        offset += size
    return jax.tree.unflatten(treedef, out)


def encoder_gradient(gnn: GNN, net, graph: Graph, labels, weights, rows: int | None = None):
    """Gradient w.r.t. the encoder of the weighted cross-entropy of the first `rows` nodes
    (all when None), without dropout."""

    def loss(encoder):
        params = {"params": {**net["params"], "encoder": encoder}}
        logits = gnn.apply(params, graph)
        logits = logits if rows is None else logits[:rows]
        return nll(jax.nn.log_softmax(logits), labels, weights)

    return jax.grad(loss)(net["params"]["encoder"])


class PairBank(NamedTuple):
    """A bank of GraphSAGE networks prepared for gradient matching on the pair graphs of fixed
    nodes x [n, F]. The first layer is the only one as wide as the features, so its kernels are
    folded side by side ([F, M * H] for M networks): each product with the generated features is
    then one matrix product for the whole bank, not M small ones. Its products with the real
    features x do not depend on the generator and are taken once, here."""

    nets: Any  # the stacked networks [M, ...]
    real: Any  # their encoder gradients on the real subgraph [M, ...]
    root: jax.Array  # first-layer root kernels, folded [F, M * H]
    neighbour: jax.Array  # first-layer neighbour kernels, folded [F, M * H]
    x_root: jax.Array  # x @ root [n, M * H]
    x_neighbour: jax.Array  # x @ neighbour [n, M * H]
    real_root: jax.Array  # the real gradients of root, folded [F, M * H]
    real_neighbour: jax.Array  # the real gradients of neighbour, folded [F, M * H]


def _fold(kernels: jax.Array) -> jax.Array:
    """[M, F, H] -> [F, M * H], network m in columns m * H ... m * H + H - 1."""
    return jnp.moveaxis(kernels, 0, 1).reshape(kernels.shape[1], -1)


def pair_bank(nets, real, x: jax.Array) -> PairBank:
    first, real_first = nets["params"]["encoder"]["SAGEConv_0"], real["SAGEConv_0"]
    root, neighbour = _fold(first["root"]["kernel"]), _fold(first["neighbour"]["kernel"])
    real_root = _fold(real_first["root"]["kernel"])
    real_neighbour = _fold(real_first["neighbour"]["kernel"])
    return PairBank(nets, real, root, neighbour, x @ root, x @ neighbour, real_root, real_neighbour)


def pair_matching_loss(
    gnn: GNN, bank: PairBank, x: jax.Array, prompts: jax.Array, labels, weights
) -> jax.Array:
    """Mean over the bank of `gradient_mse(real, encoder_gradient on prompt_pairs(x, prompts))`
    (centre rows), written out for the pair graph. In it every node's only neighbour is its
    partner, so a GraphSAGE layer is centre' = centre W_root + partner W_neighbour + b (and the
    same for the partner), with no edge gathers or scatters, and the last layer and the head run
    on the centre rows only. The first layer's gradients are formed from the loss's gradients
    with respect to its outputs (dW_root = x^T d_centre + prompts^T d_partner, and so on), with
    the whole bank in each product. Equal to the generic path (tested); GraphSAGE only."""
    encoder, head = bank.nets["params"]["encoder"], bank.nets["params"]["head"]
    first, *rest = [encoder[f"SAGEConv_{i}"] for i in range(len(gnn.hidden))]
    n, m = x.shape[0], head["kernel"].shape[0]
    bias = first["bias"].reshape(-1)

    def sage(layer, node, partner):  # node, partner [n, M, H]; one network per middle index
        return (
            jnp.einsum("nmh,mho->nmo", node, layer["root"]["kernel"])
            + jnp.einsum("nmh,mho->nmo", partner, layer["neighbour"]["kernel"])
            + layer["bias"]
        )

    def network_loss(outputs, rest):  # sum over the bank of every network's cross-entropy
        centre, partner = (out.reshape(n, m, -1) for out in outputs)
        for layer in rest:
            centre, partner = jax.nn.relu(centre), jax.nn.relu(partner)
            centre, partner = sage(layer, centre, partner), sage(layer, partner, centre)
        logits = jnp.einsum("nmh,mhc->nmc", centre, head["kernel"]) + head["bias"]
        losses = jax.vmap(nll, in_axes=(1, None, None))(jax.nn.log_softmax(logits), labels, weights)
        return jnp.sum(losses)

    outputs = (
        bank.x_root + prompts @ bank.neighbour + bias,
        prompts @ bank.root + bank.x_neighbour + bias,
    )
    (d_centre, d_partner), d_rest = jax.grad(network_loss, argnums=(0, 1))(outputs, rest)
    real_first, *real_rest = [bank.real[f"SAGEConv_{i}"] for i in range(len(gnn.hidden))]
    mse = lambda got, want: jnp.mean((got - want) ** 2)
    loss = (
        mse(x.T @ d_centre + prompts.T @ d_partner, bank.real_root)
        + mse(prompts.T @ d_centre + x.T @ d_partner, bank.real_neighbour)
        + mse(jnp.sum(d_centre + d_partner, axis=0).reshape(m, -1), real_first["bias"])
    )
    for got, want in zip(jax.tree.leaves(d_rest), jax.tree.leaves(real_rest), strict=True):
        loss = loss + mse(got, want)
    return loss


def gradient_mse(g_real, g_syn) -> jax.Array:
    """Sum over the encoder's tensors of the mean squared difference (F.mse_loss per tensor)."""
    terms = jax.tree.map(lambda a, b: jnp.mean((a - b) ** 2), g_real, g_syn)
    return sum(jax.tree.leaves(terms), jnp.zeros(()))


def real_gradients(gnn: GNN, nets, graph: Graph, labels, mask):
    """Every network's encoder gradient on the real training-time subgraph (training nodes).

    One network at a time (`lax.map`), not vmapped: message passing over the bank at once would
    hold every network's per-edge messages together (20 x [edges, 128]; 2.6 GiB of the round-0
    program for three Amazon Photo clients against 0.8 GiB mapped). Computed once per client."""
    return jax.lax.map(lambda net: encoder_gradient(gnn, net, graph, labels, mask), nets)


def generator_loss(
    gen_params,
    rng: jax.Array,
    *,
    gen: Generator,
    gnn: GNN,
    bank: PairBank | tuple,
    x: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    target: jax.Array,
    has_neighbour: jax.Array,
) -> jax.Array:
    """Neighbour-feature MSE + gradient matching over the bank, on the selected nodes x [n, F]
    (valid [n] marks real training nodes). `bank` is a `PairBank` (GraphSAGE) or a (networks,
    real gradients) pair, matched through the generic GNN on the pair graphs (any kind; kept for
    other GNNs and to measure the difference)."""
    prompts = gen.apply(gen_params, x, train=True, rngs={"dropout": rng})
    counted = (valid & has_neighbour).astype(x.dtype)
    per_node = jnp.mean((prompts - target) ** 2, axis=-1)
    feature = jnp.sum(per_node * counted) / jnp.maximum(jnp.sum(counted), 1.0)
    if isinstance(bank, PairBank):
        return feature + pair_matching_loss(gnn, bank, x, prompts, labels, valid)

    def match(net, g_real):
        pairs = prompt_pairs(x, prompts)
        g_syn = encoder_gradient(gnn, net, pairs, labels, valid, rows=x.shape[0])
        return gradient_mse(g_real, g_syn)

    nets, real = bank
    return feature + jnp.mean(jax.vmap(match)(nets, real))


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
    """Round-0 generator pretraining of one client (pure; the engine vmaps it over clients).

    `bank_key` is shared by all clients: the networks are the same everywhere. Returns the trained
    generator parameters and the loss of every epoch [gen_epochs]. `pair_gradient=False` matches
    through the generic GNN on the pair graphs instead of `pair_matching_loss` (same value).
    """
    features = graph.x.shape[-1]
    gen = generator(config)
    select_key, epoch_key = jax.random.split(key)
    idx, valid = select_nodes(mask, select_key, config.gen_nodes)
    means, has_neighbour = neighbour_mean(graph)
    x, node_labels = graph.x[idx], labels[idx]

    def bank(epoch):
        k = bank_key if config.gen_fixed_networks else jax.random.fold_in(bank_key, epoch)
        nets = init_networks(gnn, k, config.gen_networks, features)
        real = real_gradients(gnn, nets, graph, labels, mask)
        if pair_gradient and gnn.kind == "sage":
            return pair_bank(nets, real, x)
        return nets, real

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
