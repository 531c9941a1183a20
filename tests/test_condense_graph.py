"""Tests of graph condensation (gradient matching of a GNN, GCond feature-only and DosCond)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_syn.condense import GraphCondenseConfig, condense_graph, graph_matching_loss
from fedjax_syn.condense.graph import real_class_gradients
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.graph import Graph
from fedjax_syn.models.gnn import GNN

NUM_CLASSES, FEATURES, NODES, MAX_NODES, MAX_EDGES = 3, 8, 60, 64, 400
MODEL = GNN(NUM_CLASSES, kind="gcn", hidden=(16, 8), dropout=0.0)
GCOND = GraphCondenseConfig(
    ipc=4, iterations=20, outer_loop=5, inner_loop=3, lr_feat=0.05, init="noise"
)
DOSCOND = GraphCondenseConfig(ipc=4, iterations=20, lr_feat=0.05, init="noise", one_step=True)
PROBE = GraphCondenseConfig(num_nets=3)

_condense = jax.jit(condense_graph, static_argnames=("config", "model"))
_probe = jax.jit(graph_matching_loss, static_argnames=("config", "model"))


def _client(seed: int, train_classes=(0, 1, 2)):
    """A padded stochastic-block-model subgraph whose features carry the class; training nodes
    are drawn only from `train_classes`."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(NUM_CLASSES), NODES // NUM_CLASSES)
    x = rng.normal(size=(NODES, FEATURES)).astype(np.float32)
    x[np.arange(NODES), y] += 2.0
    senders, receivers = [], []
    for i in range(NODES):
        for j in range(i + 1, NODES):
            if rng.random() < (0.2 if y[i] == y[j] else 0.02):
                senders += [i, j]
                receivers += [j, i]
    edges = len(senders)
    pad_nodes, pad_edges = MAX_NODES - NODES, MAX_EDGES - edges
    graph = Graph(
        jnp.asarray(np.pad(x, ((0, pad_nodes), (0, 0)))),
        jnp.asarray(np.pad(senders, (0, pad_edges)), jnp.int32),
        jnp.asarray(np.pad(receivers, (0, pad_edges)), jnp.int32),
        jnp.arange(MAX_EDGES) < edges,
        jnp.arange(MAX_NODES) < NODES,
    )
    train = (rng.random(NODES) < 0.6) & np.isin(y, train_classes)
    labels = np.pad(y, (0, pad_nodes), constant_values=NUM_CLASSES - 1)  # padding: a real label
    return graph, jnp.asarray(labels, jnp.int32), jnp.asarray(np.pad(train, (0, pad_nodes)))


def test_per_class_real_gradients_equal_direct_gradients():
    graph, y, train = _client(0)
    params = MODEL.init(jax.random.key(1), graph)

    @jax.jit
    def both(params):
        batched = real_class_gradients(params, graph, y, train, NUM_CLASSES, MODEL)

        def class_loss(p, c):
            ce = optax.softmax_cross_entropy_with_integer_labels(MODEL.apply(p, graph), y)
            member = (y == c) & train
            return jnp.sum(jnp.where(member, ce, 0.0)) / jnp.sum(member)

        direct = [jax.grad(class_loss)(params, c) for c in range(NUM_CLASSES)]
        return batched, direct

    batched, direct = both(params)
    for c in range(NUM_CLASSES):
        for got, want in zip(
            jax.tree.leaves(jax.tree.map(lambda g, c=c: g[c], batched)),
            jax.tree.leaves(direct[c]),
            strict=True,
        ):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", [GCOND, DOSCOND], ids=["gcond", "doscond"])
def test_condensation_reduces_loss_on_held_out_networks(config):
    graph, y, train = _client(0)
    key = jax.random.key(0)
    syn, class_mask = _condense(graph, y, train, key, config=config, model=MODEL)
    start = jax.random.normal(jax.random.split(key)[0], syn.shape)  # the "noise" initialisation
    assert syn.shape == (NUM_CLASSES, 4, FEATURES) and bool(class_mask.all())
    for seed in (100, 101):  # networks never used while condensing
        probe = jax.random.key(seed)
        after = float(_probe(syn, graph, y, train, probe, config=PROBE, model=MODEL))
        before = float(_probe(start, graph, y, train, probe, config=PROBE, model=MODEL))
        assert after < 0.8 * before


def test_vmapped_clients_equal_separate_runs_and_missing_class_is_masked():
    clients = [_client(0), _client(1, train_classes=(0, 1))]
    graphs, ys, trains = jax.tree.map(lambda *a: jnp.stack(a), *clients)
    keys = jax.random.split(jax.random.key(2), 2)
    config = GraphCondenseConfig(ipc=2, iterations=2, outer_loop=2, inner_loop=2, lr_feat=0.05)
    batched = jax.jit(
        jax.vmap(lambda g, y, t, k: condense_graph(g, y, t, k, config=config, model=MODEL))
    )
    syn, class_mask = batched(graphs, ys, trains, keys)
    assert syn.shape == (2, NUM_CLASSES, 2, FEATURES)
    np.testing.assert_array_equal(class_mask, [[True, True, True], [True, True, False]])
    assert float(jnp.abs(syn[1, 2]).max()) == 0.0  # no training node of class 2: no features
    for k, (graph, y, train) in enumerate(clients):
        one, one_mask = _condense(graph, y, train, keys[k], config=config, model=MODEL)
        np.testing.assert_allclose(syn[k], one, atol=1e-5)
        np.testing.assert_array_equal(class_mask[k], one_mask)


def test_config_rejects_bad_values():
    with pytest.raises(UserError, match="outer_loop"):
        GraphCondenseConfig(outer_loop=0)
    with pytest.raises(UserError, match="synthetic init"):
        GraphCondenseConfig(init="zeros")
    assert GraphCondenseConfig(one_step=True, outer_loop=20, inner_loop=10).loops == (1, 0)
