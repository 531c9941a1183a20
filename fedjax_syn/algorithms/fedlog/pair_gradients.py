"""Setup round 0, the gradient-matching term of generator pretraining (docs/fedlog.md, "The
method"): random GraphSAGE+linear networks (the task's GNN), each one's encoder gradient of the
cross-entropy on the real training-time subgraph, matched (MSE per tensor) by its gradient on the
per-node pair graphs [x_v, g(x_v)] (centre embeddings, same labels). Networks run without dropout.

What does not depend on the generator is computed once: a network's real-graph gradient, and,
with `gen_fixed_networks` (default), the whole bank, drawn from the key all clients share.

Matching runs on a `PairBank`, the bank written for the pair graphs: every node's only neighbour
is its partner, so a GraphSAGE layer is centre W_root + partner W_neighbour + b (and the same for
the partner), with no edge gathers or scatters, and the last layer and the head run on the centre
rows only. The first layer, the only one as wide as the features, has the bank's kernels folded
side by side ([F, M * H] for M networks): each product with the generated features is one matrix
product for the whole bank, not M small ones. Equal to the generic GNN on `prompt_pairs`
(`generic_matching_loss`, kept for other GNN kinds; tested).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms.fedlog.model import prompt_pairs
from fedjax_syn.algorithms.fedlog.shared import nll
from fedjax_syn.core.graph import Graph, isolated_nodes
from fedjax_syn.models.gnn import GNN

_TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to (-2, 2)


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


def real_gradients(gnn: GNN, nets, graph: Graph, labels, mask):
    """Every network's encoder gradient on the real training-time subgraph (training nodes).

    One network at a time (`lax.map`), not vmapped: message passing over the bank at once would
    hold every network's per-edge messages together (20 x [edges, 128]; 2.6 GiB of the round-0
    program for three Amazon Photo clients against 0.8 GiB mapped). Computed once per client."""
    return jax.lax.map(lambda net: encoder_gradient(gnn, net, graph, labels, mask), nets)


def gradient_mse(g_real, g_syn) -> jax.Array:
    """Sum over the encoder's tensors of the mean squared difference (F.mse_loss per tensor)."""
    terms = jax.tree.map(lambda a, b: jnp.mean((a - b) ** 2), g_real, g_syn)
    return sum(jax.tree.leaves(terms), jnp.zeros(()))


class PairBank(NamedTuple):
    """A bank of GraphSAGE networks prepared for gradient matching on the pair graphs of fixed
    nodes x [n, F]: the first layer folded ([F, M * H] for M networks), its products with x
    (which do not depend on the generator) taken once."""

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
    (centre rows), on the bank written for the pair graphs. The first layer's gradients are
    formed from the loss's gradients with respect to its outputs (dW_root = x^T d_centre +
    prompts^T d_partner, and so on), with the whole bank in each product. GraphSAGE only."""
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


def generic_matching_loss(
    gnn: GNN, bank: tuple, x: jax.Array, prompts: jax.Array, labels, weights
) -> jax.Array:
    """The same mean over a (networks, real gradients) bank, through the generic GNN on
    `prompt_pairs` (any GNN kind; the reference for `pair_matching_loss`)."""

    def match(net, g_real):
        pairs = prompt_pairs(x, prompts)
        g_syn = encoder_gradient(gnn, net, pairs, labels, weights, rows=x.shape[0])
        return gradient_mse(g_real, g_syn)

    nets, real = bank
    return jnp.mean(jax.vmap(match)(nets, real))


def matching_bank(gnn: GNN, key: jax.Array, num: int, graph: Graph, labels, mask, x, pair=True):
    """`num` networks from `key` with their real-graph gradients, as a `PairBank` for the nodes x
    (GraphSAGE, `pair`) or a (networks, real gradients) pair for `generic_matching_loss`."""
    nets = init_networks(gnn, key, num, graph.x.shape[-1])
    real = real_gradients(gnn, nets, graph, labels, mask)
    if pair and gnn.kind == "sage":
        return pair_bank(nets, real, x)
    return nets, real


def matching_loss(gnn: GNN, bank, x: jax.Array, prompts: jax.Array, labels, weights):
    """Gradient matching of the prompts for the nodes x [n, F] over a `matching_bank`."""
    if isinstance(bank, PairBank):
        return pair_matching_loss(gnn, bank, x, prompts, labels, weights)
    return generic_matching_loss(gnn, bank, x, prompts, labels, weights)
