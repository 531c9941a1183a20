"""Subgraph-FL splits on Cora: partition, unseen nodes, missing classes, seen split, determinism."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from fedjax_syn.core.errors import UserError
from fedjax_syn.data.graph_arrays import graph_arrays
from fedjax_syn.data.graph_split import build_graph_federation, split_table
from fedjax_syn.data.graphs import load_graph

REPO = pathlib.Path(__file__).resolve().parents[1]
MASKS = ("train", "val", "test", "unseen")


@pytest.fixture(scope="module")
def cora(data_dir):
    return load_graph("cora", data_dir=data_dir, download=False)


def _arrays(fed):
    """Every array of a federation, in a fixed order."""
    for client in [*fed.clients, fed.new_client]:
        yield from (client.nodes, client.y, client.edges, client.missing_classes)
        yield from (getattr(client, m) for m in MASKS)


def _digest(fed) -> str:
    h = hashlib.sha256()
    for a in _arrays(fed):
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


CONFIGS = [
    ("louvain", "closeset", 3),
    ("louvain", "openset", 3),
    ("louvain", "closeset", 10),
    ("random", "closeset", 5),
    ("random", "openset", 5),
]


@pytest.mark.parametrize("partitioner, setting, k", CONFIGS)
def test_split_invariants(cora, partitioner, setting, k):
    fed = build_graph_federation(cora, k, partitioner=partitioner, setting=setting, seed=1)
    everyone = [*fed.clients, fed.new_client]
    assert len(fed.clients) == k

    # Parts are disjoint, cover every node, and keep exactly the edges inside a part.
    all_nodes = np.concatenate([c.nodes for c in everyone])
    np.testing.assert_array_equal(np.sort(all_nodes), np.arange(cora.num_nodes))
    part_of = np.empty(cora.num_nodes, int)
    for i, c in enumerate(everyone):
        part_of[c.nodes] = i
    inside = part_of[cora.edges[0]] == part_of[cora.edges[1]]
    assert sum(c.edges.shape[1] for c in everyone) == inside.sum()
    for c in everyone:
        assert np.all(np.diff(c.nodes) > 0)
        np.testing.assert_array_equal(c.y, cora.y[c.nodes])
        assert c.edges.dtype == np.int64 and np.all(c.edges[0] < c.edges[1])
        global_edges = c.nodes[c.edges]
        assert np.all(part_of[global_edges] == part_of[c.nodes[0]])

    trained = np.zeros(cora.num_classes, bool)
    present_in_training = np.zeros(cora.num_classes, bool)
    training_graph = graph_arrays(fed).train.inputs  # what local training propagates over
    for i, c in enumerate(fed.clients):
        n = c.num_nodes
        train, val, test, unseen = (getattr(c, m) for m in MASKS)
        missing_seen = c.missing_eval & ~unseen
        # Every node is exactly one of: train, val, test, unseen, seen node of a missing class.
        np.testing.assert_array_equal(
            train.astype(int) + val + test + unseen + missing_seen, np.ones(n)
        )
        # Missing classes never carry a training or validation label.
        assert not np.any((train | val) & c.missing_eval)
        present = np.bincount(c.y, minlength=cora.num_classes) > 0
        assert not np.any(c.missing_classes & ~present)
        assert 1 <= c.missing_classes.sum() < present.sum()
        trained |= np.bincount(c.y[train], minlength=cora.num_classes) > 0
        present_in_training |= present
        # Unseen: round(0.2 n) nodes, from trained classes only in closeset.
        assert unseen.sum() == int(np.floor(0.2 * n + 0.5))
        if setting == "closeset":
            assert not np.any(unseen & c.missing_eval)
        # The training-time subgraph has no edge touching an unseen node, and loses no other edge
        # (each undirected edge is two directed ones).
        kept = np.asarray(training_graph.edge_mask[i])
        senders, receivers = (
            np.asarray(a[i])[kept] for a in (training_graph.senders, training_graph.receivers)
        )
        assert not (unseen[senders] | unseen[receivers]).any()
        touching = unseen[c.edges[0]] | unseen[c.edges[1]]
        assert kept.sum() == 2 * (c.edges.shape[1] - touching.sum())
        # Seen split is stratified 0.6 / 0.2 / 0.2 (up to rounding) within each class.
        seen = train | val | test
        for cls in np.unique(c.y[seen]):
            n_cls = np.sum(seen & (c.y == cls))
            assert train[c.y == cls].sum() >= 1
            assert abs(train[c.y == cls].sum() - 0.6 * n_cls) <= 1
            assert abs(val[c.y == cls].sum() - 0.2 * n_cls) <= 1
    np.testing.assert_array_equal(trained, present_in_training)

    new = fed.new_client
    assert new.test.all() and not (new.train.any() or new.val.any() or new.unseen.any())
    assert not new.missing_classes.any()
    assert json.loads(json.dumps(fed.protocol)) == {
        "dataset": "cora",
        "num_clients": k,
        "partitioner": partitioner,
        "setting": setting,
        "unseen_frac": 0.2,
        "missing_frac": 0.3,
        "split": [0.6, 0.2, 0.2],
        "seed": 1,
    }


def test_openset_draws_unseen_nodes_from_missing_classes(cora):
    fed = build_graph_federation(cora, 3, setting="openset", seed=0)
    assert sum(np.sum(c.unseen & c.missing_eval) for c in fed.clients) > 0


def test_louvain_parts_are_balanced_by_greedy_packing(cora):
    fed = build_graph_federation(cora, 3, seed=0)
    sizes = [c.num_nodes for c in [*fed.clients, fed.new_client]]
    # Cora has ~100 communities, many small, so largest-first packing evens the parts out.
    assert max(sizes) - min(sizes) <= 0.05 * np.mean(sizes)


def test_same_seed_gives_identical_arrays(cora):
    for partitioner in ("louvain", "random"):
        a = build_graph_federation(cora, 5, partitioner=partitioner, setting="openset", seed=3)
        b = build_graph_federation(cora, 5, partitioner=partitioner, setting="openset", seed=3)
        c = build_graph_federation(cora, 5, partitioner=partitioner, setting="openset", seed=4)
        pairs = list(zip(_arrays(a), _arrays(b), strict=True))
        assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs)
        assert _digest(a) == _digest(b) != _digest(c)


def test_split_is_identical_in_a_fresh_process(cora, data_dir):
    """Louvain with a fixed seed must not depend on hash randomisation or process state."""
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_graph_split import _digest;"
        "from fedjax_syn.data.graphs import load_graph;"
        "from fedjax_syn.data.graph_split import build_graph_federation;"
        f"d = load_graph('cora', data_dir={str(data_dir)!r}, download=False);"
        "print(_digest(build_graph_federation(d, 3, seed=2)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == _digest(build_graph_federation(cora, 3, seed=2))


def test_every_class_stays_trained_when_most_are_hidden(cora):
    fed = build_graph_federation(cora, 3, missing_frac=0.9, seed=0)
    trained = np.zeros(cora.num_classes, bool)
    for c in fed.clients:
        trained[np.unique(c.y[c.train])] = True
        assert not np.any(c.train & c.missing_eval)
    assert trained.all()
    assert any(c.missing_classes.sum() > 1 for c in fed.clients)


def test_single_client_trains_every_class(cora):
    fed = build_graph_federation(cora, 1, seed=0)
    assert not fed.clients[0].missing_classes.any()


def test_zero_fractions_hide_nothing(cora):
    fed = build_graph_federation(cora, 3, unseen_frac=0.0, missing_frac=0.0, seed=0)
    for c in fed.clients:
        assert not c.unseen.any() and not c.missing_classes.any()
        assert (c.train | c.val | c.test).all()


def test_metis_without_pymetis_says_how_to_install(cora, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)
    with pytest.raises(UserError, match="pip install pymetis"):
        build_graph_federation(cora, 3, partitioner="metis")


def test_metis_gets_the_symmetric_adjacency(cora, monkeypatch):
    calls = {}

    def part_graph(n_parts, xadj, adjncy, options):
        calls.update(n_parts=n_parts, xadj=xadj, adjncy=adjncy, seed=options.seed)
        return 0, list(np.arange(len(xadj) - 1) % n_parts)

    fake = types.SimpleNamespace(part_graph=part_graph, Options=types.SimpleNamespace)
    monkeypatch.setitem(sys.modules, "pymetis", fake)
    fed = build_graph_federation(cora, 3, partitioner="metis", seed=7)
    assert calls["n_parts"] == 4 and calls["seed"] == 7
    xadj, adjncy = np.asarray(calls["xadj"]), np.asarray(calls["adjncy"])
    assert len(xadj) == cora.num_nodes + 1 and len(adjncy) == 2 * cora.edges.shape[1]
    src = np.repeat(np.arange(cora.num_nodes), np.diff(xadj))
    np.testing.assert_array_equal(np.sort(src * 10_000 + adjncy), np.sort(adjncy * 10_000 + src))
    np.testing.assert_array_equal(fed.new_client.nodes, np.arange(3, cora.num_nodes, 4))


def test_split_table_matches_the_masks(cora):
    fed = build_graph_federation(cora, 3, setting="openset", seed=0)
    rows = [line.split("|")[1:-1] for line in split_table(fed).splitlines() if line[:2] == "| "]
    header, body = rows[0], rows[2:]  # rows[1] is the alignment row
    assert [h.strip() for h in header] == [
        "client", "class", "nodes", "train", "val", "test", "unseen", "missing"
    ]  # fmt: skip
    table = {(r[0].strip(), r[1].strip()): [int(v) for v in r[2:]] for r in body}
    for name, c in [*((str(k), c) for k, c in enumerate(fed.clients)), ("new", fed.new_client)]:
        expected_all = [c.num_nodes, *(int(getattr(c, m).sum()) for m in MASKS)]
        assert table[(name, "all")] == [*expected_all, int(c.missing_eval.sum())]
        for cls in np.unique(c.y):
            of = c.y == cls
            assert table[(name, str(cls))][:2] == [of.sum(), (c.train & of).sum()]
    assert len(body) == sum(len(np.unique(c.y)) + 1 for c in [*fed.clients, fed.new_client])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"setting": "halfset"}, "setting 'halfset'"),
        ({"partitioner": "spectral"}, "partitioner 'spectral'"),
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": -2}, "num_clients"),
        ({"num_clients": 2.5}, "num_clients"),
        ({"num_clients": 5000}, "5001 parts"),
        ({"unseen_frac": 1.0}, "unseen_frac"),
        ({"unseen_frac": -0.1}, "unseen_frac"),
        ({"missing_frac": 1.0}, "missing_frac"),
        ({"split": (0.5, 0.2, 0.2)}, "split"),
        ({"split": (0.0, 0.5, 0.5)}, "split"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_inputs_are_user_errors(cora, kwargs, match):
    kwargs = {"num_clients": 3, **kwargs}
    with pytest.raises(UserError, match=match):
        build_graph_federation(cora, **kwargs)


def _splits(*args, data_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO), "FEDJAX_SYN_DATA_DIR": str(data_dir)}
    mode = ["-m", "experiments.main", "--mode=splits", "--config=experiments/configs/cora.py"]
    return subprocess.run(
        [sys.executable, *mode, *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_splits_mode_prints_the_split_table(cora, data_dir):
    ok = _splits("--config.num_clients=2", "--config.seed=5", data_dir=data_dir)
    assert ok.returncode == 0, ok.stderr
    name, table = ok.stdout.split("\n", 1)
    assert name.startswith("cora_num_clients=2_partitioner=louvain") and name.endswith("seed=5")
    assert table == split_table(build_graph_federation(cora, 2, seed=5)) + "\n"
    # A bad split option is refused in one line before any split is built (the other bad flags
    # take the same path in every mode: test_cli_config).
    out = _splits("--config.setting=halfset", data_dir=data_dir)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "halfset" in out.stderr
