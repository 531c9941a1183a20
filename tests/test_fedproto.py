"""FedProto: the server's count-weighted prototype average (padded clients and absent classes
included), the clients' prototypes, the regulariser (zero at the prototypes, its formula, silent
for classes without one), lam = 0 as local training, and the engine's vmapped round against the
per-client loop, padded clients included, on images and on graphs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms import common, fedproto
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.algorithms.fedproto import (
    FedProtoOptions,
    class_prototypes,
    fedproto_options,
    prototype_loss,
)
from fedjax_syn.algorithms.registry import BUILDERS
from fedjax_syn.core.errors import UserError
from tests.engine_fixtures import (
    NUM_CLASSES,
    SPEC,
    TASK,
    assert_trees_close,
    config,
    loop_round,
    make_federation,
    programs,
    trees_close,
)
from tests.test_graph_engine import graph_algorithm, synthetic_federation

PADDED = make_federation(pad_clients_to=4)  # client 3 is padding
REAL = 3


def take(tree, k: int):
    return jax.tree.map(lambda leaf: leaf[k], tree)


@functools.cache
def build(**options):
    """The registry's fedproto on the fixtures' MLP task with option group `options`."""
    cfg = config("fedproto")
    cfg["fedproto"] = options
    return BUILDERS["fedproto"](cfg, TASK, SPEC)


# --- server ----------------------------------------------------------------------------------------


def test_server_prototypes_are_the_count_weighted_means_of_the_real_clients():
    rng = np.random.default_rng(0)
    classes, dim = 4, 3
    protos = rng.normal(size=(4, classes, dim)).astype(np.float32)
    counts = np.array(
        [
            [5, 2, 0, 0],  # class 2 absent on client 0
            [1, 3, 4, 0],
            [2, 0, 6, 0],  # class 3 absent on every real client
            [9, 9, 9, 9],  # padding: must not count, even with counts
        ],
        np.float32,
    )
    mask = np.array([True, True, True, False])
    alg = build()
    server = alg.server_update(None, {"protos": protos, "count": counts}, mask, None)
    for c in range(classes):
        holders = [k for k in range(3) if counts[k, c] > 0]
        total = sum(counts[k, c] for k in holders)
        assert float(server["count"][c]) == total
        if holders:
            expected = sum(counts[k, c] * protos[k, c] for k in holders) / total
            np.testing.assert_allclose(server["protos"][c], expected, rtol=1e-6)
    assert float(server["count"][3]) == 0  # stays without a prototype
    plain_mean = protos[:3, 0].mean(axis=0)
    assert not np.allclose(server["protos"][0], plain_mean)  # the weighting matters here


@pytest.mark.parametrize("chunk", [512, 5])
def test_client_prototypes_are_class_means_of_its_training_representations(monkeypatch, chunk):
    """Also with images embedded 5 at a time (12 examples: three chunks, the last one padded)."""
    monkeypatch.setattr(fedproto, "_CHUNK", chunk)
    data = take(PADDED.train, 1)
    params = TASK.init(jax.random.key(0), data.inputs)
    protos, counts = class_prototypes(TASK, params, data, NUM_CLASSES)
    features = np.asarray(TASK.embed(params, data.inputs)[0])
    labels, mask = np.asarray(data.labels), np.asarray(data.mask)
    assert 0 < mask.sum() < len(mask) == 12
    for c in range(NUM_CLASSES):
        rows = mask & (labels == c)
        assert counts[c] == rows.sum()
        expected = features[rows].mean(axis=0) if rows.any() else np.zeros(features.shape[1])
        np.testing.assert_allclose(protos[c], expected, rtol=1e-5, atol=1e-6)


# --- the regulariser -------------------------------------------------------------------------------

DATA = take(PADDED.train, 1)
IDX, WEIGHTS = jnp.arange(8), jnp.ones(8)
PARAMS = TASK.init(jax.random.key(1), DATA.inputs)


def identical_within_classes(data):
    """`data` with every example replaced by its class's first one: a class's representations are
    then all equal to its prototype."""
    labels = np.asarray(data.labels)
    first = np.array([np.flatnonzero(labels == y)[0] for y in labels])
    return data.replace(inputs=data.inputs[first])


def loss_and_ce(data, server, lam):
    loss_fn = prototype_loss(TASK, data, server, lam)
    loss = jax.jit(lambda p: loss_fn(p, IDX, WEIGHTS, None))
    ce = jax.jit(lambda p: TASK.loss(p, data.inputs, data.labels, IDX, WEIGHTS))
    return loss, ce


def test_regulariser_is_zero_when_representations_equal_their_prototypes():
    data = identical_within_classes(DATA)
    protos, counts = class_prototypes(TASK, PARAMS, data, NUM_CLASSES)
    assert (np.asarray(counts) > 0).sum() >= 2
    loss, ce = loss_and_ce(data, {"protos": protos, "count": counts}, lam=10.0)
    np.testing.assert_allclose(loss(PARAMS), ce(PARAMS), rtol=1e-6)
    assert_trees_close(jax.grad(loss)(PARAMS), jax.grad(ce)(PARAMS), atol=1e-5)


def test_regulariser_is_lam_times_the_mean_squared_distance_over_classes_with_a_prototype():
    lam = 0.7
    protos = jax.random.normal(jax.random.key(2), (NUM_CLASSES, 8))
    counts = jnp.array([3.0, 0.0, 1.0])  # class 1 has no prototype: its rows add 0
    loss, ce = loss_and_ce(DATA, {"protos": protos, "count": counts}, lam)
    z = np.asarray(TASK.embed(PARAMS, DATA.inputs, IDX)[0])
    labels = np.asarray(DATA.labels)[:8]
    assert 1 in labels and (labels != 1).any()
    distance = np.sum((z - np.asarray(protos)[labels]) ** 2, axis=-1) * (labels != 1)
    np.testing.assert_allclose(loss(PARAMS), ce(PARAMS) + lam * distance.mean(), rtol=1e-5)
    # Without any prototype (round 1) the loss is the cross-entropy.
    empty, _ = loss_and_ce(DATA, {"protos": protos, "count": jnp.zeros(NUM_CLASSES)}, lam)
    np.testing.assert_allclose(empty(PARAMS), ce(PARAMS), rtol=1e-6)


def test_options_are_checked():
    assert fedproto_options(None) == FedProtoOptions(lam=1.0)
    assert fedproto_options({"lam": 2}).lam == 2
    for bad in ({"lam": -1.0}, {"lambda": 1.0}):
        with pytest.raises(UserError):
            fedproto_options(bad)


# --- rounds --------------------------------------------------------------------------------------


@functools.cache
def two_rounds(**options):
    """(server0, clients0, [(server, clients) after rounds 1 and 2]) on PADDED, keys fixed."""
    init, round_fn = programs(build(**options))
    server0, clients0 = init(PADDED, jax.random.key(0))
    server, clients, out = server0, clients0, []
    for r in (1, 2):
        server, clients = round_fn(server, clients, PADDED, jax.random.key(r))
        out.append((server, clients))
    return server0, clients0, out


def local_training(params, data, round_key):
    """What `local` training alone makes of one client's `params` in the engine round `round_key`
    (the clients' keys: the round key's first split, split over the clients)."""
    cfg = config("fedproto")
    train = jax.jit(
        lambda p, d, key: train_from(
            TASK, p, d, key, common.optimizer(cfg), common.local_schedule(cfg)
        )[0]
    )
    keys = jax.random.split(jax.random.split(round_key, 3)[0], PADDED.num_clients)
    return [train(take(params, k), take(data, k), keys[k]) for k in range(REAL)]


def test_lam_zero_is_local_training_and_positive_lam_is_not_after_round_one():
    server0, clients0, free = two_rounds(lam=0.0)
    _, _, pulled = two_rounds(lam=1.0)
    assert float(jnp.sum(server0["count"])) == 0  # no prototypes before round 1
    assert not trees_close(take(clients0, 0), take(clients0, 1))  # each client's own init
    # Round 1: no prototypes yet, so either lam trains locally.
    expected = local_training(clients0, PADDED.train, jax.random.key(1))
    for k in range(REAL):
        assert_trees_close(take(free[0][1], k), expected[k], atol=1e-6)
        assert_trees_close(take(pulled[0][1], k), expected[k], atol=1e-6)
    assert float(jnp.sum(free[0][0]["count"])) == float(jnp.sum(PADDED.train.mask))
    # Round 2: lam = 0 still trains locally; lam > 0 is pulled towards the prototypes.
    expected = local_training(free[0][1], PADDED.train, jax.random.key(2))
    for k in range(REAL):
        assert_trees_close(take(free[1][1], k), expected[k], atol=1e-6)
        assert not trees_close(take(pulled[1][1], k), take(free[1][1], k), atol=1e-4)


def test_the_round_uploads_each_clients_prototypes_of_its_trained_model():
    server0, _, rounds = two_rounds()
    (server, clients) = rounds[0]
    uploads = jax.vmap(lambda p, d: class_prototypes(TASK, p, d, NUM_CLASSES))(
        clients, PADDED.train
    )
    expected = build().server_update(
        server0, {"protos": uploads[0], "count": uploads[1]}, PADDED.client_mask, None
    )
    assert_trees_close(server, expected, atol=1e-6)


# --- engine: vmapped == per-client loop ---------------------------------------------------------


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    """Round 2 (with prototypes) vmapped == the per-client loop."""
    assert not bool(PADDED.client_mask[REAL])
    _, _, ((server, clients), (v_server, v_clients)) = two_rounds()
    l_server, l_clients = loop_round(build(), server, clients, PADDED, jax.random.key(2))
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)


def test_vmapped_graph_round_equals_per_client_loop_with_a_padded_client():
    _, fed = synthetic_federation(num_clients=3, slots=4)
    assert not bool(fed.client_mask[REAL])
    alg = graph_algorithm("fedproto")
    init, round_fn = programs(alg)
    server, clients = init(fed, jax.random.key(3))
    server, clients = round_fn(server, clients, fed, jax.random.key(5))
    assert float(jnp.sum(server["count"])) == float(jnp.sum(fed.train.mask))
    v_server, v_clients = round_fn(server, clients, fed, jax.random.key(7))
    l_server, l_clients = loop_round(alg, server, clients, fed, jax.random.key(7))
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    assert not trees_close(v_clients, clients)
