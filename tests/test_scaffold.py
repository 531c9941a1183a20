"""SCAFFOLD on a tiny MLP federation: the control variates (under SGD) and the server's control
variate equal option II's formulas; under Adam a client's control variate is its gradient; with zero controls round 1 is FedAvg's; each SGD step is shifted by
lr * (c - c_i); padded clients (no steps) stay finite and unchanged; vmapped == per-client loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms.registry import BUILDERS, check_options
from fedjax_syn.algorithms.scaffold import scaffold_options
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine.round import EngineConfig, init_step, round_step
from tests.engine_fixtures import SPEC, TASK, algorithm, config, loop_round, make_federation
from tests.test_baselines import assert_trees_equal, client, trees_close

LR = 0.1  # the fixtures' SGD learning rate: eta of the option-II formula
GLOBAL_LR = 0.5  # not 1, so that the server's step size shows
FED = make_federation(pad_clients_to=4)  # three real clients and one padded one
REAL = 3
ENGINE = EngineConfig(donate=False)
ROUND_KEYS = (jax.random.key(1), jax.random.key(2))


def scaffold_alg(global_lr: float = GLOBAL_LR, **overrides):
    cfg = config("scaffold", **overrides)
    cfg["scaffold"] = {"global_lr": global_lr}
    return BUILDERS["scaffold"](cfg, TASK, SPEC)


@functools.cache
def two_rounds():
    """(server, clients) after init, round 1 and round 2 of the engine on FED."""
    alg = scaffold_alg()

    @jax.jit
    def run(fed):
        states = [init_step(alg, fed, jax.random.key(0), ENGINE)[:2]]
        for key in ROUND_KEYS:
            states.append(round_step(alg, *states[-1], fed, key, evaluate=False, config=ENGINE)[:2])
        return states

    return alg, run(FED)


def f64(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


def test_control_variates_follow_option_two_and_the_server_averages_them():
    alg, (_, (server1, clients1), (server2, clients2)) = two_rounds()
    # Round 2 as the engine ran it, one client at a time: the local models y and step counts K.
    update_key = jax.random.split(ROUND_KEYS[1], 3)[0]
    keys = jax.random.split(update_key, FED.num_clients)
    result = jax.vmap(alg.client_update, in_axes=(None, 0, 0, 0))(
        server1, clients1, FED.train, keys
    )
    steps = np.asarray(result.metrics["steps"])
    assert steps[REAL:].tolist() == [0.0] and len(set(steps[:REAL].tolist())) > 1
    x, c = f64(server1["params"]), f64(server1["control"])
    assert not trees_close(
        server1["control"], jax.tree.map(jnp.zeros_like, c)
    )  # c moved in round 1
    sizes = np.asarray(FED.train.mask).sum(axis=1)[:REAL].astype(np.float64)
    expected_controls, control_deltas, param_deltas = [], [], []
    for k in range(REAL):
        ci, y = f64(client(clients1, k)), f64(client(result.model, k))
        scale = 1.0 / (steps[k] * LR)
        new = jax.tree.map(lambda a, b, p, q, s=scale: a - b + (p - q) * s, ci, c, x, y)
        expected_controls.append(new)
        control_deltas.append(jax.tree.map(np.subtract, new, ci))
        param_deltas.append(jax.tree.map(np.subtract, y, x))
        assert_trees_equal(client(clients2, k), new, atol=1e-4)

    mean = lambda trees, w: jax.tree.map(
        lambda *v: sum(a * b for a, b in zip(w, v)) / sum(w), *trees
    )
    expected_c = jax.tree.map(np.add, c, mean(control_deltas, [1.0] * REAL))
    expected_x = jax.tree.map(lambda a, d: a + GLOBAL_LR * d, x, mean(param_deltas, sizes))
    assert_trees_equal(server2["control"], expected_c, atol=1e-4)
    assert_trees_equal(server2["params"], expected_x, atol=1e-6)
    # Full participation from zero controls: c stays the mean of the clients' c_i.
    assert_trees_equal(server2["control"], mean(expected_controls, [1.0] * REAL), atol=1e-4)


def test_a_client_without_steps_keeps_its_control_and_stays_finite():
    _, states = two_rounds()
    for server, clients in states:
        for leaf in jax.tree.leaves((server, clients)):
            assert np.isfinite(np.asarray(leaf)).all()
        padded = client(clients, REAL)
        assert_trees_equal(padded, jax.tree.map(jnp.zeros_like, padded))


def test_round_one_without_correction_equals_fedavg():
    fed = make_federation()
    fedavg, scaffold = algorithm("fedavg"), scaffold_alg(global_lr=1.0)

    @functools.partial(jax.jit, static_argnums=0)
    def round_one(alg, fed):
        server, clients, _ = init_step(alg, fed, jax.random.key(0), ENGINE)
        update_key = jax.random.split(ROUND_KEYS[0], 3)[0]
        keys = jax.random.split(update_key, fed.num_clients)
        update = jax.vmap(alg.client_update, in_axes=(None, 0, 0, 0))
        local_models = update(server, clients, fed.train, keys).model
        new, _, _ = round_step(
            alg, server, clients, fed, ROUND_KEYS[0], evaluate=False, config=ENGINE
        )
        return server, local_models, new

    avg0, avg_local, avg1 = round_one(fedavg, fed)
    sc0, sc_local, sc1 = round_one(scaffold, fed)
    assert_trees_equal(sc0["params"], avg0)
    # Zero correction: the same local training, up to the rounding of two programs fused apart.
    assert_trees_equal(sc_local, avg_local, atol=1e-7)
    assert_trees_equal(sc1["params"], avg1, atol=1e-6)
    assert not trees_close(avg1, avg0)


def test_each_sgd_step_is_shifted_by_the_control_difference():
    """One SGD step from x: y = x - lr (g + c - c_i), i.e. FedAvg's step minus lr (c - c_i)."""
    fedavg, scaffold = algorithm("fedavg", steps=1), scaffold_alg(steps=1)
    data = client(FED.train, 1)
    params = TASK.init(jax.random.key(0), data.inputs)
    noise = lambda seed: jax.tree.map(
        lambda leaf: jax.random.normal(jax.random.key(seed), leaf.shape), params
    )
    server = {"params": params, "control": noise(1)}
    control = noise(2)
    key = jax.random.key(3)
    plain = jax.jit(fedavg.client_update)(params, {}, data, key).model
    shifted = jax.jit(scaffold.client_update)(server, control, data, key).model
    expected = jax.tree.map(lambda p, cg, ci: p - LR * (cg - ci), plain, server["control"], control)
    assert_trees_equal(shifted, expected, atol=1e-6)


def test_under_adam_the_control_variate_is_the_gradient_not_the_normalised_step():
    """One full-batch Adam step from x: c_i+ = g(x), where option II would give the Adam step
    over eta (about sign(g) per coordinate, whatever the gradient's size)."""
    data = client(FED.train, 1)
    scaffold = scaffold_alg(optimizer="adam", lr=0.01, batch_size=64, local_epochs=1)
    params = TASK.init(jax.random.key(0), data.inputs)
    zeros = jax.tree.map(jnp.zeros_like, params)
    result = jax.jit(scaffold.client_update)(
        {"params": params, "control": zeros}, zeros, data, jax.random.key(3)
    )
    assert float(result.metrics["steps"]) == 1.0
    idx = jnp.arange(data.mask.shape[0])
    weights = data.mask.astype(jnp.float32)
    gradient = jax.grad(TASK.loss)(
        params, data.inputs, data.labels, idx, weights, jax.random.key(0)
    )
    assert_trees_equal(result.state, gradient, atol=1e-6)
    step = jax.tree.map(lambda x, y: (x - y) / 0.01, params, result.model)
    assert not trees_close(result.state, step)  # option II's reading of the Adam step


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    alg, (_, (server1, clients1), (server2, clients2)) = two_rounds()
    loop_server, loop_clients = loop_round(alg, server1, clients1, FED, ROUND_KEYS[1])
    assert_trees_equal(loop_server, server2, atol=1e-5)
    assert_trees_equal(loop_clients, clients2, atol=1e-5)


def test_options_are_checked():
    assert scaffold_options({}).global_lr == 1.0
    with pytest.raises(UserError, match="global_lr"):
        scaffold_options({"global_lr": 0.0})
    cfg = config("scaffold")
    cfg["scaffold"] = {"server_lr": 1.0}
    with pytest.raises(UserError, match="unknown scaffold option"):
        check_options(cfg)
