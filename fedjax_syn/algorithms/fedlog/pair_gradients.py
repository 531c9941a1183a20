"""Setup round 0, the gradient-matching term of generator pretraining (docs/fedlog.md, "The
method"): random GraphSAGE+linear networks (the task's GNN), each one's encoder gradient of the
cross-entropy on the real training-time subgraph, matched (MSE per tensor) by its gradient on the
per-node pair graphs [x_v, g(x_v)] (centre embeddings, same labels). Networks run without dropout.

What does not depend on the generator is computed once: a network's real-graph gradient, and,
with `gen_fixed_networks` (default), the whole bank, drawn from the key all clients share.
Matching runs on a `PairBank`, the bank written for the pair graphs, with its first layer folded
into one wide network: docs/fedlog.md ("What is computed once") gives why and what it saves. It
equals the generic GNN on `prompt_pairs` (`generic_matching_loss`, kept for other GNN kinds;
tested).
"""

from typing import NamedTuple

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
    """A bank of M GraphSAGE networks laid out for gradient matching on pair graphs: the first
    layer folded ([F, M * H] kernels, [M * H] bias), the later layers and the heads stacked
    [M, ...], with the networks' encoder gradients on the real subgraph as computed."""

    first: dict  # {"root", "neighbour": [F, M * H], "bias": [M * H]}
    rest: list  # the later SAGE layers, stacked [M, ...]
    head: dict  # the linear heads, stacked [M, ...]
    real: dict  # the encoder gradients on the real subgraph, stacked [M, ...]


def _fold(layer: dict) -> dict:
    """A stacked SAGE layer ([M, F, H] kernels) -> [F, M * H], network m in columns m * H ...
    m * H + H - 1."""
    fold = lambda kernel: jnp.moveaxis(kernel, 0, 1).reshape(kernel.shape[1], -1)
    return {
        "root": fold(layer["root"]["kernel"]),
        "neighbour": fold(layer["neighbour"]["kernel"]),
        "bias": layer["bias"].reshape(-1),
    }


def _unfold(first: dict, m: int) -> dict:
    """The inverse of `_fold`, so that the pair gradients meet the real ones in their layout
    (no folded copy of the real gradients is kept)."""
    unfold = lambda kernel: jnp.moveaxis(kernel.reshape(kernel.shape[0], m, -1), 1, 0)
    return {
        "root": {"kernel": unfold(first["root"])},
        "neighbour": {"kernel": unfold(first["neighbour"])},
        "bias": first["bias"].reshape(m, -1),
    }


def pair_bank(nets, real) -> PairBank:
    """The stacked networks `nets` and their real-graph encoder gradients `real` as a bank."""
    layers = [nets["params"]["encoder"][f"SAGEConv_{i}"] for i in range(len(real))]
    return PairBank(_fold(layers[0]), layers[1:], nets["params"]["head"], real)


def pair_matching_loss(bank: PairBank, x: jax.Array, prompts: jax.Array, labels, weights):
    """Mean over the bank of `gradient_mse(real, encoder_gradient on prompt_pairs(x, prompts))`
    (centre rows): `jax.grad` of the bank's summed cross-entropy on the pair graphs, written for
    their structure. The products of x with the first layer do not depend on the generator; XLA
    hoists them out of the epoch loop, so they are taken once per bank. GraphSAGE only."""
    n, m = x.shape[0], bank.head["kernel"].shape[0]

    def sage(layer, node, partner):  # node, partner [n, M, H]; one network per middle index
        return (
            jnp.einsum("nmh,mho->nmo", node, layer["root"]["kernel"])
            + jnp.einsum("nmh,mho->nmo", partner, layer["neighbour"]["kernel"])
            + layer["bias"]
        )

    def bank_loss(first, rest):  # the sum over the bank of every network's cross-entropy
        centre = x @ first["root"] + prompts @ first["neighbour"] + first["bias"]
        partner = prompts @ first["root"] + x @ first["neighbour"] + first["bias"]
        centre, partner = centre.reshape(n, m, -1), partner.reshape(n, m, -1)
        for layer in rest:
            centre, partner = jax.nn.relu(centre), jax.nn.relu(partner)
            centre, partner = sage(layer, centre, partner), sage(layer, partner, centre)
        logits = jnp.einsum("nmh,mhc->nmc", centre, bank.head["kernel"]) + bank.head["bias"]
        losses = jax.vmap(nll, in_axes=(1, None, None))(jax.nn.log_softmax(logits), labels, weights)
        return jnp.sum(losses)

    first, rest = jax.grad(bank_loss, argnums=(0, 1))(bank.first, bank.rest)
    layers = [_unfold(first, m), *rest]
    return gradient_mse(bank.real, {f"SAGEConv_{i}": layer for i, layer in enumerate(layers)})


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


def matching_bank(gnn: GNN, key: jax.Array, num: int, graph: Graph, labels, mask, pair=True):
    """`num` networks from `key` with their real-graph gradients, as a `PairBank` (GraphSAGE,
    `pair`) or a (networks, real gradients) pair for `generic_matching_loss`."""
    nets = init_networks(gnn, key, num, graph.x.shape[-1])
    real = real_gradients(gnn, nets, graph, labels, mask)
    if pair and gnn.kind == "sage":
        return pair_bank(nets, real)
    return nets, real


def matching_loss(gnn: GNN, bank, x: jax.Array, prompts: jax.Array, labels, weights):
    """Gradient matching of the prompts for the nodes x [n, F] over a `matching_bank`."""
    if isinstance(bank, PairBank):
        return pair_matching_loss(bank, x, prompts, labels, weights)
    return generic_matching_loss(gnn, bank, x, prompts, labels, weights)
