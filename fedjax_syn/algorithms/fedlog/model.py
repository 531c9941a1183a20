"""Graph FedLoG's client model and its own losses (docs/fedlog.md, "The method").

X_head and X_tail hold C * s rows each, class c owning rows c*s .. c*s+s-1; branch b classifies a
node by logits_b = -||LN_b(h) - mu_b,c||^2 to its class prototypes mu_b,c. The degree gate
trusts the head branch (condensed from reliable high-degree nodes) on high-degree nodes and the
tail branch elsewhere; training mixes the branches' log-probabilities, prediction their
probabilities. The released code wraps the distance in EGNN-style layers whose updates never
reach the query nodes; they are inert and omitted.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_syn.core.graph import Graph, in_degree, isolated_nodes
from fedjax_syn.models.gnn import GNNEncoder


class FedLoGNet(nn.Module):
    """phi + one LayerNorm per branch. The encoder's parameters sit under "encoder", exactly as in
    `models.gnn.GNN`, so a pretrained GNN's encoder drops in unchanged."""

    kind: str = "sage"
    hidden: Sequence[int] = (128, 64)
    dropout: float = 0.5

    def setup(self):
        self.encoder = GNNEncoder(self.kind, tuple(self.hidden), self.dropout)
        self.ln_head = nn.LayerNorm(epsilon=1e-5)  # PyTorch's default epsilon
        self.ln_tail = nn.LayerNorm(epsilon=1e-5)

    def __call__(self, graph: Graph, train: bool = False) -> tuple[jax.Array, jax.Array]:
        return self.normalize(self.embed(graph, train))

    def embed(self, graph: Graph, train: bool = False) -> jax.Array:
        return self.encoder(graph, train)

    def normalize(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.ln_head(h), self.ln_tail(h)


def synthetic_graph(x: jax.Array, mode: str) -> Graph:
    """Synthetic nodes as a graph: isolated nodes (the spec), or each node its own only neighbour
    ("self_loop", the released code's identity adjacency: SAGE then adds W_n x to W_r x)."""
    if mode == "isolated":
        return isolated_nodes(x)
    n = x.shape[0]
    loops = jnp.arange(n, dtype=jnp.int32)
    return Graph(x, loops, loops, jnp.ones((n,), bool), jnp.ones((n,), bool))


def prompt_pairs(x: jax.Array, prompts: jax.Array) -> Graph:
    """Node i (0 <= i < M) joined both ways to its generated pseudo-neighbour M + i."""
    m = x.shape[0]
    centre = jnp.arange(m, dtype=jnp.int32)
    other = centre + m
    return Graph(
        jnp.concatenate([x, prompts]),
        jnp.concatenate([centre, other]),
        jnp.concatenate([other, centre]),
        jnp.ones((2 * m,), bool),
        jnp.ones((2 * m,), bool),
    )


def embed(net: FedLoGNet, params, graph: Graph, rng: jax.Array | None = None) -> jax.Array:
    """phi(graph) [N, D]; dropout on when `rng` is given."""
    rngs = {} if rng is None else {"dropout": rng}
    return net.apply(params, graph, rng is not None, rngs=rngs, method=FedLoGNet.embed)


def prototypes(
    net: FedLoGNet, params, x_syn: jax.Array, num_classes: int, mode: str, rng=None
) -> jax.Array:
    """mu [C, D]: the mean embedding of each class's s synthetic nodes."""
    h = embed(net, params, synthetic_graph(x_syn, mode), rng)
    return jnp.mean(h.reshape(num_classes, -1, h.shape[-1]), axis=1)


def distance_log_probs(z: jax.Array, protos: jax.Array) -> jax.Array:
    """log softmax over classes of -||z - mu_c||^2; z [n, D], protos [C, D] -> [n, C]."""
    sq = jnp.sum((z[:, None, :] - protos[None, :, :]) ** 2, axis=-1)
    return jax.nn.log_softmax(-sq, axis=-1)


def branch_log_probs(net: FedLoGNet, params, h: jax.Array, mu_head, mu_tail):
    """(log p_head, log p_tail) [n, C] of embeddings h [n, D]."""
    z_head, z_tail = net.apply(params, h, method=FedLoGNet.normalize)
    return distance_log_probs(z_head, mu_head), distance_log_probs(z_tail, mu_tail)


def gate_logit(degree: jax.Array, gamma: float) -> jax.Array:
    """alpha = sigmoid(gate_logit): about 1 above the head-degree threshold gamma."""
    return degree - (gamma + 1.0)


def train_log_probs(lp_head: jax.Array, lp_tail: jax.Array, logit: jax.Array) -> jax.Array:
    """alpha log p_head + (1 - alpha) log p_tail, the training combination."""
    alpha = jax.nn.sigmoid(logit)[:, None]
    return alpha * lp_head + (1.0 - alpha) * lp_tail


def predict_log_probs(lp_head: jax.Array, lp_tail: jax.Array, logit: jax.Array) -> jax.Array:
    """log(alpha p_head + (1 - alpha) p_tail), the prediction combination, computed stably."""
    log_alpha = jax.nn.log_sigmoid(logit)[:, None]
    log_beta = jax.nn.log_sigmoid(-logit)[:, None]
    return jnp.logaddexp(log_alpha + lp_head, log_beta + lp_tail)


def norm_loss(x_head: jax.Array, x_tail: jax.Array) -> jax.Array:
    """L_norm = 0.5 ||X_head||_F + 0.5 ||X_tail||_F (norms, not squared)."""
    return 0.5 * jnp.linalg.norm(x_head) + 0.5 * jnp.linalg.norm(x_tail)


def gated_predict(
    net: FedLoGNet,
    params,
    x_head: jax.Array,
    x_tail: jax.Array,
    graph: Graph,
    *,
    num_classes: int,
    gamma: float,
    synthetic_mode: str,
) -> jax.Array:
    """log p [N, C] of the gated prediction for every node of `graph` (evaluation: no dropout;
    degrees are those of the given graph)."""
    h = embed(net, params, graph)
    mu_head = prototypes(net, params, x_head, num_classes, synthetic_mode)
    mu_tail = prototypes(net, params, x_tail, num_classes, synthetic_mode)
    lp_head, lp_tail = branch_log_probs(net, params, h, mu_head, mu_tail)
    return predict_log_probs(lp_head, lp_tail, gate_logit(in_degree(graph), gamma))
