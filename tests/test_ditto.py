"""Ditto on a tiny MLP federation: the personal model is pulled towards the round's global model
with strength lambda (none at 0, more as lambda grows, exactly lr * lambda * (v - w) per SGD step);
the global model is FedAvg's; vmapped == per-client loop with a padded client."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.ditto import ditto_options
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.algorithms.registry import BUILDERS
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine.round import EngineConfig, init_step, round_step
from tests.engine_fixtures import SPEC, TASK, algorithm, config, loop_round, make_federation
from tests.test_baselines import assert_trees_equal, client, distance, trees_close

LR = 0.1
FED = make_federation()
DATA = client(FED.train, 1)
GLOBAL = TASK.init(jax.random.key(0), DATA.inputs)  # w, the round's global model
# A personal model away from w, so that the pull towards w shows from the first step.
PERSONAL = jax.tree.map(
    lambda leaf: leaf + 0.3 * jax.random.normal(jax.random.key(1), leaf.shape), GLOBAL
)
KEY = jax.random.key(2)
ENGINE = EngineConfig(donate=False)


def ditto_cfg(lam: float, **overrides):
    cfg = config("ditto", **overrides)
    cfg["ditto"] = {"lam": lam}
    return cfg


def ditto_alg(lam: float, **overrides):
    return BUILDERS["ditto"](ditto_cfg(lam, **overrides), TASK, SPEC)


@functools.cache
def personal_update(lam: float, **overrides):
    """One client's update of PERSONAL under global model GLOBAL: (personal model, result)."""
    result = jax.jit(ditto_alg(lam, **overrides).client_update)(GLOBAL, PERSONAL, DATA, KEY)
    return result.state, result


def test_with_lambda_zero_the_personal_model_is_pure_local_training():
    cfg = ditto_cfg(0.0)
    own, _ = jax.jit(
        lambda: train_from(
            TASK, PERSONAL, DATA, KEY, common.optimizer(cfg), common.local_schedule(cfg)
        )
    )()
    personal, _ = personal_update(0.0)
    assert_trees_equal(personal, own, atol=1e-6)


def test_larger_lambda_keeps_the_personal_model_closer_to_the_global_one():
    distances = [distance(personal_update(lam)[0], GLOBAL) for lam in (0.0, 1.0, 5.0)]
    assert all(a > b for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] < 0.9 * distances[0], distances


def test_one_sgd_step_is_the_hand_computed_update():
    """One step on all of the client's examples: v - lr (grad f(v) + lambda (v - w))."""
    lam = 2.0
    n = DATA.mask.shape[0]
    one_step = {"batch_size": n, "local_epochs": 1}
    personal, result = personal_update(lam, **one_step)
    assert float(result.metrics["steps"]) == 1.0
    grad = jax.grad(TASK.loss)(PERSONAL, DATA.inputs, DATA.labels, jnp.arange(n), DATA.mask)
    expected = jax.tree.map(
        lambda v, w, g: v - LR * (g + lam * (v - w)), f64(PERSONAL), f64(GLOBAL), f64(grad)
    )
    assert_trees_equal(personal, expected, atol=1e-6)


def f64(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


def test_the_client_evaluates_and_keeps_its_personal_model_and_uploads_the_global_copy():
    personal, result = personal_update(1.0)
    fedavg = jax.jit(algorithm("fedavg").client_update)(GLOBAL, {}, DATA, KEY)
    assert_trees_equal(result.upload, fedavg.upload)  # w_k: the FedAvg copy, not v_k
    assert_trees_equal(result.model, personal)
    assert not trees_close(personal, result.upload["params"])
    alg = ditto_alg(1.0)
    assert_trees_equal(alg.personalize(GLOBAL, personal, DATA, KEY), personal)
    assert_trees_equal(alg.global_model(GLOBAL), GLOBAL)


def test_the_global_model_trains_as_fedavg_and_personal_models_start_from_it():
    def two_states(alg):
        server, clients, _ = init_step(alg, FED, jax.random.key(0), ENGINE)
        return (server, clients), round_step(
            alg, server, clients, FED, KEY, evaluate=False, config=ENGINE
        )[:2]

    (d_server0, d_clients0), (d_server1, _) = jax.jit(lambda: two_states(ditto_alg(1.0)))()
    (a_server0, _), (a_server1, _) = jax.jit(lambda: two_states(algorithm("fedavg")))()
    assert_trees_equal(d_server0, a_server0)
    for k in range(FED.num_clients):
        assert_trees_equal(client(d_clients0, k), d_server0)
    assert_trees_equal(d_server1, a_server1)


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    fed = make_federation(pad_clients_to=4)
    alg = ditto_alg(1.0)
    round_key = jax.random.key(7)

    @jax.jit
    def engine(fed):
        server, clients, _ = init_step(alg, fed, jax.random.key(3), ENGINE)
        new = round_step(alg, server, clients, fed, round_key, evaluate=False, config=ENGINE)
        return server, clients, new[:2]

    server, clients, (v_server, v_clients) = engine(fed)
    l_server, l_clients = loop_round(alg, server, clients, fed, round_key)
    assert_trees_equal(v_server, l_server, atol=1e-5)
    assert_trees_equal(v_clients, l_clients, atol=1e-5)
    assert not trees_close(client(v_clients, 0), client(clients, 0))  # personal models trained
    assert_trees_equal(client(v_clients, 3), client(clients, 3))  # the padded client is idle


def test_options_are_checked():
    assert ditto_options({}).lam == 1.0
    with pytest.raises(UserError, match="lam"):
        ditto_options({"lam": -0.1})
