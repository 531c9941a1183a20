"""Graph neural networks over padded edge lists (`fedjax_syn.graph.Graph`).

Message passing is `jax.ops.segment_sum` over the edge list, every message multiplied by its edge
mask, so padded edges and nodes never reach a real node. No dense adjacency is ever formed.
Both layers transform features before aggregating (aggregation is linear, so mean(X) W = mean(X W)),
which keeps the per-edge work at the hidden width instead of the input width.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_syn.graph import Graph, in_degree


def _gather_scatter(values: jax.Array, graph: Graph, edge_weight: jax.Array) -> jax.Array:
    """sum over edges (s -> r) of edge_weight * values[s], per receiver r."""
    messages = values[graph.senders] * edge_weight[:, None]
    return jax.ops.segment_sum(messages, graph.receivers, num_segments=graph.num_nodes)


class GCNConv(nn.Module):
    """Kipf & Welling: D^-1/2 (A + I) D^-1/2 X W + b, degrees counted with the self-loop."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, graph: Graph) -> jax.Array:
        h = nn.Dense(self.features, use_bias=False)(x)
        deg = in_degree(graph) + 1.0
        inv_sqrt = jax.lax.rsqrt(deg)
        weight = graph.edge_mask * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers]
        out = _gather_scatter(h, graph, weight) + h / deg[:, None]
        return out + self.param("bias", nn.initializers.zeros, (self.features,))


class SAGEConv(nn.Module):
    """Hamilton et al., mean aggregation with root weight: W_r x_v + W_n mean_{u in N(v)} x_u + b.
    A node without neighbours aggregates zeros."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, graph: Graph) -> jax.Array:
        root = nn.Dense(self.features, use_bias=False, name="root")(x)
        neigh = nn.Dense(self.features, use_bias=False, name="neighbour")(x)
        summed = _gather_scatter(neigh, graph, graph.edge_mask.astype(x.dtype))
        mean = summed / jnp.maximum(in_degree(graph), 1.0)[:, None]
        return root + mean + self.param("bias", nn.initializers.zeros, (self.features,))


_CONVS = {"gcn": GCNConv, "sage": SAGEConv}


class GNNEncoder(nn.Module):
    """Stacked graph convolutions, ReLU + dropout between layers, none after the last."""

    kind: str = "sage"
    hidden: Sequence[int] = (128, 64)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, graph: Graph, train: bool = False) -> jax.Array:
        conv = _CONVS[self.kind]
        x = graph.x
        for i, width in enumerate(self.hidden):
            x = conv(width)(x, graph)
            if i < len(self.hidden) - 1:
                x = nn.relu(x)
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class GNN(nn.Module):
    """Node classifier: GNN encoder + linear head. Returns logits for every node [N, C]."""

    num_classes: int
    kind: str = "sage"
    hidden: Sequence[int] = (128, 64)
    dropout: float = 0.5

    @nn.compact
    def __call__(self, graph: Graph, train: bool = False) -> jax.Array:
        h = GNNEncoder(self.kind, self.hidden, self.dropout, name="encoder")(graph, train)
        return nn.Dense(self.num_classes, name="head")(h)
