"""GCFL+: without a split it is FedAvg; two groups of clients whose updates cancel out are split
apart once the thresholds are met, and each group then averages only within itself; padded
clients never count; DTW and the Stoer-Wagner cut match brute-force references; a vmapped round
with a padded client equals the per-client loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms import gcfl
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from tests.engine_fixtures import SCHEDULE, TASK, loop_round, make_federation, sgd
from tests.test_graph_engine import assert_trees_close, graph_algorithm, synthetic_federation

INIT_KEY, ROUND_KEY = jax.random.key(3), jax.random.key(7)
WARMUP, SEQ = 20, 5


def take(tree, k):
    return jax.tree.map(lambda leaf: leaf[k], tree)


def run(alg, fed, rounds: int):
    server, clients = init_states(alg, fed, INIT_KEY)
    round_fn = make_round(alg, EngineConfig(donate=False))
    for r in range(rounds):
        server, clients, _ = round_fn(
            server, clients, fed, jax.random.fold_in(ROUND_KEY, r), evaluate=False
        )
    return server, clients


def test_without_a_split_gcfl_plus_is_fedavg():
    _, fed = synthetic_federation()
    alg = graph_algorithm("gcfl_plus")
    server, clients = run(alg, fed, rounds=2)
    fedavg, _ = run(graph_algorithm("fedavg"), fed, rounds=2)
    assert int(server["num_clusters"]) == 1 and not np.asarray(server["cluster"]).any()
    assert_trees_close(take(server["models"], 0), fedavg)
    personalize = jax.jit(jax.vmap(alg.personalize, in_axes=(None, 0, 0, 0)))
    models = personalize(server, clients, fed.train, jax.random.split(ROUND_KEY, 3))
    for k in range(3):
        assert_trees_close(take(models, k), fedavg)


# --- the split, on hand-made uploads (a tiny MLP; the server never looks inside the model) -------


def server_and_direction(num_clients: int, **options):
    alg = gcfl.gcfl_plus(TASK, sgd(), SCHEDULE, num_clients, gcfl.GcflPlusOptions(**options))
    server = alg.init_server(INIT_KEY, take(make_federation().train, 0))
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda leaf: rng.normal(size=leaf.shape[1:]), server["models"])
    norm = np.sqrt(sum(np.sum(leaf**2) for leaf in jax.tree.leaves(direction)))
    return alg, server, jax.tree.map(lambda leaf: leaf / norm, direction)


def uploads_along(direction, scales, sizes):
    """Client k's update: scales[k] * direction (a unit vector)."""
    update = jax.tree.map(
        lambda leaf: jnp.asarray(np.multiply.outer(scales, leaf), jnp.float32), direction
    )
    k = len(scales)
    ids = jnp.arange(2 * k, dtype=jnp.uint32).reshape(k, 2) + 1
    return {"id": ids, "update": update, "size": jnp.asarray(sizes, jnp.float32)}


SIZES = [3.0, 5.0, 4.0, 6.0, 0.0]
MASK = jnp.array([True, True, True, True, False])
# Clients 0, 1 push one way, 2, 3 the other; together they nearly cancel (mean norm 0.1). The
# padded client 4 sends a huge update that would break both thresholds if it counted.
SCALES = [1.0, 1.0, -1.2, -1.2, 100.0]


def ready(server, scales):
    """Past the warm-up, with every buffer one round short of full of each client's norm."""
    history = np.repeat(np.abs(np.asarray(scales))[:, None, None], SEQ, axis=1)
    return server | {
        "history": jnp.asarray(history, jnp.float32),
        "filled": jnp.asarray(SEQ - 1, jnp.int32),
        "round": jnp.asarray(WARMUP, jnp.int32),
    }


def moved(server, direction, scale):
    """The initial model plus scale * direction."""
    return jax.tree.map(lambda m, d: m[0] + scale * d, server["models"], direction)


def test_groups_with_opposite_updates_split_and_average_within_themselves():
    alg, server, direction = server_and_direction(5, eps1=0.15, eps2=0.5)
    uploads = uploads_along(direction, SCALES, SIZES)
    new = jax.jit(alg.server_update)(ready(server, SCALES), uploads, MASK, ROUND_KEY)
    cluster = np.asarray(new["cluster"])
    assert int(new["num_clusters"]) == 2 and int(new["filled"]) == 0
    assert cluster[0] == cluster[1] and cluster[2] == cluster[3]
    assert {cluster[0], cluster[2]} == {0, 1}
    # Each cluster adds its own members' (size-weighted) mean update: +1 and -1.2 here.
    assert_trees_close(take(new["models"], cluster[0]), moved(server, direction, 1.0))
    assert_trees_close(take(new["models"], cluster[2]), moved(server, direction, -1.2))
    np.testing.assert_array_equal(np.asarray(new["ids"])[:4], np.asarray(uploads["id"])[:4])
    np.testing.assert_array_equal(new["ids"][4], server["ids"][4])  # padding stores no id


def test_no_split_before_the_thresholds_warm_up_and_buffers_allow():
    real = np.asarray(SIZES[:4])
    together = float(np.dot(real, SCALES[:4]) / real.sum())
    cases = {  # name: (options, server changes)
        "mean update too large": ({"eps1": 0.05, "eps2": 0.5}, {}),
        "no update large enough": ({"eps1": 0.15, "eps2": 2.0}, {}),
        "warm-up": ({"eps1": 0.15, "eps2": 0.5}, {"round": jnp.asarray(WARMUP - 1, jnp.int32)}),
        "buffers not full": ({"eps1": 0.15, "eps2": 0.5}, {"filled": jnp.asarray(0, jnp.int32)}),
    }
    for name, (options, changes) in cases.items():
        alg, server, direction = server_and_direction(5, **options)
        uploads = uploads_along(direction, SCALES, SIZES)
        start = ready(server, SCALES) | changes
        new = jax.jit(alg.server_update)(start, uploads, MASK, ROUND_KEY)
        assert int(new["num_clusters"]) == 1 and not np.asarray(new["cluster"]).any(), name
        # One cluster: FedAvg of the real clients' updates; the padded client's drops out.
        assert_trees_close(take(new["models"], 0), moved(server, direction, together))


def test_projected_signatures_tell_apart_updates_of_equal_norm():
    """Norms cannot separate +u from -u; random projections of the updates can."""
    alg, server, direction = server_and_direction(
        5, eps1=0.05, eps2=0.5, seq_length=1, signature_dim=4
    )
    scales = [1.0, 1.0, -1.0, -1.0, 50.0]
    uploads = uploads_along(direction, scales, SIZES)
    start = server | {"round": jnp.asarray(WARMUP, jnp.int32)}
    new = jax.jit(alg.server_update)(start, uploads, MASK, ROUND_KEY)
    cluster = np.asarray(new["cluster"])
    assert cluster[0] == cluster[1] != cluster[2] == cluster[3]
    assert_trees_close(take(new["models"], cluster[2]), moved(server, direction, -1.0))


# --- the two building blocks against brute force --------------------------------------------------


def reference_dtw(a, b):
    n, m = len(a), len(b)
    table = np.full((n + 1, m + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = np.sum((a[i - 1] - b[j - 1]) ** 2)
            table[i, j] = cost + min(table[i - 1, j], table[i, j - 1], table[i - 1, j - 1])
    return np.sqrt(table[n, m])


def test_dtw_matches_the_textbook_recursion():
    rng = np.random.default_rng(0)
    sequences = rng.normal(size=(4, 5, 3)).astype(np.float32)
    distances = np.asarray(jax.jit(gcfl.pairwise_dtw)(jnp.asarray(sequences)))
    for i, j in itertools.product(range(4), repeat=2):
        assert distances[i, j] == pytest.approx(reference_dtw(sequences[i], sequences[j]), 1e-5)
    # Warping: a sequence and its stretched copy are 0 apart, unlike under a plain distance.
    a = np.array([0.0, 1.0, 2.0, 2.0, 2.0])[:, None]
    b = np.array([0.0, 0.0, 1.0, 1.0, 2.0])[:, None]
    assert float(gcfl.dtw_distance(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(0.0)


def cut_weight(weights, inside, side):
    """Total weight of the edges between `side` and the rest of the vertices `inside`."""
    return sum(weights[i, j] for i in inside for j in inside if side[i] and not side[j])


def test_stoer_wagner_finds_a_minimum_cut_of_the_members():
    rng = np.random.default_rng(1)
    cut_fn = jax.jit(gcfl.min_cut)
    for trial in range(5):
        k = 7
        weights = rng.random((k, k))
        weights = (weights + weights.T).astype(np.float32)
        members = rng.random(k) < 0.8
        members[:3] = True
        side = np.asarray(cut_fn(jnp.asarray(weights), jnp.asarray(members)))
        assert side.any() and not (side & ~members).any() and (members & ~side).any(), trial
        inside = np.flatnonzero(members)
        best = min(
            cut_weight(weights, inside, np.isin(np.arange(k), chosen))
            for r in range(1, len(inside))
            for chosen in itertools.combinations(inside, r)
        )
        assert cut_weight(weights, inside, side) == pytest.approx(best, rel=1e-5), trial


# --- engine ----------------------------------------------------------------------------------------


def test_vmapped_round_with_a_padded_client_equals_the_per_client_loop():
    alg = graph_algorithm("gcfl_plus", 4)
    _, fed = synthetic_federation(slots=4)
    assert np.asarray(fed.client_mask).tolist() == [True, True, True, False]
    server, clients = init_states(alg, fed, INIT_KEY)
    v_server, v_clients, _ = make_round(alg, EngineConfig(donate=False))(
        server, clients, fed, ROUND_KEY, evaluate=False
    )
    l_server, l_clients = loop_round(alg, server, clients, fed, ROUND_KEY)
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    assert not np.allclose(*(jax.tree.leaves(s["models"])[0][0] for s in (server, v_server)))


def test_bad_options_are_one_line_errors():
    with pytest.raises(UserError, match="seq_length"):
        gcfl.parse_options({"seq_length": 0})
    with pytest.raises(UserError, match="unknown gcfl_plus option"):
        gcfl.parse_options({"eps3": 1.0})
