"""FedGTA: the topology-aware signature (label propagation, mixed moments, smoothing confidence)
against a hand computation, the personalised confidence-weighted aggregation, and one engine
round vmapped == per-client loop with a padded client."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms import registry
from fedjax_syn.algorithms.fedgta import (
    FedGTAOptions,
    aggregation_weights,
    options,
    topology_signature,
)
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.graph import Graph
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from tests.engine_fixtures import loop_round
from tests.test_graph_engine import assert_trees_close, graph_algorithm, synthetic_federation


def path_graph() -> tuple[Graph, np.ndarray]:
    """Nodes 0-1-2-3 on a path, node 4 isolated, node 5 padding (with one padded edge); and the
    5x5 adjacency of the real nodes."""
    pairs = [(0, 1), (1, 2), (2, 3)]
    senders = [s for a, b in pairs for s in (a, b)] + [5]
    receivers = [r for a, b in pairs for r in (b, a)] + [0]
    graph = Graph(
        x=jnp.zeros((6, 1)),
        senders=jnp.array(senders),
        receivers=jnp.array(receivers),
        edge_mask=jnp.array([True] * 6 + [False]),
        node_mask=jnp.array([True] * 5 + [False]),
    )
    adj = np.zeros((5, 5))
    for a, b in pairs:
        adj[a, b] = adj[b, a] = 1.0
    return graph, adj


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_signature_is_the_moments_of_propagated_soft_labels():
    graph, adj = path_graph()
    logits = np.array([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0], [-1.0, 2.0], [3.0, -1.0], [9.0, 9.0]])
    labels = np.array([1, 0, 0, 1, 0, 0])
    train = np.array([True, False, False, False, False, False])
    opts = FedGTAOptions(prop_steps=2, alpha=0.6, temperature=3.0, moment_order=3)
    signature, confidence = topology_signature(
        jnp.asarray(logits), graph, jnp.asarray(labels), jnp.asarray(train), opts
    )

    # By hand, on the 5 real nodes: Y0 = soft labels, node 0's replaced by its one-hot label.
    onehot = np.eye(2)[labels[:5]]
    y0 = softmax(logits[:5])
    y0[0] = onehot[0]
    deg = adj.sum(1) + 1
    a_hat = (adj + np.eye(5)) / np.sqrt(np.outer(deg, deg))
    y = y0
    for _ in range(2):
        y = 0.6 * a_hat @ y + 0.4 * y0
    smoothed, softened = softmax(y), softmax(y / 3.0)
    smoothed[0] = softened[0] = onehot[0]
    # Moments over the connected nodes 0..3 (node 4 is isolated and does not train).
    connected = smoothed[:4]
    raw = [np.mean(connected**p, axis=0) for p in (1, 2, 3)]
    central = [np.mean((connected - connected.mean(0)) ** p, axis=0) for p in (1, 2, 3)]
    expected = np.concatenate(raw + central)
    np.testing.assert_allclose(signature, expected, rtol=1e-5, atol=1e-6)
    neg_entropy = np.sum(softened * np.log(np.maximum(softened, 1e-30)), axis=1)
    expected_confidence = np.sum(adj.sum(1) * (2 / math.e + neg_entropy))
    np.testing.assert_allclose(confidence, expected_confidence, rtol=1e-5)
    assert confidence > 0


def test_personalised_average_is_the_confidence_weighted_formula():
    a, b = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.2])
    # Slots 0, 1 share signature a; slot 2 is dissimilar (cos(a, b) < 0.5); slot 3 is padding.
    server = {
        "models": {"w": jnp.arange(1.0, 5.0)[:, None] * jnp.ones((4, 2))},
        "signature": jnp.stack([a, a, b, a]),
        "confidence": jnp.array([1.0, 3.0, 2.0, 5.0]),
        "present": jnp.array([True, True, True, False]),
    }
    weights = lambda s: aggregation_weights(
        s, server["signature"], server["confidence"], server["present"], 0.5
    )
    # Identical signatures: identical weights; b is excluded from a's average, the padded slot
    # (same signature, highest confidence) from everyone's.
    np.testing.assert_allclose(weights(a), [0.25, 0.75, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(weights(b), [0.0, 0.0, 1.0, 0.0], rtol=1e-6)
    # A signature close to both a and b (cos 0.70 and 0.71) averages all three real clients.
    np.testing.assert_allclose(weights(jnp.array([1.0, 1.0, 0.2])), [1 / 6, 3 / 6, 2 / 6, 0.0])

    alg = graph_algorithm("fedgta", num_clients=4)
    models = jax.vmap(alg.personalize, in_axes=(None, 0, None, None))(
        server, {"signature": server["signature"]}, None, None
    )["w"]
    np.testing.assert_allclose(models[:, 0], [1.75, 1.75, 3.0, 1.75], rtol=1e-6)


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    alg = graph_algorithm("fedgta", num_clients=4)
    _, fed = synthetic_federation(num_clients=3, slots=4)
    server, clients = init_states(alg, fed, jax.random.key(3))
    round_fn = make_round(alg, EngineConfig(donate=False))
    # Round 1 starts every client from the initial model; round 2 from personalised averages.
    for r in (1, 2):
        key = jax.random.key(10 + r)
        v_server, v_clients, _ = round_fn(server, clients, fed, key, evaluate=False)
        l_server, l_clients = loop_round(alg, server, clients, fed, key)
        assert_trees_close(v_server, l_server)
        assert_trees_close(v_clients, l_clients)
        server, clients = v_server, v_clients
    assert np.asarray(server["present"]).tolist() == [True, True, True, False]
    confidence = np.asarray(server["confidence"])
    assert (confidence[:3] > 0).all() and confidence[3] == 0


def test_options_are_checked_and_the_method_is_graph_only():
    assert options(None) == FedGTAOptions()
    with pytest.raises(UserError, match="threshold must be in"):
        options({"threshold": 1.0})
    with pytest.raises(UserError, match="unknown fedgta option"):
        options({"moments": 3})
    with pytest.raises(UserError, match="vision track"):
        registry.check_track("fedgta", "vision")
