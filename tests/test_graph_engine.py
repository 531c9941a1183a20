"""The engine on graphs: client subgraph arrays, vmapped == per-client loop, sharded == single
device (on a small synthetic graph federation), and FedAvg on Cora with every evaluation setting."""

import jax
import numpy as np
import pytest

from experiments.configs import cora
from fedjax_syn.algorithms.registry import BUILDERS
from fedjax_syn.core.graph import mean_of_neighbours
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.data.graph_arrays import GRAPH_SETTINGS, graph_arrays
from fedjax_syn.data.graph_split import build_graph_federation
from fedjax_syn.data.graphs import GraphDataset
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN
from fedjax_syn.runs import program
from fedjax_syn.runs.prepare import prepare
from tests.engine_fixtures import Cfg, assert_trees_close, loop_round

CLASSES = 4


def synthetic_graph(num_nodes: int = 160, features: int = 12, seed: int = 0) -> GraphDataset:
    """A stochastic block model: same-class pairs linked 8x more often, features centred by class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=num_nodes).astype(np.int32)
    centres = rng.normal(size=(CLASSES, features))
    x = (centres[y] + rng.normal(size=(num_nodes, features))).astype(np.float32)
    i, j = np.triu_indices(num_nodes, k=1)
    p = np.where(y[i] == y[j], 0.08, 0.01)
    keep = rng.random(len(i)) < p
    return GraphDataset("sbm", x, y, np.stack([i[keep], j[keep]]).astype(np.int64), CLASSES)


def synthetic_federation(num_clients: int = 3, slots: int | None = None):
    split = build_graph_federation(synthetic_graph(), num_clients, partitioner="random", seed=0)
    return split, graph_arrays(split, slots)


def graph_algorithm(name: str, num_clients: int = 3, **groups):
    """`name` on a small GraphSAGE; `num_clients` is the clients axis (padded clients included),
    `groups` are option groups (e.g. fedtad={...})."""
    task = Task(GNN(CLASSES, kind="sage", hidden=(16, 8), dropout=0.5), graph=True)
    cfg = Cfg(
        algorithm=name,
        optimizer="adam",
        lr=1e-2,
        momentum=0.0,
        weight_decay=5e-4,
        batch_size=8,
        local_epochs=1,
        local_steps=0,
        drop_last=True,
        weighted=True,
        finetune_epochs=1,
        prox_mu=0.01,
        **groups,
    )
    spec = DataSpec("graph", CLASSES, (12,), num_clients, 0, GRAPH_SETTINGS)
    return BUILDERS[name](cfg, task, spec)


def run_rounds(alg, fed, rounds: int = 2, seed: int = 0):
    """(server, per-round accuracies) of `rounds` evaluated rounds."""
    round_fn = make_round(alg, EngineConfig(donate=False))
    key = jax.random.key(seed)
    server, clients = init_states(alg, fed, key)
    history = []
    for r in range(1, rounds + 1):
        server, clients, metrics = round_fn(
            server, clients, fed, jax.random.fold_in(key, r), evaluate=True
        )
        history.append(evaluation.accuracies(metrics["counts"]["personalized"]))
    return server, history


def test_client_arrays_follow_the_split():
    split, fed = synthetic_federation(num_clients=3, slots=4)
    train, local = fed.train, fed.eval_groups["local"]
    assert np.asarray(fed.client_mask).tolist() == [True, True, True, False]
    for k, client in enumerate(split.clients):
        n = client.num_nodes
        node_mask = np.asarray(train.inputs.node_mask[k])
        assert node_mask[:n].all() and not node_mask[n:].any()
        np.testing.assert_array_equal(np.asarray(train.labels[k, :n]), client.y)
        np.testing.assert_array_equal(np.asarray(train.mask[k, :n]), client.train)
        np.testing.assert_array_equal(np.asarray(train.val_mask[k, :n]), client.val)
        expected = {
            "val": client.val,
            "seen": client.test,
            "unseen_node": client.unseen,
            "missing_class": client.missing_eval,
        }
        for name, mask in expected.items():
            np.testing.assert_array_equal(np.asarray(local.masks[name][k, :n]), mask)
            assert not np.asarray(local.masks[name][k, n:]).any()

        senders = np.asarray(train.inputs.senders[k])
        receivers = np.asarray(train.inputs.receivers[k])
        full = np.asarray(local.inputs.edge_mask[k])
        trained = np.asarray(train.inputs.edge_mask[k])
        # The evaluation graph holds every edge of the part, both ways; padded edges are masked.
        real = {(int(s), int(r)) for s, r in zip(senders[full], receivers[full])}
        src, dst = client.edges
        assert real == set(zip(src.tolist(), dst.tolist())) | set(zip(dst.tolist(), src.tolist()))
        assert full.sum() == 2 * client.edges.shape[1]
        # The training graph drops exactly the edges touching an unseen node.
        touches = client.unseen[senders] | client.unseen[receivers]
        np.testing.assert_array_equal(trained, full & ~touches)
        # Each graph caches the mean neighbour features under its own edges.
        for graph in (train.inputs, local.inputs):
            one = jax.tree.map(lambda leaf, k=k: leaf[k], graph._replace(neighbour_mean=None))
            np.testing.assert_allclose(
                graph.neighbour_mean[k], mean_of_neighbours(one, one.x), rtol=1e-6, atol=1e-6
            )
    padded = 3
    assert not np.asarray(train.mask[padded]).any()
    assert not np.asarray(fed.eval_groups["new"].masks["new_client"][padded]).any()
    new = fed.eval_groups["new"]
    assert new.shared
    np.testing.assert_array_equal(np.asarray(new.labels), split.new_client.y)
    bare = new.inputs._replace(neighbour_mean=None)
    np.testing.assert_allclose(
        new.inputs.neighbour_mean, mean_of_neighbours(bare, bare.x), rtol=1e-6, atol=1e-6
    )
    assert np.asarray(new.masks["new_client"][:padded]).all()


def test_vmapped_graph_round_equals_per_client_loop():
    """FedPer: a client state (the GNN's head) and an upload (its encoder) per client."""
    alg = graph_algorithm("fedper")
    _, fed = synthetic_federation()
    server, clients = init_states(alg, fed, jax.random.key(3))
    round_key = jax.random.key(7)
    round_fn = make_round(alg, EngineConfig(donate=False))
    v_server, v_clients, _ = round_fn(server, clients, fed, round_key, evaluate=False)

    l_server, l_clients = loop_round(alg, server, clients, fed, round_key)
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    # The round trained: the server moved.
    assert not np.allclose(jax.tree.leaves(v_server)[0], jax.tree.leaves(server)[0])


def test_sharded_graph_round_on_8_devices_equals_single_device(multi_device):
    """3 clients padded to 8 and sharded over 8 emulated devices == 3 clients on one device."""
    result = multi_device["graph"]
    assert result["devices"] == 8
    assert result["server_diff"] < 1e-5
    assert len(result["single"]) == len(result["sharded"]) == 2
    for single, sharded in zip(result["single"], result["sharded"], strict=True):
        assert single.keys() == sharded.keys()
        for setting in single:
            assert single[setting] == pytest.approx(sharded[setting], abs=1e-6), setting


CORA_ROUNDS = 12


@pytest.fixture(scope="module")
def cora_fedavg(data_dir):
    """FedAvg, GraphSAGE, Cora split over 3 clients, the cora config for CORA_ROUNDS rounds.

    The config's data_dir stays "", so the data come through the FEDJAX_SYN_DATA_DIR fallback
    (which the `data_dir` fixture checks is set)."""
    cfg = cora.get_config()
    assert cfg.data_dir == "" and data_dir.is_dir()
    cfg.rounds = CORA_ROUNDS
    cfg.eval_every = 1
    prepared = prepare(cfg)
    return prepared, program.run([cfg], prepared=[prepared])[0]


def test_fedavg_on_cora_reaches_a_sane_seen_accuracy(cora_fedavg):
    _, record = cora_fedavg
    assert record["last"]["seen"] >= 0.75, record["curves"]["seen"]
    loss = record["curves"]["train_loss"]
    assert loss[-1] < loss[0]


def test_every_cora_setting_is_computed_and_finite(cora_fedavg):
    prepared, record = cora_fedavg
    local = prepared.fed.eval_groups["local"].masks
    # Every setting has examples (K=3 with missing_frac 0.3 hides classes in every client).
    for name in ("seen", "unseen_node", "missing_class"):
        assert (np.asarray(local[name]).sum(axis=1) > 0).all(), name
    assert record["settings"] == list(GRAPH_SETTINGS)
    assert record["eval_rounds"] == list(range(1, CORA_ROUNDS + 1))
    for name in ("val", *GRAPH_SETTINGS):
        curve = record["curves"][name]
        assert len(curve) == CORA_ROUNDS and all(v is not None and 0 <= v <= 1 for v in curve)
    best, last = record["best"], record["last"]
    val = record["curves"]["val"]
    assert best["val"] == max(val)
    assert val[best["round"] - 1] == best["val"]
    assert last["round"] == CORA_ROUNDS
    for name in ("val", *GRAPH_SETTINGS):
        assert np.isfinite(best[name]) and np.isfinite(last[name]), name
        assert last[name] == record["curves"][name][-1]
        assert best[name] == record["curves"][name][best["round"] - 1]
