"""FED-PUB: the server mixes the clients' models by the similarity of their functional embeddings
(checked against the formula by hand), masks stay personal, without masks and similarity a round
is FedAvg's, and a vmapped round with a padded client equals the per-client loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms import client_slots
from fedjax_syn.algorithms.fedpub import aggregation_weights, masked, parse_options
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.interface import weighted_average
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN
from tests.engine_fixtures import loop_round
from tests.test_graph_engine import (
    CLASSES,
    assert_trees_close,
    graph_algorithm,
    synthetic_federation,
)

SMALL_PROXY = {"proxy_blocks": 2, "proxy_nodes": 12, "proxy_p": 0.3}
INIT_KEY, ROUND_KEY = jax.random.key(3), jax.random.key(7)


def fedpub(slots: int = 4, **options):
    return graph_algorithm("fedpub", slots, fedpub=SMALL_PROXY | options)


def take(tree, k: int):
    return jax.tree.map(lambda leaf: leaf[k], tree)


@functools.cache
def one_round(slots: int = 4, **options):
    """(alg, fed, states before, states after one round) of FED-PUB, 3 real clients."""
    alg = fedpub(slots, **options)
    _, fed = synthetic_federation(slots=slots)
    server, clients = init_states(alg, fed, INIT_KEY)
    round_fn = make_round(alg, EngineConfig(donate=False))
    new_server, new_clients, _ = round_fn(server, clients, fed, ROUND_KEY, evaluate=False)
    return alg, fed, (server, clients), (new_server, new_clients)


def hand_uploads(server, embeddings, sizes, seed=0):
    """Uploads of distinct random models with the given embeddings and sizes."""
    rng = np.random.default_rng(seed)
    weights = jax.tree.map(
        lambda leaf: jnp.asarray(rng.normal(size=leaf.shape), jnp.float32), server["models"]
    )
    k = len(sizes)
    return {
        "id": jnp.arange(2 * k, dtype=jnp.uint32).reshape(k, 2),
        "weights": weights,
        "masks": jax.tree.map(lambda m: jnp.stack([m] * k), server["global"]["masks"]),
        "embedding": jnp.asarray(embeddings, jnp.float32),
        "size": jnp.asarray(sizes, jnp.float32),
    }


def test_server_mixes_models_by_functional_embedding_similarity():
    alg = fedpub()
    _, fed = synthetic_federation(slots=4)
    server = alg.init_server(INIT_KEY, take(fed.train, 0))
    # Clients 0 and 1 compute the same function; 2 is far from both; slot 3 is padding.
    embeddings = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-0.2, 1.0, 0.3], [1.0, 0.0, 0.0]]
    sizes = [10.0, 20.0, 30.0, 0.0]
    mask = jnp.array([True, True, True, False])
    uploads = hand_uploads(server, embeddings, sizes)
    new = jax.jit(alg.server_update)(server, uploads, mask, ROUND_KEY)

    e = np.asarray(embeddings)[:3]
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    scores = np.exp(10.0 * unit @ unit.T)  # the default agg_temp, over the 3 real clients
    alpha = scores / scores.sum(axis=1, keepdims=True)
    for i in range(3):
        expected = jax.tree.map(
            lambda leaf, i=i: np.tensordot(alpha[i], np.asarray(leaf)[:3], axes=1),
            uploads["weights"],
        )
        assert_trees_close(take(new["models"], i), expected)
    assert_trees_close(take(new["models"], 0), take(new["models"], 1))
    assert alpha[2, 2] > 0.99  # the client far from the others keeps mostly its own model
    computed = aggregation_weights(uploads["embedding"], uploads["size"], mask, 10.0)
    np.testing.assert_allclose(np.asarray(computed)[:3, :3], alpha, rtol=1e-5)
    assert not np.asarray(computed)[:, 3].any()  # the padded client weighs nothing
    np.testing.assert_array_equal(np.asarray(new["ids"])[:3], np.asarray(uploads["id"])[:3])
    np.testing.assert_array_equal(new["ids"][3], server["ids"][3])  # padding stores no id
    # The global model is the size-weighted average of the real clients' weights.
    assert_trees_close(
        new["global"]["weights"], weighted_average(uploads["weights"], jnp.asarray(sizes))
    )

    # Whatever the padded client sends changes nothing for the real ones.
    other = uploads | {
        "weights": jax.tree.map(lambda leaf: leaf.at[3].set(100.0), uploads["weights"]),
        "embedding": uploads["embedding"].at[3].set(jnp.array([0.0, 0.0, 5.0])),
    }
    again = jax.jit(alg.server_update)(server, other, mask, ROUND_KEY)
    real = lambda tree: jax.tree.map(lambda leaf: leaf[:3], tree)
    assert_trees_close(real(again["models"]), real(new["models"]))
    assert_trees_close(again["global"], new["global"])


def test_zero_temperature_size_weighted_aggregation_is_fedavgs_average():
    alg = fedpub(agg_temp=0.0, size_weighted=True)
    _, fed = synthetic_federation(slots=4)
    server = alg.init_server(INIT_KEY, take(fed.train, 0))
    sizes = [10.0, 20.0, 30.0, 5.0]
    embeddings = np.random.default_rng(1).normal(size=(4, 3))
    uploads = hand_uploads(server, embeddings, sizes)
    mask = jnp.array([True, True, True, False])
    new = jax.jit(alg.server_update)(server, uploads, mask, ROUND_KEY)
    fedavg = weighted_average(uploads["weights"], jnp.asarray(sizes) * mask)
    for i in range(4):
        assert_trees_close(take(new["models"], i), fedavg)


def test_without_masks_and_similarity_a_round_is_fedavg():
    """Masks off (fixed at 1), no proximal term, agg_temp 0, size-weighted: FedAvg's round."""
    options = {"masks": False, "loc_l2": 0.0, "agg_temp": 0.0, "size_weighted": True}
    _, fed, (server0, _), (server, clients) = one_round(3, **options)
    fedavg = graph_algorithm("fedavg")
    f_server0, f_clients = init_states(fedavg, fed, INIT_KEY)
    assert_trees_close(take(server0["models"], 0), f_server0)
    f_server, _, _ = make_round(fedavg, EngineConfig(donate=False))(
        f_server0, f_clients, fed, ROUND_KEY, evaluate=False
    )
    for k in range(3):
        assert_trees_close(take(server["models"], k), f_server)
    assert_trees_close(server["global"]["weights"], f_server)
    assert clients["masks"] == {}


def test_masks_stay_personal_and_each_client_gets_its_own_aggregate():
    alg, fed, (_, clients0), (server, clients) = one_round()
    masks = clients["masks"]
    assert masks and all(path.endswith("kernel") for path in masks)
    for leaf in jax.tree.leaves(clients0["masks"]):
        np.testing.assert_array_equal(np.asarray(leaf), 1.0)  # masks start at 1
    first = next(iter(masks.values()))
    assert not np.allclose(first[0], first[1])  # trained apart
    # Each client finds its slot by id and evaluates its aggregate under its own masks.
    ids = np.asarray(clients["id"])
    assert len({tuple(row) for row in ids}) == fed.num_clients
    np.testing.assert_array_equal(np.asarray(server["ids"])[:3], ids[:3])  # slot 3: padding
    personalize = jax.jit(jax.vmap(alg.personalize, in_axes=(None, 0, 0, 0)))
    keys = jax.random.split(ROUND_KEY, fed.num_clients)
    models = personalize(server, clients, fed.train, keys)
    for k in range(3):
        expected = masked(take(server["models"], k), take(masks, k), 1e-3)
        assert_trees_close(take(models, k), expected)
    # The aggregates differ per client: the embeddings differ.
    assert not np.allclose(*(jax.tree.leaves(take(server["models"], k))[0] for k in (0, 1)))


def test_functional_embedding_is_the_mean_encoder_output_on_the_proxy_graph():
    alg, fed, (server, clients), _ = one_round()
    proxy = server["proxy"]
    assert proxy.x.shape == (24, 12)  # 2 blocks of 12 nodes, the data's 12 features
    s, r, keep = (np.asarray(a) for a in (proxy.senders, proxy.receivers, proxy.edge_mask))
    assert keep.any() and not keep.all()
    assert (s[keep] // 12 == r[keep] // 12).all()  # no edge between blocks
    edges = set(zip(s[keep].tolist(), r[keep].tolist()))
    assert edges == {(b, a) for a, b in edges}  # undirected
    key = jax.random.split(jax.random.split(ROUND_KEY, 3)[0], fed.num_clients)[0]
    update = jax.jit(alg.client_update)(server, take(clients, 0), take(fed.train, 0), key)
    task = Task(GNN(CLASSES, kind="sage", hidden=(16, 8), dropout=0.5), graph=True)
    features, _ = jax.jit(task.embed)(update.model, proxy)  # eval mode, pruned masks
    expected = np.asarray(features).mean(axis=0)
    np.testing.assert_allclose(np.asarray(update.upload["embedding"]), expected, rtol=1e-5)


def test_vmapped_round_with_a_padded_client_equals_the_per_client_loop():
    alg, fed, (server, clients), (v_server, v_clients) = one_round()
    assert np.asarray(fed.client_mask).tolist() == [True, True, True, False]
    l_server, l_clients = loop_round(alg, server, clients, fed, ROUND_KEY)
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)


def test_slot_lookup_finds_the_stored_id_and_falls_back_to_slot_zero():
    ids = jnp.array([[1, 2], [3, 4], [5, 6]], jnp.uint32)
    assert [int(x) for x in client_slots.find(ids, jnp.array([3, 4], jnp.uint32))] == [1, 1]
    assert [int(x) for x in client_slots.find(ids, jnp.array([3, 5], jnp.uint32))] == [0, 0]


def test_a_client_whose_update_is_dropped_keeps_its_slot():
    """A dropped client's upload arrives zeroed, id included (on_nonfinite=drop): the server
    keeps the id it stored, so next round the client still finds its own model."""
    alg = fedpub()
    _, fed = synthetic_federation(slots=4)
    server = alg.init_server(INIT_KEY, take(fed.train, 0))
    uploads = hand_uploads(server, [[1.0, 0.0, 0.0]] * 4, [10.0, 20.0, 30.0, 0.0])
    mask = jnp.array([True, True, True, False])
    first = jax.jit(alg.server_update)(server, uploads, mask, ROUND_KEY)
    dropped = uploads | {"id": uploads["id"].at[1].set(0)}
    second = jax.jit(alg.server_update)(first, dropped, mask.at[1].set(False), ROUND_KEY)
    np.testing.assert_array_equal(second["ids"][:3], uploads["id"][:3])
    slot, found = client_slots.find(second["ids"], uploads["id"][1])
    assert (int(slot), bool(found)) == (1, True)


def test_bad_options_are_one_line_errors():
    with pytest.raises(UserError, match="agg_temp"):
        parse_options({"agg_temp": -1.0})
    with pytest.raises(UserError, match="unknown fedpub option"):
        parse_options({"temperature": 1.0})
