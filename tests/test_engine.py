"""The engine's contract: vmapped == per-client loop, padding changes nothing, runs are deterministic,
chunked == vmapped (sharded == single device: test_graph_engine and test_program, which run on 8
emulated devices)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.engine import evaluation, local
from fedjax_syn.engine.round import EngineConfig, make_init, make_round, round_step
from tests.engine_fixtures import algorithm, assert_trees_close, loop_round, make_federation


@functools.cache
def programs(name: str, chunk: int | None = None, unroll: bool = False):
    """(algorithm, jitted init, jitted round), built once per process: tests that run the same
    algorithm on data of the same shapes share one compilation."""
    alg = algorithm(name, unroll=unroll)
    config = EngineConfig(client_chunk=chunk, donate=False)
    return alg, make_init(alg, config), make_round(alg, config)


def run_rounds(name, fed, rounds=2, chunk=None, seed=0, unroll=False):
    """(server, client states, per-round accuracies) of `rounds` evaluated rounds."""
    _, init, round_fn = programs(name, chunk, unroll)
    key = jax.random.key(seed)
    server, clients, _ = init(fed, key)
    history = []
    for r in range(1, rounds + 1):
        server, clients, metrics = round_fn(
            server, clients, fed, jax.random.fold_in(key, r), evaluate=True
        )
        history.append(evaluation.accuracies(metrics["counts"]["personalized"]))
    return server, clients, history


def real_clients(tree, k: int):
    """The first k clients of a stacked tree (the rest are padding)."""
    return jax.tree.map(lambda leaf: leaf[:k], tree)


@pytest.mark.parametrize("name", ["fedavg", "local", "fedper"])
def test_vmapped_round_equals_per_client_loop(name):
    alg, init, round_fn = programs(name)
    fed = make_federation()
    server, clients, _ = init(fed, jax.random.key(3))
    round_key = jax.random.key(7)
    v_server, v_clients, _ = round_fn(server, clients, fed, round_key, evaluate=True)

    l_server, l_clients = loop_round(alg, server, clients, fed, round_key)
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    # The round trained: what the algorithm keeps (server or client models) moved.
    before, after = jax.tree.leaves((server, clients)), jax.tree.leaves((v_server, v_clients))
    assert not all(np.allclose(a, b) for a, b in zip(before, after, strict=True))


# FedAvg-FT covers the server's weighted average and evaluation after fine-tuning; FedPer, state
# kept per client. FedAvg, FedProx and local training add no code that padding reaches.
@pytest.mark.parametrize("name", ["fedavg_ft", "fedper"])
def test_padding_never_changes_the_round(name):
    """Padded examples and padded clients change neither the states nor any metric."""
    real = 3
    plain_server, plain_clients, plain = run_rounds(name, make_federation())
    padded_fed = make_federation(pad_examples=6, pad_clients_to=5)
    assert padded_fed.num_clients == 5 and real == make_federation().num_clients
    server, clients, padded = run_rounds(name, padded_fed)
    assert_trees_close(server, plain_server, atol=1e-6)
    assert_trees_close(real_clients(clients, real), plain_clients, atol=1e-6)
    for a, b in zip(plain, padded, strict=True):
        assert a.keys() == b.keys()
        for setting in a:
            assert a[setting] == pytest.approx(b[setting], abs=1e-6), setting


def test_same_seed_same_metrics_and_different_seed_differs():
    fed = make_federation()
    server, _, first = run_rounds("fedavg", fed, seed=1)
    again_server, _, again = run_rounds("fedavg", fed, seed=1)
    assert first == again
    assert_trees_close(server, again_server, atol=0)
    other_server, _, _ = run_rounds("fedavg", fed, seed=2)
    assert not np.allclose(jax.tree.leaves(server)[0], jax.tree.leaves(other_server)[0])


def _loops(fn, *args) -> set[str]:
    """The loop primitives in fn(*args)'s program."""
    text = str(jax.make_jaxpr(fn)(*args))
    return {name for name in ("while", "scan") if f"= {name}[" in text}


def _round_loops(name, fed, chunk) -> set[str]:
    alg, init, _ = programs(name, chunk)
    server, clients, _ = init(fed, jax.random.key(0))
    config = EngineConfig(client_chunk=chunk, donate=False)
    one_round = lambda server, clients, fed, key: round_step(
        alg, server, clients, fed, key, evaluate=True, config=config
    )
    return _loops(one_round, server, clients, fed, jax.random.key(1))


@pytest.mark.parametrize("name", ["fedavg_ft"])  # FedAvg's round, then fine-tuning per client
def test_chunked_clients_equal_vmapped(name):
    fed = make_federation(sizes=(7, 12, 3, 9))
    vm_server, _, vm = run_rounds(name, fed)
    ch_server, _, ch = run_rounds(name, fed, chunk=2)
    # The option reaches the engine: groups of 2 clients run in a scan, not all vmapped at once.
    assert "scan" in _round_loops(name, fed, 2) and "scan" not in _round_loops(name, fed, None)
    assert_trees_close(vm_server, ch_server)
    for a, b in zip(vm, ch, strict=True):  # approx compares flat containers only
        assert a == pytest.approx(b)


def test_one_client_at_a_time_unbatched_or_as_a_vmap_of_one_equals_vmapped():
    fed = make_federation(sizes=(7, 12, 3, 9))
    alg = algorithm("fedavg")
    server, clients, _ = make_init(alg, EngineConfig(donate=False))(fed, jax.random.key(0))
    key = jax.random.key(5)
    results, programs_text = [], []
    for config in (
        EngineConfig(donate=False),
        EngineConfig(client_chunk=1, donate=False),
        EngineConfig(client_chunk=1, vmap_single=True, donate=False),
    ):
        step = lambda s, c, f, k, config=config: round_step(
            alg, s, c, f, k, evaluate=False, config=config
        )
        results.append(jax.jit(step)(server, clients, fed, key)[:2])
        programs_text.append(str(jax.make_jaxpr(step)(server, clients, fed, key)))
    for other in results[1:]:
        assert_trees_close(results[0], other)
    assert programs_text[1] != programs_text[2]  # the option reaches the engine


def _update_loops(alg, fed) -> set[str]:
    """The loop primitives in one client's update."""
    one = jax.tree.map(lambda leaf: leaf[0], fed.train)
    server = alg.init_server(jax.random.key(0), one)
    return _loops(alg.client_update, server, {}, one, jax.random.key(1))


def test_unrolled_local_training_equals_scanned():
    fed = make_federation()
    looped, unrolled = programs("fedavg")[0], programs("fedavg", unroll=True)[0]
    # The option reaches local training: a while loop over active steps, or an unrolled scan.
    assert _update_loops(looped, fed) == {"while"} and _update_loops(unrolled, fed) == {"scan"}
    scanned = run_rounds("fedavg", fed)[0]
    assert_trees_close(scanned, run_rounds("fedavg", fed, unroll=True)[0], atol=1e-6)


def test_fixed_step_schedule_runs_every_client():
    """Every client, the 3-example one included, takes exactly its 3 steps; a padded client none."""
    alg = algorithm("fedavg", steps=3)
    fed = make_federation(sizes=(7, 12, 3), pad_clients_to=4)
    server, clients, _ = make_init(alg)(fed, jax.random.key(0))
    update = jax.vmap(alg.client_update, in_axes=(None, 0, 0, 0))
    keys = jax.random.split(jax.random.key(1), fed.num_clients)
    _, uploads, metrics, _ = update(server, clients, fed.train, keys)
    np.testing.assert_array_equal(metrics["steps"], [3, 3, 3, 0])
    moved = [not np.allclose(p, jax.tree.leaves(server)[0]) for p in jax.tree.leaves(uploads)[0]]
    assert moved == [True, True, True, False]
    round_fn = make_round(alg, EngineConfig(donate=False))
    _, _, round_metrics = round_fn(server, clients, fed, jax.random.key(2), evaluate=False)
    assert float(round_metrics["train"]["steps"]) == 3.0  # the mean over the real clients


def test_epoch_schedule_visits_each_real_example_once_per_epoch():
    mask = jnp.array([True] * 7 + [False] * 5)
    idx, weight, active = local.minibatches(mask, jax.random.key(0), local.Schedule(3, epochs=2))
    assert idx.shape == (8, 3)  # 2 epochs x ceil(12 / 3)
    for epoch in range(2):
        rows = slice(4 * epoch, 4 * epoch + 4)
        visited = np.asarray(idx[rows])[np.asarray(weight[rows]) > 0]
        assert sorted(visited.tolist()) == list(range(7))
        assert np.asarray(active[rows]).tolist() == [True, True, True, False]


def test_step_schedule_draws_only_real_examples_wherever_they_sit():
    """Real examples scattered among padding (and none at all): every draw is a real one, and
    all of them get drawn over enough steps."""
    mask = jnp.array([False, True, False, False, True, True, False, True])
    idx, weight, active = local.minibatches(mask, jax.random.key(0), local.Schedule(4, steps=40))
    assert set(np.asarray(idx).ravel().tolist()) == {1, 4, 5, 7}
    assert bool(active.all()) and bool((weight == 1).all())
    _, weight, active = local.minibatches(
        jnp.zeros(8, bool), jax.random.key(0), local.Schedule(4, steps=3)
    )
    assert not bool(active.any()) and not bool(weight.any())


def test_active_steps_run_in_order_and_skip_the_rest():
    active = jnp.array([False, True, True, False, True])
    carry, steps = local.active_steps(
        lambda seen, x: seen * 10 + x, jnp.zeros((), jnp.int32), jnp.arange(5), active
    )
    assert int(steps) == 3 and int(carry) == 124  # steps 1, 2, 4 in that order


def test_drop_last_takes_full_batches_or_one_small_batch():
    schedule = local.Schedule(4, epochs=1, drop_last=True)
    _, _, active = local.minibatches(
        jnp.array([True] * 9 + [False] * 3), jax.random.key(0), schedule
    )
    assert np.asarray(active).tolist() == [True, True, False]
    _, weight, active = local.minibatches(
        jnp.array([True] * 3 + [False] * 9), jax.random.key(0), schedule
    )
    assert np.asarray(active).tolist() == [True, False, False]
    assert float(weight[0].sum()) == 3


def test_weighted_average_ignores_zero_weight_clients():
    from fedjax_syn.core.interface import weighted_average

    stacked = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])}
    out = weighted_average(stacked, jnp.array([1.0, 3.0, 0.0]))
    np.testing.assert_allclose(out["w"], [2.5, 3.5])
