"""GCN and GraphSAGE over padded edge lists against a dense-adjacency reference written in numpy.

The reference builds A[r, s] = number of real edges s -> r and applies the textbook formulas:
GCN (Kipf & Welling, ICLR 2017) D^-1/2 (A + I) D^-1/2 X W + b with D the row sums of A + I;
GraphSAGE-mean (Hamilton et al., NeurIPS 2017) X W_r + (A X / max(deg, 1)) W_n + b.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.core.graph import Graph, isolated_nodes, mean_of_neighbours
from fedjax_syn.models.gnn import GNN, GCNConv, SAGEConv

NUM_NODES, FEATURES, CLASSES = 9, 6, 3
ISOLATED = NUM_NODES - 1  # a real node without any real edge


def random_graph(seed: int, directed: bool) -> Graph:
    """Random edges among nodes 0..7 (node 8 stays isolated); undirected graphs list both ways."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, ISOLATED, size=14)
    dst = rng.integers(0, ISOLATED, size=14)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    x = rng.normal(size=(NUM_NODES, FEATURES)).astype(np.float32)
    return Graph(
        jnp.asarray(x),
        jnp.asarray(src, jnp.int32),
        jnp.asarray(dst, jnp.int32),
        jnp.ones(len(src), bool),
        jnp.ones(NUM_NODES, bool),
    )


def pad_graph(graph: Graph, seed: int, extra_nodes: int = 3) -> Graph:
    """Appends nodes with large random features and masked edges: padded -> real, real -> padded,
    real -> real (also into the isolated node) and padded -> padded."""
    rng = np.random.default_rng(seed)
    n = graph.num_nodes
    pad_x = 100 * rng.normal(size=(extra_nodes, FEATURES)).astype(np.float32)
    pads = np.arange(n, n + extra_nodes)
    src = np.array([pads[0], pads[1], 0, 2, 3, pads[2], pads[0], 1])
    dst = np.array([0, ISOLATED, pads[1], ISOLATED, 1, pads[0], 4, 5])
    return Graph(
        jnp.concatenate([graph.x, pad_x]),
        jnp.concatenate([graph.senders, jnp.asarray(src, jnp.int32)]),
        jnp.concatenate([graph.receivers, jnp.asarray(dst, jnp.int32)]),
        jnp.concatenate([graph.edge_mask, jnp.zeros(len(src), bool)]),
        jnp.concatenate([graph.node_mask, jnp.zeros(extra_nodes, bool)]),
    )


def dense_adjacency(graph: Graph) -> np.ndarray:
    n = graph.num_nodes
    mask = np.asarray(graph.edge_mask)
    adj = np.zeros((n, n))
    np.add.at(adj, (np.asarray(graph.receivers)[mask], np.asarray(graph.senders)[mask]), 1.0)
    return adj


def gcn_reference(x, adj, kernel, bias):
    a_hat = adj + np.eye(len(adj))
    d = a_hat.sum(axis=1) ** -0.5
    return (d[:, None] * a_hat * d[None, :]) @ x @ kernel + bias


def sage_reference(x, adj, root, neighbour, bias):
    mean = adj @ x / np.maximum(adj.sum(axis=1), 1.0)[:, None]
    return x @ root + mean @ neighbour + bias


def conv_reference(kind: str, x, adj, p) -> np.ndarray:
    if kind == "gcn":
        return gcn_reference(x, adj, p["Dense_0"]["kernel"], p["bias"])
    return sage_reference(x, adj, p["root"]["kernel"], p["neighbour"]["kernel"], p["bias"])


def gnn_reference(kind: str, graph: Graph, params) -> np.ndarray:
    """Two convolutions with a ReLU between them, then the linear head (dropout off)."""
    p = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["params"])
    adj = dense_adjacency(graph)
    conv = "GCNConv" if kind == "gcn" else "SAGEConv"
    h = conv_reference(kind, np.asarray(graph.x, np.float64), adj, p["encoder"][f"{conv}_0"])
    h = conv_reference(kind, np.maximum(h, 0.0), adj, p["encoder"][f"{conv}_1"])
    return h @ p["head"]["kernel"] + p["head"]["bias"]


def random_params(params, seed: int):
    """Replaces every parameter (biases included, which start at zero) by random values."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(0.5 * rng.normal(size=leaf.shape), leaf.dtype), params
    )


def model_and_params(kind: str, graph: Graph, seed: int = 0):
    model = GNN(CLASSES, kind=kind, hidden=(8, 5), dropout=0.5)
    params = model.init(jax.random.key(seed), graph)
    return model, random_params(params, seed)


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("conv", [GCNConv, SAGEConv])
def test_conv_layer_matches_dense_reference(conv, directed):
    graph = random_graph(seed=1, directed=directed)
    layer = conv(4)
    params = random_params(layer.init(jax.random.key(0), graph.x, graph), seed=2)
    out = layer.apply(params, graph.x, graph)
    kind = "gcn" if conv is GCNConv else "sage"
    p = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params["params"])
    expected = conv_reference(kind, np.asarray(graph.x, np.float64), dense_adjacency(graph), p)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_gnn_matches_dense_reference(kind, directed):
    graph = random_graph(seed=3, directed=directed)
    model, params = model_and_params(kind, graph)
    out = model.apply(params, graph, train=False)
    np.testing.assert_allclose(out, gnn_reference(kind, graph, params), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_padded_nodes_and_masked_edges_change_no_real_node(kind):
    graph = random_graph(seed=4, directed=False)
    padded = pad_graph(graph, seed=5)
    model, params = model_and_params(kind, graph)
    plain = model.apply(params, graph, train=False)
    out = model.apply(params, padded, train=False)
    np.testing.assert_allclose(out[:NUM_NODES], plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out[:NUM_NODES], gnn_reference(kind, graph, params), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_masked_edges_equal_removed_edges(kind):
    """The training-time graph masks edges touching unseen nodes instead of deleting them."""
    graph = random_graph(seed=6, directed=False)
    drop = np.asarray(graph.senders == 2) | np.asarray(graph.receivers == 2)
    assert drop.any()
    masked = graph._replace(edge_mask=jnp.asarray(~drop))
    removed = graph._replace(
        senders=graph.senders[~drop],
        receivers=graph.receivers[~drop],
        edge_mask=graph.edge_mask[~drop],
    )
    model, params = model_and_params(kind, graph)
    np.testing.assert_allclose(
        model.apply(params, masked), model.apply(params, removed), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["gcn", "sage"])
def test_isolated_nodes_see_only_themselves(kind):
    graph = random_graph(seed=7, directed=False)
    lonely = isolated_nodes(graph.x)
    model, params = model_and_params(kind, graph)
    out = model.apply(params, lonely)
    np.testing.assert_allclose(out, gnn_reference(kind, lonely, params), rtol=1e-5, atol=1e-5)
    # Node by node: with no edges a node's logits depend on its own features only.
    single = model.apply(params, isolated_nodes(graph.x[ISOLATED:]))
    np.testing.assert_allclose(out[ISOLATED:], single, rtol=1e-5, atol=1e-5)
    # The isolated node of the connected graph gets the same logits as when alone.
    connected = model.apply(params, graph)
    np.testing.assert_allclose(connected[ISOLATED:], single, rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training():
    graph = random_graph(seed=8, directed=False)
    model, params = model_and_params("sage", graph)
    plain = model.apply(params, graph, train=False)
    drop_a = model.apply(params, graph, train=True, rngs={"dropout": jax.random.key(1)})
    drop_b = model.apply(params, graph, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(drop_a, plain)
    assert not np.allclose(drop_a, drop_b)


def test_cached_neighbour_mean_gives_the_same_logits():
    """The cached first-layer aggregate is the on-the-fly one: padding and dropout included."""
    graph = pad_graph(random_graph(seed=9, directed=False), seed=10)
    cached = graph._replace(neighbour_mean=mean_of_neighbours(graph, graph.x))
    model, params = model_and_params("sage", graph)
    np.testing.assert_allclose(
        model.apply(params, cached)[:NUM_NODES],
        gnn_reference("sage", graph, params)[:NUM_NODES],
        rtol=1e-5,
        atol=1e-5,
    )
    rngs = {"dropout": jax.random.key(3)}
    np.testing.assert_allclose(
        model.apply(params, cached, train=True, rngs=rngs),
        model.apply(params, graph, train=True, rngs=rngs),
        rtol=1e-5,
        atol=1e-5,
    )
