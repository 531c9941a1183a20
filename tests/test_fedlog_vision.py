"""FedLoG's recipe on images: the global synthetic set (blend and concatenation) against hand
computations, and the algorithm on the engine (vmapped == per-client loop, determinism, noise)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms.fedlog.shared import slot_permutations
from fedjax_syn.algorithms.fedlog.vision import (
    FedLoGVisionConfig,
    add_noise,
    build,
    fedlog_vision,
    global_set,
    vision_options,
)
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.round import EngineConfig, make_init, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.vision import MLP
from tests.engine_fixtures import NUM_CLASSES, SPEC, Cfg, loop_round, make_federation, sgd

CONFIG = FedLoGVisionConfig(syn_per_class=2, condense_iterations=2)


def test_blend_weights_shares_and_drops_classes_nobody_holds():
    rng = np.random.default_rng(0)
    k, c, s = 3, 3, 2
    syn = rng.normal(size=(k, c, s, 2, 2)).astype(np.float32)
    class_mask = np.array([[True, True, False], [True, False, False], [True, True, False]])
    shares = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.75, 0.0]])
    client_mask = np.array([True, True, True])
    key = jax.random.key(4)
    x, y, valid = jax.jit(global_set, static_argnums=(5,))(
        jnp.asarray(syn), jnp.asarray(class_mask), jnp.asarray(shares), client_mask, key, CONFIG
    )
    perms = np.asarray(slot_permutations(key, k, s))
    hand = np.zeros((c, s, 2, 2))
    for kk, cls, j in itertools.product(range(k), range(2), range(s)):
        w = shares[kk, cls] / shares[:, cls].sum()
        hand[cls, j] += w * syn[kk, cls, perms[kk, j]]
    np.testing.assert_allclose(np.asarray(x).reshape(c, s, 2, 2)[:2], hand[:2], rtol=1e-5)
    np.testing.assert_array_equal(y, np.repeat(np.arange(c), s))
    np.testing.assert_array_equal(valid, [True, True, True, True, False, False])


def test_concatenation_keeps_every_client_image_with_its_validity():
    k, c, s = 2, 3, 2
    syn = jnp.arange(k * c * s, dtype=jnp.float32).reshape(k, c, s, 1)
    class_mask = jnp.array([[True, False, True], [True, True, False]])
    client_mask = jnp.array([True, False])  # client 1 is padding
    config = FedLoGVisionConfig(syn_per_class=s, global_set="concat")
    x, y, valid = global_set(
        syn, class_mask, jnp.ones((k, c)), client_mask, jax.random.key(0), config
    )
    x = np.asarray(x).reshape(c, k * s)
    for cls, kk, j in itertools.product(range(c), range(k), range(s)):
        assert x[cls, kk * s + j] == float(syn[kk, cls, j, 0])
    np.testing.assert_array_equal(y, np.repeat(np.arange(c), k * s))
    expected = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], bool).reshape(-1)
    np.testing.assert_array_equal(valid, expected)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="global_set"):
        vision_options({"global_set": "sum"})
    with pytest.raises(UserError, match="unknown fedlog_vision option"):
        vision_options({"ipc": 3})


def _algorithm(config=CONFIG):
    task = Task(MLP(NUM_CLASSES, (8,)), graph=False)
    return fedlog_vision(task, NUM_CLASSES, sgd(0.1), Schedule(batch_size=4, epochs=1), 3, config)


# Compiled without LLVM's optimisations: the tests check the programs' arithmetic, and compiling
# is most of their time (as in test_fedlog.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


class Runner:
    """The init program (setup round 0) and the round program, compiled once for every seed."""

    def __init__(self, alg, fed):
        self.alg, self.fed = alg, fed
        engine, key = EngineConfig(donate=False), jax.random.key(0)
        lowered = make_init(alg, engine).lower(fed, key)
        self.init = lowered.compile(FAST_COMPILE)
        server, clients, _ = jax.tree.map(
            lambda info: jax.ShapeDtypeStruct(info.shape, info.dtype), lowered.out_info
        )
        lowered = make_round(alg, engine).lower(server, clients, fed, key, evaluate=True)
        self.round = lowered.compile(FAST_COMPILE)

    def run(self, rounds, seed=0):
        key = jax.random.key(seed)
        server_state, clients, _ = self.init(self.fed, key)
        history, states = [], []
        for r in range(1, rounds + 1):
            server_state, clients, metrics = self.round(
                server_state, clients, self.fed, jax.random.fold_in(key, r)
            )
            history.append(evaluation.accuracies(metrics["counts"]["personalized"]))
            states.append((server_state, clients))
        return states, history


@pytest.fixture(scope="module")
def runs():
    runner = Runner(_algorithm(), make_federation())
    return runner, {name: runner.run(3, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_same_seed_same_metrics_and_different_seed_differs(runs):
    _, results = runs
    assert results["a"][1] == results["b"][1]
    assert results["a"][1] != results["c"][1]


def test_the_setup_round_builds_the_global_set(runs):
    runner, _ = runs
    before = runner.alg.init_server(
        jax.random.key(0), jax.tree.map(lambda x: x[0], runner.fed.train)
    )
    server_state, _, _ = runner.init(runner.fed, jax.random.key(0))
    assert not np.any(np.asarray(before["valid"]))
    assert np.all(np.asarray(server_state["valid"]))  # every class is held by some client
    assert np.any(np.asarray(server_state["x_global"]) != 0)
    server_state, clients = runs[1]["a"][0][-1]
    assert server_state["x_global"].shape == (NUM_CLASSES * CONFIG.syn_per_class, 5)
    assert np.all(np.isfinite(np.asarray(server_state["x_global"])))
    assert np.all((np.asarray(clients["scales"]) >= 0) & (np.asarray(clients["scales"]) <= 1))


def test_vmapped_round_equals_per_client_loop(runs):
    runner, results = runs
    alg, fed = runner.alg, runner.fed
    server_state, clients = results["a"][0][0]  # after round 1: the global set exists
    round_key = jax.random.key(9)
    v_server, v_clients, _ = runner.round(server_state, clients, fed, round_key)
    l_server, l_states = loop_round(alg, server_state, clients, fed, round_key)
    for a, b in zip(jax.tree.leaves(v_server), jax.tree.leaves(l_server), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(v_clients), jax.tree.leaves(l_states), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_upload_noise_perturbs_only_held_classes():
    syn = jnp.ones((3, 2, 4))
    class_mask = jnp.array([True, False, True])
    noisy = np.asarray(add_noise(syn, class_mask, jax.random.key(0), 0.5))
    diff = np.abs(noisy - 1.0)
    assert np.all(diff[[0, 2]].reshape(2, -1).max(axis=1) > 0)
    assert np.all(diff[1] == 0)
    assert 0.2 < np.std(noisy[[0, 2]]) < 1.0


def test_registry_builder_reads_the_run_config():
    cfg = Cfg(
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=4,
        local_epochs=1,
        local_steps=0,
        drop_last=False,
        num_clients=3,
        fedlog={"syn_per_class": 3, "global_set": "concat"},
    )
    alg = build(cfg, Task(MLP(NUM_CLASSES, (8,)), graph=False), SPEC)
    one_client = jax.tree.map(lambda x: x[0], make_federation().train)
    server_state = jax.eval_shape(alg.init_server, jax.random.key(0), one_client)
    assert alg.name == "fedlog_vision"
    assert server_state["x_global"].shape == (NUM_CLASSES * 3 * 3, 5)  # C * K * s (concat)
