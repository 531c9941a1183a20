"""FedSage+: the mending-simulation targets and greedy loss by hand, NeighGen learning to fill in
missing neighbours, the mended graph's neighbour means by hand, num_pred=0 == FedAvg, and the
vmapped setup and training rounds == per-client loops (padded clients included)."""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_syn.algorithms import fedsage as fs
from fedjax_syn.algorithms.registry import BUILDERS, check_options
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.graph import Graph, mean_of_neighbours
from fedjax_syn.engine.round import EngineConfig, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN
from tests.engine_fixtures import Cfg, loop_round
from tests.test_graph_engine import (
    CLASSES,
    assert_trees_close,
    graph_algorithm,
    synthetic_federation,
)

TINY = {"encoder_hidden": [8], "fgen_hidden": [16], "gen_steps": 3, "num_pred": 2}


def undirected(x, pairs, num_edges=None, node_mask=None) -> Graph:
    """A graph on features x with each pair linked both ways, padded to `num_edges` edges."""
    pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
    senders = np.concatenate([pairs[:, 0], pairs[:, 1]])
    receivers = np.concatenate([pairs[:, 1], pairs[:, 0]])
    pad = (num_edges or len(senders)) - len(senders)
    mask = np.r_[np.ones(len(senders), bool), np.zeros(pad, bool)]
    n = len(x)
    node_mask = np.ones(n, bool) if node_mask is None else np.asarray(node_mask)
    return Graph(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(np.r_[senders, np.zeros(pad, np.int32)]),
        jnp.asarray(np.r_[receivers, np.full(pad, 2, np.int32)]),
        jnp.asarray(mask),
        jnp.asarray(node_mask),
    )


def fedsage_algorithm(**options):
    """`graph_algorithm("fedsage")` with `options` as its cfg.fedsage."""
    original = BUILDERS["fedsage"]
    with_options = lambda cfg, task, spec: original(Cfg(cfg, fedsage=options), task, spec)
    with mock.patch.dict(BUILDERS, {"fedsage": with_options}):
        return graph_algorithm("fedsage")


def test_targets_count_and_list_each_nodes_hidden_neighbours():
    # 0-1, 0-2, 0-3, 1-2, 3-4; a padded edge 2 -> 2 stays out. Hidden: 2 and 3.
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    graph = undirected(x, [(0, 1), (0, 2), (0, 3), (1, 2), (3, 4)], num_edges=12)
    hidden = jnp.array([False, False, True, True, False])
    counts, targets, slots = fs.missing_targets(graph, hidden, num_pred=2)
    np.testing.assert_array_equal(counts, [2, 1, 0, 0, 1])  # hidden nodes lose nothing
    np.testing.assert_array_equal(slots, [[1, 1], [1, 0], [0, 0], [0, 0], [1, 0]])
    assert {tuple(t) for t in np.asarray(targets[0])} == {tuple(x[2]), tuple(x[3])}
    np.testing.assert_array_equal(targets[1], [x[2], [0, 0]])
    np.testing.assert_array_equal(targets[4], [x[3], [0, 0]])
    # num_pred caps the listed neighbours, never the count.
    counts, targets, slots = fs.missing_targets(graph, hidden, num_pred=1)
    assert counts[0] == 2 and slots[0].tolist() == [True]
    assert tuple(np.asarray(targets[0, 0])) in {tuple(x[2]), tuple(x[3])}
    impaired = fs.impair(graph, hidden)
    kept = np.asarray(impaired.edge_mask)
    pairs = set(zip(np.asarray(graph.senders)[kept].tolist(), np.asarray(graph.receivers)[kept]))
    assert pairs == {(0, 1), (1, 0)}
    np.testing.assert_array_equal(impaired.node_mask, [True, True, False, False, True])


def test_greedy_loss_charges_each_generated_slot_its_nearest_true_neighbour():
    gen = jnp.array([[[0.0, 0.0], [1.0, 1.0]]])
    true = jnp.array([[[1.0, 0.0], [3.0, 1.0]]])
    d = lambda a, b: float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))
    one = fs.greedy_feature_loss(gen, true, jnp.array([[True, False]]))
    assert float(one) == pytest.approx(d(gen[0, 0], true[0, 0]))
    both = fs.greedy_feature_loss(gen, true, jnp.array([[True, True]]))
    expected = d(gen[0, 0], true[0, 0]) + min(d(gen[0, 1], true[0, 0]), d(gen[0, 1], true[0, 1]))
    assert float(both) == pytest.approx(expected / 2)


def test_mending_adds_the_generated_neighbours_to_each_nodes_neighbourhood():
    # Nodes 0-1 linked, 2 isolated, 3 padding. Counts round to 1, 0, 3 (3 = P), none for padding.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [5.0, 5.0]])
    graph = undirected(x, [(0, 1)], node_mask=[True, True, True, False])
    gen = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 2)), jnp.float32)
    mended = fs.mend_with(graph, jnp.array([1.2, 0.4, 7.0, 2.0]), gen)
    real = np.asarray(mended.node_mask)
    np.testing.assert_array_equal(
        real[4:].reshape(4, 3), [[1, 0, 0], [0, 0, 0], [1, 1, 1], [0] * 3]
    )
    mean = np.asarray(mean_of_neighbours(mended, mended.x))
    g = np.asarray(gen)
    np.testing.assert_allclose(mean[0], (x[1] + g[0, 0]) / 2, rtol=1e-6)
    np.testing.assert_allclose(mean[1], x[0], rtol=1e-6)
    np.testing.assert_allclose(mean[2], g[2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(mean[3], 0.0)
    np.testing.assert_allclose(mean[4], x[0], rtol=1e-6)  # a generated node reads its parent
    # A two-layer GraphSAGE on the mended graph == on the graph built explicitly.
    explicit = undirected(
        np.concatenate([x[:3], g[0, :1], g[2]]), [(0, 1), (0, 3), (2, 4), (2, 5), (2, 6)]
    )
    net = GNN(3, hidden=(4, 4), dropout=0.0)
    params = net.init(jax.random.key(0), explicit)
    np.testing.assert_allclose(
        net.apply(params, mended)[:3], net.apply(params, explicit)[:3], rtol=1e-5, atol=1e-6
    )


def test_neighgen_learns_how_many_neighbours_are_missing_and_their_features():
    """Stars whose leaves copy their centre's feature, every leaf hidden: a centre must predict
    its number of leaves (1-3, a function of its feature) and generate its own feature."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.8, 0.8, size=(9, 6))
    leaves = [1 + g % 3 for g in range(9)]
    x, pairs, hidden = list(centres), [], [False] * 9
    for g, m in enumerate(leaves):
        for _ in range(m):
            pairs.append((g, len(x)))
            x.append(centres[g])
            hidden.append(True)
    graph = undirected(np.array(x), pairs)
    hidden = jnp.array(hidden)
    opts = fs.FedSageOptions(
        num_pred=3,
        gen_steps=300,
        gen_lr=1e-2,
        gen_weight_decay=0.0,
        encoder_hidden=(32,),
        fgen_hidden=(32,),
        dropout=0.0,
        noise_std=0.0,
    )
    net = fs.NeighGen(6, 3, opts.encoder_hidden, opts.fgen_hidden, 0.0, 0.0)
    params = net.init(jax.random.key(1), graph)
    impaired = fs.impair(graph, hidden)
    targets = fs.missing_targets(graph, hidden, 3)
    before = fs.neighgen_loss(net, params, impaired, targets, opts)
    trained, _ = fs.train_neighgen(net, params, graph, hidden, jax.random.key(2), opts)
    after = fs.neighgen_loss(net, trained, impaired, targets, opts)
    assert float(after) < 0.05 * float(before), (before, after)
    counts, generated = net.apply(trained, impaired)
    np.testing.assert_array_equal(np.round(counts[:9]), leaves)
    for g, m in enumerate(leaves):
        np.testing.assert_allclose(generated[g, :m], np.tile(centres[g], (m, 1)), atol=0.1)


def with_dgen_bias(generator, bias: float):
    """A copy of the generator whose dGen bias is `bias` (-5: no node takes a neighbour; 2:
    every node takes two)."""
    generator = jax.tree.map(jnp.copy, generator)
    dgen = generator["params"]["dgen"]
    dgen["bias"] = jnp.full_like(dgen["bias"], bias)
    return generator


@pytest.mark.parametrize("num_pred, dgen_bias", [(0, None), (2, -5.0)])
def test_with_no_generated_neighbours_fedsage_is_fedavg(num_pred, dgen_bias):
    _, fed = synthetic_federation(3, slots=4)
    sage = fedsage_algorithm(**{**TINY, "num_pred": num_pred})
    avg = graph_algorithm("fedavg")
    key, round_key = jax.random.key(0), jax.random.key(5)
    one = jax.tree.map(lambda a: a[0], fed.train)
    s_server, a_server = sage.init_server(key, one), avg.init_server(key, one)
    if dgen_bias is not None:
        s_server["generator"] = with_dgen_bias(s_server["generator"], dgen_bias)
    assert_trees_close(s_server["classifier"], a_server)
    config = EngineConfig(donate=False)
    s_server, _, s_metrics = make_round(sage, config)(s_server, {}, fed, round_key, evaluate=False)
    a_server, _, a_metrics = make_round(avg, config)(a_server, {}, fed, round_key, evaluate=False)
    assert_trees_close(s_server["classifier"], a_server, atol=1e-5)
    assert_trees_close(s_metrics, a_metrics, atol=1e-5)
    graph = jax.tree.map(lambda a: a[0], fed.eval_groups["local"].inputs)
    assert_trees_close(sage.predict(s_server, graph), avg.predict(a_server, graph), atol=1e-4)


def test_clients_train_on_the_mended_graph_when_some_node_takes_a_neighbour():
    _, fed = synthetic_federation(3, slots=4)
    alg = fedsage_algorithm(**TINY)
    server = alg.init_server(jax.random.key(3), jax.tree.map(lambda a: a[0], fed.train))
    server["generator"] = with_dgen_bias(server["generator"], 2.0)
    data = jax.tree.map(lambda a: a[0], fed.train)
    key = jax.random.key(9)
    net = fs.NeighGen(
        data.inputs.x.shape[-1], TINY["num_pred"], TINY["encoder_hidden"], TINY["fgen_hidden"]
    )
    counts, generated = net.apply(server["generator"], data.inputs)
    assert fs.takes_any(counts, data.inputs.node_mask, TINY["num_pred"])
    mended = fs.mend_with(data.inputs, counts, generated)
    mended = mended._replace(neighbour_mean=mean_of_neighbours(mended, mended.x))
    result = alg.client_update(server, {}, data, key)
    plain = graph_algorithm("fedavg").client_update(server["classifier"], {}, data, key)
    on_mended = graph_algorithm("fedavg").client_update(
        server["classifier"], {}, ClientData(mended, data.labels, data.mask, data.val_mask), key
    )
    assert_trees_close(result.upload["classifier"], on_mended.upload["params"], atol=1e-5)
    assert not np.allclose(
        jax.tree.leaves(result.upload["classifier"])[0], jax.tree.leaves(plain.upload["params"])[0]
    )


def test_setup_trains_and_averages_the_generator_then_rounds_train_the_classifier():
    """Round 0 (setup) moves only the generator, later rounds only the classifier; both
    programs, vmapped, equal one client at a time (padded client included)."""
    _, fed = synthetic_federation(3, slots=4)
    alg = fedsage_algorithm(**TINY)
    server = alg.init_server(jax.random.key(3), jax.tree.map(lambda a: a[0], fed.train))
    config = EngineConfig(donate=False)
    setup = alg._replace(client_update=alg.setup_client)
    for stage, moves, stays in (
        (setup, "generator", "classifier"),
        (alg, "classifier", "generator"),
    ):
        round_key = jax.random.key(7)
        v_server, v_clients, _ = make_round(stage, config)(
            server, {}, fed, round_key, evaluate=False
        )
        l_server, l_clients = loop_round(stage, server, {}, fed, round_key)
        assert_trees_close(v_server, l_server)
        assert_trees_close(v_clients, l_clients)
        assert_trees_close(v_server[stays], server[stays])
        assert not np.allclose(
            jax.tree.leaves(v_server[moves])[0], jax.tree.leaves(server[moves])[0]
        )
        # dGen's bias at 2: the classifier round trains on graphs with generated neighbours.
        server = {**v_server, "generator": with_dgen_bias(v_server["generator"], 2.0)}


def test_options_are_checked():
    assert fs.fedsage_options({"fgen_hidden": [4, 4]}).fgen_hidden == (4, 4)
    with pytest.raises(UserError, match="hide_frac"):
        check_options(Cfg(algorithm="fedsage", fedsage={"hide_frac": 1.0}))
    with pytest.raises(UserError, match="unknown fedsage"):
        fs.fedsage_options({"num_preds": 3})
    task = Task(GNN(2), graph=False)
    with pytest.raises(UserError, match="graph track"):
        fs.fedsage_plus(task, optax.sgd(0.1), None, 4)


def test_mending_skips_fgen_only_when_no_node_gets_a_neighbour():
    """`predict` == the classifier on the graph mended with fGen always run, whether no node,
    some or every node gets neighbours; one client at a time the round keeps fGen behind a real
    branch (a vmapped round runs both)."""
    _, fed = synthetic_federation(3, slots=4)
    alg = fedsage_algorithm(**TINY)
    server = alg.init_server(jax.random.key(3), jax.tree.map(lambda a: a[0], fed.train))
    graph = jax.tree.map(lambda a: a[0], fed.eval_groups["local"].inputs)
    net = fs.NeighGen(
        graph.x.shape[-1], TINY["num_pred"], TINY["encoder_hidden"], TINY["fgen_hidden"]
    )
    classifier = GNN(CLASSES, kind="sage", hidden=(16, 8), dropout=0.5)

    with_bias = lambda bias: with_dgen_bias(server["generator"], bias)
    # dGen's count with a zero bias, moved so that its median node sits at 0.5: some nodes take.
    at_zero, _ = net.apply(with_bias(0.0), graph)
    middle = 0.5 - float(jnp.median(at_zero[graph.node_mask]))
    taken = []
    for bias in (-5.0, middle, 2.0):  # no node, some nodes, every node gets neighbours
        generator = with_bias(bias)
        counts, generated = net.apply(generator, graph)
        taken.append(int(jnp.sum((fs.neighbours_taken(counts, 2) > 0) & graph.node_mask)))
        mended = fs.mend_with(graph, counts, generated)
        want = classifier.apply(server["classifier"], mended)[: graph.num_nodes]
        got = alg.predict({**server, "generator": generator}, graph)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert taken[0] == 0 and 0 < taken[1] < taken[2] == int(graph.node_mask.sum()), taken
    key = jax.random.key(7)
    for chunk, branches in ((1, True), (None, False)):
        round_fn = jax.jit(
            make_round(alg, EngineConfig(client_chunk=chunk, donate=False)),
            static_argnames=("evaluate",),
        )
        text = round_fn.lower(server, {}, fed, key, evaluate=False).as_text()
        assert ("stablehlo.case" in text) == branches, chunk


def test_neighgen_parameters_keep_the_names_earlier_runs_were_saved_with():
    """Checkpoints and ledger records of earlier runs hold these names; renaming a layer would
    change both the restore and the initialisation (flax derives it from the names)."""
    graph = undirected(np.ones((3, 6)), [(0, 1), (1, 2)])
    params = fs.NeighGen(6, 2, (8, 4), (16, 32)).init(jax.random.key(0), graph)["params"]
    assert sorted(params) == ["Dense_0", "Dense_1", "dgen", "encoder", "fgen"]
    assert params["fgen"]["kernel"].shape == (32, 12)
