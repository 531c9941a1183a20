"""MOON: the model-contrastive term (its value, its gradient, its direction), that it vanishes with
mu = 0 and in round 1 (where global and previous models coincide), and the engine's vmapped round
against the per-client loop, padded clients included, on images and on graphs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms.moon import MoonOptions, contrastive, moon_loss, moon_options
from fedjax_syn.algorithms.registry import BUILDERS
from fedjax_syn.core.errors import UserError
from tests.engine_fixtures import (
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

TAU = 0.5


# --- the contrastive term ----------------------------------------------------------------------


def test_contrastive_term_is_log_2_when_global_and_previous_coincide():
    z, w = jax.random.normal(jax.random.key(0), (2, 6, 4))
    np.testing.assert_allclose(contrastive(z, z, z, TAU), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(contrastive(z, w, w, TAU), np.log(2.0), rtol=1e-6)


def test_contrastive_term_matches_its_formula():
    z, z_glob, z_prev = np.asarray(jax.random.normal(jax.random.key(1), (3, 5, 4)))
    cos = lambda a, b: np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    pos, neg = np.exp(cos(z, z_glob) / TAU), np.exp(cos(z, z_prev) / TAU)
    expected = -np.log(pos / (pos + neg))
    np.testing.assert_allclose(contrastive(z, z_glob, z_prev, TAU), expected, rtol=1e-5)


def test_contrastive_term_falls_as_z_moves_from_the_previous_towards_the_global_representation():
    z_glob, z_prev = jax.random.normal(jax.random.key(2), (2, 1, 8))
    path = jnp.linspace(0.0, 1.0, 11)[:, None]
    z = (1 - path) * z_prev + path * z_glob  # [11, 8]: from z_prev to z_glob
    values = np.asarray(contrastive(z, z_glob, z_prev, TAU))
    assert np.all(np.diff(values) < 0), values
    assert values[0] > np.log(2.0) > values[-1]


def test_contrastive_gradient_is_finite_at_a_zero_representation():
    # A padded node (or a dead ReLU representation) is an all-zero row; its weight is 0, but a
    # NaN gradient times 0 is still NaN and stops the run.
    z_glob, z_prev = jax.random.normal(jax.random.key(3), (2, 3, 4))
    z = jnp.zeros((3, 4)).at[0].set(1.0)
    grads = jax.grad(lambda z, g, p: jnp.sum(contrastive(z, g, p, TAU)), argnums=(0, 1, 2))(
        z, jnp.zeros_like(z_glob), z_prev
    )
    assert all(np.isfinite(g).all() for g in grads), grads
    np.testing.assert_allclose(contrastive(z, z_glob, z_prev, TAU)[1:], np.log(2.0), rtol=1e-6)


# --- the local loss ----------------------------------------------------------------------------

FED = make_federation()
DATA = jax.tree.map(lambda leaf: leaf[1], FED.train)
IDX, WEIGHTS = jnp.arange(6), jnp.ones(6)
PARAMS, OTHER, THIRD = (TASK.init(jax.random.key(k), DATA.inputs) for k in range(3))


def ce(params):
    return TASK.loss(params, DATA.inputs, DATA.labels, IDX, WEIGHTS)


def test_contrastive_gradient_is_zero_when_global_and_previous_models_coincide():
    mu = 3.0
    value_and_grad = lambda previous: jax.jit(
        jax.value_and_grad(
            lambda p: moon_loss(TASK, DATA, OTHER, previous, MoonOptions(mu=mu))(
                p, IDX, WEIGHTS, None
            )
        )
    )(PARAMS)
    loss, grads = value_and_grad(OTHER)
    np.testing.assert_allclose(loss, ce(PARAMS) + mu * np.log(2.0), rtol=1e-6)
    assert_trees_close(grads, jax.jit(jax.grad(ce))(PARAMS), atol=1e-6)
    # With a different previous model the term has a gradient: the check above is not vacuous.
    assert not trees_close(value_and_grad(THIRD)[1], grads)


def test_local_loss_is_cross_entropy_plus_mu_times_the_mean_contrastive_term():
    mu = 2.0
    loss_fn = moon_loss(TASK, DATA, OTHER, THIRD, MoonOptions(mu=mu, temperature=TAU))
    embed = lambda p: TASK.embed(p, DATA.inputs, IDX)[0]
    l_con = jnp.mean(contrastive(embed(PARAMS), embed(OTHER), embed(THIRD), TAU))
    np.testing.assert_allclose(
        loss_fn(PARAMS, IDX, WEIGHTS, None), ce(PARAMS) + mu * l_con, rtol=1e-6
    )


def test_options_are_checked():
    assert moon_options(None) == MoonOptions(mu=1.0, temperature=0.5)
    assert moon_options({"mu": 5}).mu == 5
    for bad in ({"mu": -1.0}, {"temperature": 0.0}, {"tau": 0.5}):
        with pytest.raises(UserError):
            moon_options(bad)


# --- rounds --------------------------------------------------------------------------------------

PADDED = make_federation(pad_clients_to=4)  # client 3 is padding
REAL = 3


@functools.cache
def build(name: str, **options):
    """The registry's `name` on the fixtures' MLP task with option group `options`."""
    cfg = config(name)
    cfg[name] = options
    return BUILDERS[name](cfg, TASK, SPEC)


@functools.cache
def two_rounds(name: str, **options):
    """(server0, clients0, [(server, clients) after rounds 1 and 2]) on PADDED, keys fixed."""
    init, round_fn = programs(build(name, **options))
    server0, clients0 = init(PADDED, jax.random.key(0))
    server, clients, out = server0, clients0, []
    for r in (1, 2):
        server, clients = round_fn(server, clients, PADDED, jax.random.key(r))
        out.append((server, clients))
    return server0, clients0, out


def test_mu_zero_rounds_equal_fedavg():
    _, _, moon = two_rounds("moon", mu=0.0)
    _, _, fedavg = two_rounds("fedavg")
    for (server, _), (expected, _) in zip(moon, fedavg, strict=True):
        assert_trees_close(server, expected, atol=1e-6)


def test_first_round_is_fedavg_and_the_second_is_not():
    """Round 1 contrasts the global model with itself (the previous model starts as the initial
    global model); round 2 contrasts it with each client's round-1 model, which it keeps."""
    server0, _, moon = two_rounds("moon", mu=5.0)
    _, _, fedavg = two_rounds("fedavg")
    assert_trees_close(moon[0][0], fedavg[0][0], atol=1e-5)
    assert not trees_close(moon[1][0], fedavg[1][0], atol=1e-4)
    assert not trees_close(moon[0][0], server0)


def test_client_state_is_its_model_after_the_local_update():
    server0, clients0, moon = two_rounds("moon", mu=5.0)
    alg = build("moon", mu=5.0)
    keys = jax.random.split(jax.random.split(jax.random.key(2), 3)[0], PADDED.num_clients)
    (server1, clients1), (_, clients2) = moon
    update = jax.jit(alg.client_update)
    for k in range(REAL):
        take = lambda tree, k=k: jax.tree.map(lambda leaf: leaf[k], tree)
        assert_trees_close(take(clients0), server0, atol=0)
        result = update(server1, take(clients1), take(PADDED.train), keys[k])
        assert_trees_close(result.model, take(clients2), atol=1e-6)
        assert_trees_close(result.upload["params"], result.state, atol=0)


# --- engine: vmapped == per-client loop ---------------------------------------------------------


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    """Round 2 (the previous models differ from the global one) vmapped == the per-client loop."""
    assert not bool(PADDED.client_mask[REAL])
    alg = build("moon", mu=5.0)
    _, _, ((server, clients), (v_server, v_clients)) = two_rounds("moon", mu=5.0)
    l_server, l_clients = loop_round(alg, server, clients, PADDED, jax.random.key(2))
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)


def test_vmapped_graph_round_equals_per_client_loop_with_a_padded_client():
    _, fed = synthetic_federation(num_clients=3, slots=4)
    assert not bool(fed.client_mask[REAL])
    alg = graph_algorithm("moon")
    init, round_fn = programs(alg)
    server, clients = init(fed, jax.random.key(3))
    server, clients = round_fn(server, clients, fed, jax.random.key(5))
    v_server, v_clients = round_fn(server, clients, fed, jax.random.key(7))
    l_server, l_clients = loop_round(alg, server, clients, fed, jax.random.key(7))
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    assert not trees_close(v_server, server)
