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
and the node subset are computed once as well. The pair graphs' gradients are written out for
their structure (`pair_encoder_gradient`: no edge gathers or scatters, the last layer on the centre
nodes only): on Cora K = 3, 107 instead of 186 GFLOP per epoch by XLA's count, 1.15x faster.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedlog.config import FedLoGConfig
from fedjax_syn.algorithms.fedlog.model import nll, prompt_pairs
from fedjax_syn.graph import Graph, in_degree, isolated_nodes
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
    """Mean 1-hop neighbour features [N, F] and whether a node has a neighbour [N]."""
    weight = graph.edge_mask.astype(graph.x.dtype)[:, None]
    summed = jax.ops.segment_sum(
        graph.x[graph.senders] * weight, graph.receivers, num_segments=graph.num_nodes
    )
    degree = in_degree(graph)
    return summed / jnp.maximum(degree, 1.0)[:, None], degree > 0


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


def pair_encoder_gradient(gnn: GNN, net, x: jax.Array, prompts: jax.Array, labels, weights):
    """`encoder_gradient` on `prompt_pairs(x, prompts)` for the centre rows, written out for the
    pair graph: in it every node's only neighbour is its partner, so a GraphSAGE layer is
    centre' = centre W_root + partner W_neighbour + b (and the same for the partner), with no
    edge gathers or scatters, and the last layer and head run on the centre rows only. Same
    result as the generic path (tested); other GNN kinds take the generic path."""
    if gnn.kind != "sage":
        return encoder_gradient(gnn, net, prompt_pairs(x, prompts), labels, weights, x.shape[0])
    head = net["params"]["head"]

    def sage(layer, node, partner):
        return (
            node @ layer["root"]["kernel"] + partner @ layer["neighbour"]["kernel"] + layer["bias"]
        )

    def loss(encoder):
        *hidden, last = [encoder[f"SAGEConv_{i}"] for i in range(len(gnn.hidden))]
        centre, partner = x, prompts
        for layer in hidden:
            centre, partner = (
                jax.nn.relu(sage(layer, centre, partner)),
                jax.nn.relu(sage(layer, partner, centre)),
            )
        logits = sage(last, centre, partner) @ head["kernel"] + head["bias"]
        return nll(jax.nn.log_softmax(logits), labels, weights)

    return jax.grad(loss)(net["params"]["encoder"])


def gradient_mse(g_real, g_syn) -> jax.Array:
    """Sum over the encoder's tensors of the mean squared difference (F.mse_loss per tensor)."""
    terms = jax.tree.map(lambda a, b: jnp.mean((a - b) ** 2), g_real, g_syn)
    return sum(jax.tree.leaves(terms), jnp.zeros(()))


def real_gradients(gnn: GNN, nets, graph: Graph, labels, mask):
    """Every network's encoder gradient on the real training-time subgraph (training nodes)."""
    return jax.vmap(lambda net: encoder_gradient(gnn, net, graph, labels, mask))(nets)


def generator_loss(
    gen_params,
    rng: jax.Array,
    *,
    gen: Generator,
    gnn: GNN,
    nets,
    real,
    x: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    target: jax.Array,
    has_neighbour: jax.Array,
    pair_gradient: bool = True,
) -> jax.Array:
    """Neighbour-feature MSE + gradient matching over the stacked networks, on the selected nodes
    x [n, F] (valid [n] marks real training nodes). `pair_gradient=False` differentiates the
    generic GNN on the pair graph instead (same value; kept to measure the difference)."""
    prompts = gen.apply(gen_params, x, train=True, rngs={"dropout": rng})
    counted = (valid & has_neighbour).astype(x.dtype)
    per_node = jnp.mean((prompts - target) ** 2, axis=-1)
    feature = jnp.sum(per_node * counted) / jnp.maximum(jnp.sum(counted), 1.0)

    def match(net, g_real):
        if pair_gradient:
            g_syn = pair_encoder_gradient(gnn, net, x, prompts, labels, valid)
        else:
            pairs = prompt_pairs(x, prompts)
            g_syn = encoder_gradient(gnn, net, pairs, labels, valid, rows=x.shape[0])
        return gradient_mse(g_real, g_syn)

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
    generator parameters and the loss of every epoch [gen_epochs].
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
        return nets, real_gradients(gnn, nets, graph, labels, mask)

    fixed = bank(0) if config.gen_fixed_networks else None
    optimizer = optax.adam(config.gen_lr)

    def epoch(carry, i):
        params, opt_state = carry
        nets, real = fixed if fixed is not None else bank(i)
        loss, grads = jax.value_and_grad(generator_loss)(
            params,
            jax.random.fold_in(epoch_key, i),
            gen=gen,
            gnn=gnn,
            nets=nets,
            real=real,
            x=x,
            labels=node_labels,
            valid=valid,
            target=means[idx],
            has_neighbour=has_neighbour[idx],
            pair_gradient=pair_gradient,
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(
        epoch, (gen_params, optimizer.init(gen_params)), jnp.arange(config.gen_epochs)
    )
    return params, losses
