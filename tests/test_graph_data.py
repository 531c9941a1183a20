"""Graph loaders: staged figures, Planetoid node order, checksums, the restricted unpickler."""

import io
import pathlib
import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from fedjax_syn.core.errors import UserError
from fedjax_syn.data import graphs
from fedjax_syn.data.unpickle import load_pickle, restricted_load

# (nodes, undirected edges, features, classes), as verified in each folder's SOURCE.md.
STAGED = {
    "cora": (2708, 5278, 1433, 7),
    "citeseer": (3327, 4552, 3703, 6),
    "photo": (7650, 119081, 745, 8),
    "computers": (13752, 245861, 767, 10),
    "cs": (18333, 81894, 6805, 15),
    "physics": (34493, 247962, 8415, 5),
}
CORA_FILES = ("allx", "ally", "tx", "ty", "graph", "test.index")


def _no_network(url, out):
    raise AssertionError(f"a test tried to download {url}")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test downloads or writes into the user's cache."""
    monkeypatch.setattr(graphs, "fetch_url", _no_network)
    monkeypatch.setenv("FEDJAX_SYN_CACHE_DIR", str(tmp_path / "default_cache"))


@pytest.mark.parametrize("name", sorted(STAGED))
def test_staged_dataset_has_published_figures(name, data_dir):
    data = graphs.load_graph(name, data_dir=data_dir, download=False)
    nodes, edges, feats, classes = STAGED[name]
    assert data.name == name
    assert data.x.shape == (nodes, feats) and data.x.dtype == np.float32
    assert data.y.shape == (nodes,) and data.y.dtype == np.int32
    assert data.num_classes == classes
    assert data.y.min() == 0 and data.y.max() == classes - 1
    assert data.edges.shape == (2, edges) and data.edges.dtype == np.int64
    src, dst = data.edges
    assert np.all(src < dst) and dst.max() < nodes
    assert len(np.unique(src * nodes + dst)) == edges


def test_label_counts_follow_pyg(data_dir):
    # SOURCE.md counts; CiteSeer's class 0 also holds the 15 padded isolated test ids.
    cora = graphs.load_graph("cora", data_dir=data_dir, download=False)
    citeseer = graphs.load_graph("citeseer", data_dir=data_dir, download=False)
    assert np.bincount(cora.y).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert np.bincount(citeseer.y).tolist() == [249 + 15, 590, 668, 701, 596, 508]


def test_cora_matches_kipf_reconstruction(data_dir):
    """Kipf's loader: vstack(allx, tx), then rows test_index <- rows sorted(test_index)."""
    raw = {s: data_dir / "cora" / f"ind.cora.{s}" for s in CORA_FILES}
    allx, tx = load_pickle(raw["allx"]), load_pickle(raw["tx"])
    ally, ty = load_pickle(raw["ally"]), load_pickle(raw["ty"])
    test_index = [int(line) for line in raw["test.index"].read_text().split()]
    features = sp.vstack([allx, tx]).tolil()
    features[test_index, :] = features[sorted(test_index), :]
    labels = np.vstack([ally, ty])
    labels[test_index, :] = labels[sorted(test_index), :]
    expected_edges = {
        (min(a, b), max(a, b)) for a, nbrs in load_pickle(raw["graph"]).items() for b in nbrs
    }
    expected_edges = {e for e in expected_edges if e[0] != e[1]}

    data = graphs.load_graph("cora", data_dir=data_dir, download=False)
    np.testing.assert_array_equal(data.x, features.toarray())
    np.testing.assert_array_equal(data.y, labels.argmax(1))
    assert set(zip(*data.edges.tolist(), strict=True)) == expected_edges


def test_citeseer_pads_isolated_test_ids_with_zeros(data_dir):
    test_index = np.loadtxt(data_dir / "citeseer" / "ind.citeseer.test.index", dtype=np.int64)
    span = np.arange(test_index.min(), test_index.max() + 1)
    padded = np.setdiff1d(span, test_index)
    data = graphs.load_graph("citeseer", data_dir=data_dir, download=False)
    assert len(padded) == 15
    assert not data.x[padded].any()
    assert np.all(data.y[padded] == 0)
    assert data.x[test_index].any(axis=1).all()


def test_pubmed_names_the_missing_allx(data_dir, tmp_path):
    with pytest.raises(UserError) as err:
        graphs.load_graph("pubmed", data_dir=data_dir, cache_dir=tmp_path, download=False)
    message = str(err.value)
    assert message.startswith("missing ind.pubmed.allx:")
    assert str(data_dir / "pubmed" / "ind.pubmed.allx") in message
    assert "\n" not in message


def test_failed_download_is_one_clear_line(monkeypatch, data_dir, tmp_path):
    def unreachable(url, out):
        raise OSError("Name or service\nnot known")

    monkeypatch.setattr(graphs, "fetch_url", unreachable)
    with pytest.raises(UserError) as err:
        graphs.load_graph("pubmed", data_dir=data_dir, cache_dir=tmp_path, download=True)
    message = str(err.value)
    assert message.startswith("missing ind.pubmed.allx:")
    assert "download from https://raw.githubusercontent.com/kimiyoung/planetoid/" in message
    assert "Name or service not known" in message and "\n" not in message
    assert not list((tmp_path / "pubmed").iterdir())  # no partial file left behind


def test_download_verifies_and_fills_the_cache(monkeypatch, data_dir, tmp_path):
    fetched = []

    def from_staged(url, out):
        fetched.append(url.rsplit("/", 1)[1])
        out.write((data_dir / "cora" / fetched[-1]).read_bytes())

    monkeypatch.setattr(graphs, "fetch_url", from_staged)
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    data = graphs.load_graph("cora", data_dir=empty, cache_dir=cache, download=True)
    assert sorted(fetched) == sorted(f"ind.cora.{s}" for s in CORA_FILES)
    assert sorted(p.name for p in (cache / "cora").iterdir()) == sorted(fetched)

    monkeypatch.setattr(graphs, "fetch_url", _no_network)
    again = graphs.load_graph("cora", data_dir=empty, cache_dir=cache, download=True)
    staged = graphs.load_graph("cora", data_dir=data_dir, download=False)
    for loaded in (data, again):
        np.testing.assert_array_equal(loaded.x, staged.x)
        np.testing.assert_array_equal(loaded.edges, staged.edges)


def test_download_with_wrong_checksum_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(graphs, "fetch_url", lambda url, out: out.write(b"not the file"))
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="sha256"):
        graphs.load_graph("cora", data_dir=tmp_path / "empty", cache_dir=cache, download=True)
    assert not list((cache / "cora").iterdir())


def test_corrupt_staged_file_is_refused(data_dir, tmp_path):
    shutil.copytree(data_dir / "cora", tmp_path / "cora")
    (tmp_path / "cora").chmod(0o755)
    target = tmp_path / "cora" / "ind.cora.ty"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(UserError, match=r"ind\.cora\.ty has sha256"):
        graphs.load_graph("cora", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)


def test_data_dir_defaults_to_the_environment(monkeypatch, data_dir):
    monkeypatch.setenv("FEDJAX_SYN_DATA_DIR", str(data_dir))
    assert graphs.load_graph("cora", download=False).num_nodes == 2708


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="'imagenet'"):
        graphs.load_graph("imagenet", download=False)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_unpickler_refuses_os_system_and_never_runs_it(tmp_path):
    import os

    marker = tmp_path / "pwned"
    payloads = [
        pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2),
        f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),  # names `os` explicitly
    ]
    for payload in payloads:
        with pytest.raises(UserError, match=r"evil\.pkl.*system"):
            restricted_load(io.BytesIO(payload), "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (pickle.dumps(_Evil(eval, "1 + 1"), protocol=2), "__builtin__.eval"),
        (pickle.dumps(_Evil(eval, "1 + 1"), protocol=4), "builtins.eval"),
        (b"cnumpy\nload\n(S'x'\ntR.", "numpy.load"),  # an allowed module, a refused name
        (b"c__builtin__\ngetattr\n.", "__builtin__.getattr"),
    ],
)
def test_unpickler_refuses_other_globals(payload, refused):
    with pytest.raises(UserError, match=rf"bad\.pkl.*{refused}"):
        restricted_load(io.BytesIO(payload), "bad.pkl")


def test_unpickler_reports_a_truncated_file():
    payload = pickle.dumps(np.arange(5), protocol=4)[:-3]
    with pytest.raises(UserError, match=r"cannot unpickle short\.pkl"):
        restricted_load(io.BytesIO(payload), "short.pkl")


def test_unpickler_loads_what_planetoid_needs(data_dir):
    from collections import defaultdict

    value = {
        "m": sp.csr_matrix(np.eye(3, dtype=np.float32)),
        "a": np.arange(6, dtype=np.int32).reshape(2, 3),
        "g": defaultdict(list, {0: [1, 2]}),
    }
    loaded = restricted_load(io.BytesIO(pickle.dumps(value, protocol=4)), "ok.pkl")
    np.testing.assert_array_equal(loaded["m"].toarray(), np.eye(3))
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["g"] == {0: [1, 2]}

    allx = load_pickle(pathlib.Path(data_dir) / "cora" / "ind.cora.allx")
    assert sp.issparse(allx) and allx.shape == (1708, 1433)
    graph = load_pickle(pathlib.Path(data_dir) / "cora" / "ind.cora.graph")
    assert isinstance(graph, defaultdict) and len(graph) == 2708
