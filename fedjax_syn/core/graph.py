"""The padded graph pytree shared by graph data, GNN models and condensation.

A graph is stored as a directed edge list (each undirected edge appears in both directions) padded
to fixed node and edge counts. Padded nodes and edges carry a False mask and never influence a real
node: message passing multiplies every message by its edge mask.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Graph(NamedTuple):
    """A padded graph. Shapes: x [N, F], senders/receivers/edge_mask [E], node_mask [N].

    `neighbour_mean` [N, F], when set, caches the mean of each node's real neighbours' features
    (`mean_of_neighbours(graph, graph.x)`): a GraphSAGE first layer then reads it instead of
    gathering and scattering every edge at every step, since x never changes while a model trains.
    It pays where edges are many (BENCHMARKS.md, "Caching the first layer's neighbour mean").
    Anything that changes x or the edges must drop it (`_replace(..., neighbour_mean=None)`).
    """

    x: jax.Array
    senders: jax.Array
    receivers: jax.Array
    edge_mask: jax.Array
    node_mask: jax.Array
    neighbour_mean: jax.Array | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[-2]


def in_degree(graph: Graph) -> jax.Array:
    """Number of real incoming edges per node, [N] float32."""
    weights = graph.edge_mask.astype(jnp.float32)
    return jax.ops.segment_sum(weights, graph.receivers, num_segments=graph.num_nodes)


def gather_scatter(values: jax.Array, graph: Graph, edge_weight: jax.Array) -> jax.Array:
    """sum over edges (s -> r) of edge_weight * values[s], per receiver r."""
    messages = values[graph.senders] * edge_weight[:, None]
    return jax.ops.segment_sum(messages, graph.receivers, num_segments=graph.num_nodes)


def mean_of_neighbours(graph: Graph, values: jax.Array) -> jax.Array:
    """Mean over each node's real in-neighbours of `values` [N, D] -> [N, D]; zeros without any."""
    summed = gather_scatter(values, graph, graph.edge_mask.astype(values.dtype))
    return summed / jnp.maximum(in_degree(graph), 1.0)[:, None]


def isolated_nodes(x: jax.Array) -> Graph:
    """A graph of isolated nodes (no edges): how synthetic nodes are embedded."""
    n = x.shape[0]
    empty = jnp.zeros((0,), jnp.int32)
    return Graph(x, empty, empty, jnp.zeros((0,), bool), jnp.ones((n,), bool))
