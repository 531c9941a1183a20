"""APFL: w takes FedAvg's steps, the personal model v descends the loss of the mixture
alpha v + (1 - alpha) w, and alpha follows its own gradient within [0, 1]."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.apfl import apfl, mix
from fedjax_syn.algorithms.fedavg import fedavg
from fedjax_syn.engine import local
from fedjax_syn.engine.local import Schedule
from tests.engine_fixtures import SCHEDULE, TASK, algorithm, make_federation
from tests.personal_fixtures import (
    assert_round_equals_loop,
    assert_trees_close,
    client,
    trees_close,
)

FED = make_federation()
DATA = client(FED.train, 1)
LR = 0.1
ONE_STEP = Schedule(batch_size=4, epochs=None, steps=1)
KEY = jax.random.key(5)
W = TASK.init(jax.random.key(0), DATA.inputs)
V = TASK.init(jax.random.key(1), DATA.inputs)  # a personal model away from w


@functools.cache
def update(adaptive: bool = True, alpha_lr: float = LR, weight_decay: float = 0.0):
    """APFL's jitted client update over ONE_STEP (alpha comes with the client state)."""
    optimizer = common.make_optimizer(
        "sgd", LR, momentum=0.9 if weight_decay else 0.0, weight_decay=weight_decay
    )
    alg = apfl(TASK, optimizer, ONE_STEP, adaptive=adaptive, alpha_lr=alpha_lr)
    return jax.jit(alg.client_update)


def one_step(alpha: float, **options):
    """(state, upload, model) after one local step from (w=W, v=V, alpha)."""
    result = update(**options)(W, {"v": V, "alpha": jnp.float32(alpha)}, DATA, KEY)
    return result.state, result.upload, result.model


@jax.jit
def hand_step(alpha):
    """APFL's one step by the paper's formulas, on the minibatch `local.train` draws."""
    batch_key, step_key = jax.random.split(KEY)
    idx, weight, _ = local.minibatches(DATA.mask, batch_key, ONE_STEP)
    rng = jax.random.split(step_key, 1)[0]
    grad = jax.grad(lambda p: TASK.loss(p, DATA.inputs, DATA.labels, idx[0], weight[0], rng))
    mixed_grad = grad(mix(alpha, V, W))
    v = jax.tree.map(lambda p, g: p - LR * alpha * g, V, mixed_grad)
    w = jax.tree.map(lambda p, g: p - LR * g, W, grad(W))
    pairs = zip(jax.tree.leaves(V), jax.tree.leaves(W), jax.tree.leaves(mixed_grad), strict=True)
    alpha_grad = sum(jnp.sum((a - b) * g) for a, b, g in pairs)
    return v, w, alpha_grad


def test_one_step_of_v_and_w_equals_the_hand_computed_mixed_gradient_step():
    alpha = 0.4
    state, upload, model = one_step(alpha)
    v, w, alpha_grad = hand_step(alpha)
    assert_trees_close(state["v"], v, atol=1e-6)
    assert_trees_close(upload["params"], w, atol=1e-6)
    np.testing.assert_allclose(state["alpha"], alpha - LR * alpha_grad, atol=1e-6)
    assert not trees_close(state["v"], V)
    assert_trees_close(model, mix(state["alpha"], state["v"], upload["params"]), atol=0)


def test_alpha_moves_against_its_gradient_and_stays_in_the_unit_interval():
    alpha = 0.5
    _, _, alpha_grad = hand_step(alpha)
    assert abs(float(alpha_grad)) > 1e-4
    state = one_step(alpha)[0]
    assert np.sign(float(state["alpha"]) - alpha) == -np.sign(float(alpha_grad))
    # A step far past the interval's end is projected back onto it.
    state = one_step(alpha, alpha_lr=1e4)[0]
    assert float(state["alpha"]) == (0.0 if alpha_grad > 0 else 1.0)
    # Not adaptive: alpha stays put, even under weight decay.
    assert float(one_step(alpha, adaptive=False, weight_decay=0.5)[0]["alpha"]) == alpha


def test_with_alpha_zero_and_fixed_the_uploaded_w_is_fedavgs():
    optimizer = common.make_optimizer("sgd", LR, momentum=0.9)
    ours = apfl(TASK, optimizer, SCHEDULE, alpha=0.0, adaptive=False)
    theirs = fedavg(TASK, optimizer, SCHEDULE)
    keys = jax.random.split(KEY, FED.num_clients)
    per_client = lambda fn: jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0)))
    states = jax.vmap(ours.init_client, in_axes=(None, 0, 0))(W, FED.train, keys)
    result = per_client(ours.client_update)(W, states, FED.train, keys)
    fedavg_upload = per_client(theirs.client_update)(W, {}, FED.train, keys).upload
    assert_trees_close(result.upload, fedavg_upload)
    assert_trees_close(result.state, states, atol=0)  # v has no gradient when alpha = 0
    assert not trees_close(result.upload["params"], states["v"])  # w trained


def test_personalised_model_mixes_the_client_state_with_the_global_w():
    alg = algorithm("apfl")
    state = {"v": V, "alpha": jnp.float32(0.3)}
    model = alg.personalize(W, state, DATA, KEY)
    assert_trees_close(model, jax.tree.map(lambda v, w: 0.3 * v + 0.7 * w, V, W))
    assert alg.global_model(W) is W


def test_vmapped_round_equals_per_client_loop():
    assert_round_equals_loop(algorithm("apfl"))
