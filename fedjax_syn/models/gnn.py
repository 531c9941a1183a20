"""Graph neural networks over padded edge lists (`fedjax_syn.core.graph.Graph`).

Message passing is `jax.ops.segment_sum` over the edge list, every message multiplied by its edge
mask, so padded edges and nodes never reach a real node. No dense adjacency is ever formed.
Layers transform features before aggregating (aggregation is linear, so mean(X) W = mean(X W)),
which keeps the per-edge work at the hidden width instead of the input width. A GraphSAGE first
layer on a graph whose `neighbour_mean` is cached reads mean(X) from it and does no per-edge work.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from fedjax_syn.core.graph import Graph, gather_scatter, in_degree, mean_of_neighbours


class GCNConv(nn.Module):
    """Kipf & Welling: D^-1/2 (A + I) D^-1/2 X W + b, degrees counted with the self-loop."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, graph: Graph) -> jax.Array:
        h = nn.Dense(self.features, use_bias=False)(x)
        deg = in_degree(graph) + 1.0
        inv_sqrt = jax.lax.rsqrt(deg)
        weight = graph.edge_mask * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers]
        out = gather_scatter(h, graph, weight) + h / deg[:, None]
        return out + self.param("bias", nn.initializers.zeros, (self.features,))


class SAGEConv(nn.Module):
    """Hamilton et al., mean aggregation with root weight: W_r x_v + W_n mean_{u in N(v)} x_u + b.
    A node without neighbours aggregates zeros. `neighbour_mean` [N, F], when given, is the mean
    of x over each node's neighbours, computed once instead of at every call."""

    features: int

    @nn.compact
    def __call__(
        self, x: jax.Array, graph: Graph, neighbour_mean: jax.Array | None = None
    ) -> jax.Array:
        root = nn.Dense(self.features, use_bias=False, name="root")(x)
        neighbour = nn.Dense(self.features, use_bias=False, name="neighbour")
        if neighbour_mean is None:
            mean = mean_of_neighbours(graph, neighbour(x))
        else:
            mean = neighbour(neighbour_mean)
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
            if i == 0 and self.kind == "sage" and graph.neighbour_mean is not None:
                x = conv(width)(x, graph, graph.neighbour_mean)
            else:
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
