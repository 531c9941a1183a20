"""Hostile and damaged data files: each is refused with one `UserError` line naming the file, runs
no code, and allocates nothing near the size its header claims (checked with tracemalloc, which
sees numpy's array allocations). One test per class; every file is built in tmp_path.

Graph files are normally refused by their sha256 before they are parsed; `_trust` registers a
hostile file's own hash, so these tests reach the parsers behind that gate.
"""

import gzip
import hashlib
import io
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from collections import defaultdict

import numpy as np
import pytest
import scipy.sparse as sp

from fedjax_syn.core.errors import UserError
from fedjax_syn.data import graphs, vision
from fedjax_syn.data.files import read_npz
from fedjax_syn.data.idx import read_idx
from fedjax_syn.data.unpickle import load_pickle

REPO = pathlib.Path(__file__).resolve().parents[1]
_PEAK_LIMIT = 64 << 20  # bytes: far below any claimed size, far above a tiny file's arrays


def _refused(load, *fragments: str) -> str:
    """Runs `load()`, expecting a one-line UserError holding `fragments`, with a small peak."""
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    assert peak < _PEAK_LIMIT, f"peak {peak} bytes while refusing: {message}"
    return message


def _trust(monkeypatch, name: str, folder: pathlib.Path) -> None:
    """Registers the sha256 of the files in `folder` as dataset `name`'s published ones."""
    sub, url, hashes = graphs._SOURCES[name]
    trusted = {f: hashlib.sha256((folder / sub / f).read_bytes()).hexdigest() for f in hashes}
    monkeypatch.setitem(graphs._SOURCES, name, (sub, url, trusted))


def _load_graph(name: str, root: pathlib.Path) -> graphs.GraphDataset:
    return graphs.load_graph(name, data_dir=root, cache_dir=root / "cache", download=False)


# --- Planetoid (restricted pickles) -------------------------------------------------------------


def _path_graph() -> defaultdict:
    return defaultdict(list, {0: [1], 1: [0, 2], 2: [1, 3], 3: [2]})


def _write_cora(root: pathlib.Path, **replace: bytes) -> pathlib.Path:
    """A 4-node path in Planetoid's format (nodes 0, 1 train; 2, 3 test); `replace` maps a file
    suffix ("allx", "graph", ...) to hostile bytes."""
    folder = root / "cora"
    folder.mkdir(parents=True, exist_ok=True)
    eye = np.eye(2, dtype=np.float32)
    parts = {
        "allx": pickle.dumps(sp.csr_matrix(eye), protocol=4),
        "ally": pickle.dumps(eye.astype(np.int32), protocol=4),
        "tx": pickle.dumps(sp.csr_matrix(eye), protocol=4),
        "ty": pickle.dumps(eye.astype(np.int32), protocol=4),
        "graph": pickle.dumps(_path_graph(), protocol=4),
        "test.index": b"2\n3\n",
    }
    for suffix, content in {**parts, **replace}.items():
        (folder / f"ind.cora.{suffix}").write_bytes(content)
    return folder


def test_planetoid_fixture_loads(tmp_path, monkeypatch):
    _write_cora(tmp_path)
    _trust(monkeypatch, "cora", tmp_path)
    data = _load_graph("cora", tmp_path)
    assert data.num_nodes == 4 and data.edges.tolist() == [[0, 1, 2], [1, 2, 3]]


def test_malicious_pickles_run_no_code_and_allocate_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    code_payloads = {
        "os.system": f"cos\nsystem\n(S'touch {marker}'\ntR.",
        "builtins.eval": f"cbuiltins\neval\n(S'open({str(marker)!r}, \"w\")'\ntR.",
        "__builtin__.exec": f"c__builtin__\nexec\n(S'open({str(marker)!r}, \"w\")'\ntR.",
    }
    big = 10**10  # 80 GB of float64: allocatable lazily on many machines, so a guard must refuse
    empty_array = "cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR"
    f8 = "cnumpy\ndtype\n(S'f8'\nI0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntb"
    alloc_payloads = {  # allowed globals asked for a shape the file does not back
        "ndarray call": f"cnumpy\nndarray\n((I{big}\nttR.",
        "_reconstruct call": empty_array.replace("(I0\n", f"(I{big}\n") + ".",
        "csr_matrix call": f"cscipy.sparse\ncsr_matrix\n((I{big}\nI{big}\nttR.",
        "array state": f"{empty_array}(I1\n(I{big}\nt{f8}I00\nS'12345678'\ntb.",
    }
    for what, payload in code_payloads.items():
        path = tmp_path / "evil.pkl"
        path.write_text(payload)
        _refused(lambda p=path: load_pickle(p), str(path), what)
    for what, payload in alloc_payloads.items():
        path = tmp_path / f"{what.replace(' ', '_')}.pkl"
        path.write_text(payload)
        _refused(lambda p=path: load_pickle(p), str(path))
    # Through the loader, the evil file standing in for a published one.
    _write_cora(tmp_path, allx=code_payloads["os.system"].encode())
    _trust(monkeypatch, "cora", tmp_path)
    _refused(lambda: _load_graph("cora", tmp_path), "ind.cora.allx", "os.system")
    assert not marker.exists()


# --- gnn-benchmark npz --------------------------------------------------------------------------


def _graph_arrays(**replace: np.ndarray) -> dict[str, np.ndarray]:
    """A 3-node path graph in gnn-benchmark's SparseGraph layout."""
    arrays = {
        "attr_data": np.ones(3, np.float32),
        "attr_indices": np.array([0, 1, 0]),
        "attr_indptr": np.array([0, 1, 2, 3]),
        "attr_shape": np.array([3, 2]),
        "adj_data": np.ones(2, np.float32),
        "adj_indices": np.array([1, 2]),
        "adj_indptr": np.array([0, 1, 2, 2]),
        "adj_shape": np.array([3, 3]),
        "labels": np.array([0, 1, 0]),
    }
    return {**arrays, **replace}


def _npy_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """`array` saved as .npy, its header declaring `shape` (default: the true one)."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": shape or array.shape})
    return buffer.getvalue() + array.tobytes()


def _write_photo(
    root: pathlib.Path, compression: int = zipfile.ZIP_STORED, **members
) -> pathlib.Path:
    """An npz for the `photo` dataset; `members` maps an array name to raw .npy bytes."""
    path = root / "amazon_photo" / "amazon_electronics_photo.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for key, array in _graph_arrays().items():
            archive.writestr(f"{key}.npy", members.get(key, _npy_bytes(array)))
    return path


def test_npz_fixture_loads(tmp_path, monkeypatch):
    _write_photo(tmp_path)
    _trust(monkeypatch, "photo", tmp_path)
    data = _load_graph("photo", tmp_path)
    assert data.num_nodes == 3 and data.edges.tolist() == [[0, 1], [1, 2]]


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_with_absurd_shapes_or_objects_is_refused_before_allocating(
    tmp_path, monkeypatch, compression
):
    data = np.ones(4, np.float32)
    cases = {  # member -> (npy bytes, what the message says)
        "attr_data": (_npy_bytes(data, (10**12,)), "4000000000000 data bytes, the entry holds 16"),
        "labels": (_npy_bytes(data, (10**6, 10**6)), "the entry holds 16"),
        "adj_data": (_npy_bytes(data, (2, 2, 2, 2)), "64 data bytes, the entry holds 16"),
    }
    objects = io.BytesIO()
    np.save(objects, np.array([0, None], dtype=object), allow_pickle=True)
    cases["adj_indices"] = (objects.getvalue(), "Python objects")
    for key, (member, fragment) in cases.items():
        path = _write_photo(tmp_path, compression, **{key: member})
        _refused(lambda p=path, k=key: read_npz(p, (k,)), f"{path}[{key}]", fragment)
        _trust(monkeypatch, "photo", tmp_path)
        _refused(lambda: _load_graph("photo", tmp_path), str(path), fragment)
    # A shape that no file backs: the dense feature matrix, from attr_shape.
    path = _write_photo(tmp_path, attr_shape=_npy_bytes(np.array([3, 10**15])))
    _trust(monkeypatch, "photo", tmp_path)
    _refused(lambda: _load_graph("photo", tmp_path), str(path), "memory")


# --- IDX ----------------------------------------------------------------------------------------


def _idx_header(dims: tuple[int, ...], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_idx_whose_header_lies_about_its_size_is_refused_before_allocating(tmp_path):
    absurd = (2**32 - 1,) * 3  # 7.9e28 bytes
    cases = {
        "plain, dims product != payload": (
            _idx_header((2, 3)) + bytes(5),
            "6 data bytes, file holds 5",
        ),
        "plain, absurd dims": (_idx_header(absurd) + bytes(8), "file holds 8"),
        "gzip, absurd dims": (gzip.compress(_idx_header(absurd) + bytes(8)), "more than a gzip"),
        # 1 GB declared, ~1 kB of gzip (ratio > 1032): refused before inflating
        "gzip, beyond deflate's ratio": (
            gzip.compress(_idx_header((10**9,)) + bytes(10**6)),
            "more than a gzip",
        ),
        "gzip, dims product != payload": (
            gzip.compress(_idx_header((2, 3)) + bytes(7)),
            "6 data bytes, file holds 7",
        ),
    }
    for content, fragment in cases.values():
        path = tmp_path / "train-images-idx3-ubyte.gz"
        path.write_bytes(content)
        _refused(lambda p=path: read_idx(p), str(path), fragment)


def test_lying_idx_file_through_the_command_line_is_one_error_line_and_exit_2(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images, labels = _idx_header((2, 28, 28)) + bytes(2 * 28 * 28), _idx_header((2,)) + bytes(2)
    for split in ("train", "t10k"):
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    hostile = folder / "train-images-idx3-ubyte.gz"
    hostile.write_bytes(gzip.compress(_idx_header((60000, 10**4, 10**4)) + bytes(784)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--config.dataset=mnist",
            f"--config.data_dir={tmp_path}",
            f"--ledger={tmp_path / 'ledger.jsonl'}",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}",
            "--compilation_cache_dir=",
            "--noprogress",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert lines[-1].startswith(f"error: {hostile}: header declares 60000x10000x10000 uint8")
    assert "Traceback" not in done.stderr and not (tmp_path / "ledger.jsonl").exists()


# --- truncated and empty files of every format ---------------------------------------------------


def _cifar_folder(root: pathlib.Path, first: bytes) -> pathlib.Path:
    """A cifar10 folder of one-record batches, the first batch replaced by `first`."""
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    record = bytes(1 + 3 * 32 * 32)
    for name in vision._LOCAL_FILES["cifar10"]:
        (folder / name).write_bytes(record)
    (folder / "data_batch_1.bin").write_bytes(first)
    return folder / "data_batch_1.bin"


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_truncated_and_empty_files_of_every_format_are_refused(tmp_path, monkeypatch, damage):
    def cut(content: bytes) -> bytes:
        return b"" if damage == "empty" else content[: len(content) // 2]

    idx = tmp_path / "a-idx1-ubyte"
    idx.write_bytes(cut(_idx_header((100,)) + bytes(100)))
    _refused(lambda: read_idx(idx), str(idx))
    idx_gz = tmp_path / "a-idx1-ubyte.gz"
    idx_gz.write_bytes(cut(gzip.compress(_idx_header((100,)) + bytes(100))))
    _refused(lambda: read_idx(idx_gz), str(idx_gz))

    cifar = _cifar_folder(tmp_path, cut(bytes(1 + 3 * 32 * 32)))
    _refused(lambda: vision.load_vision("cifar10", data_dir=str(tmp_path)), str(cifar))

    npz = _write_photo(tmp_path)
    npz.write_bytes(cut(npz.read_bytes()))
    _refused(lambda: read_npz(npz, ("labels",)), str(npz))
    _trust(monkeypatch, "photo", tmp_path)
    _refused(lambda: _load_graph("photo", tmp_path), str(npz))

    for suffix in ("allx", "ally", "graph", "test.index"):
        path = _write_cora(tmp_path) / f"ind.cora.{suffix}"
        path.write_bytes(cut(path.read_bytes()))
        _trust(monkeypatch, "cora", tmp_path)
        _refused(lambda: _load_graph("cora", tmp_path), str(path))


# --- graphs whose edges point outside the nodes --------------------------------------------------


@pytest.mark.parametrize("node", [4, -1, 2**63, 1.5], ids=["N", "negative", "huge", "float"])
def test_edges_outside_the_node_range_are_refused(tmp_path, monkeypatch, node):
    graph = _path_graph()
    graph[1].append(node)
    _write_cora(tmp_path, graph=pickle.dumps(graph, protocol=4))
    _trust(monkeypatch, "cora", tmp_path)
    _refused(lambda: _load_graph("cora", tmp_path), "ind.cora.graph")
    if isinstance(node, int) and -(2**63) <= node < 2**63:  # npz: the 3-node graph, index 3 = N
        path = _write_photo(tmp_path, adj_indices=_npy_bytes(np.array([1, min(node, 3)])))
        _trust(monkeypatch, "photo", tmp_path)
        _refused(lambda: _load_graph("photo", tmp_path), str(path), "indices")
