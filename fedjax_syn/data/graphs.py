"""Node-classification graph datasets: Planetoid citation graphs and the gnn-benchmark npz graphs.

These are the graphs of the FedLoG graph track (Kim et al., "Subgraph Federated Learning for Local
Generalization", ICLR 2025).

- Cora, CiteSeer, PubMed: the Planetoid files of Yang, Cohen & Salakhutdinov (ICML 2016), rebuilt
  in the node order of Kipf & Welling's GCN loader and PyTorch Geometric's `Planetoid`: node ids
  `0 .. len(allx) - 1` take the `allx`/`ally` rows, and test row k belongs to node `test.index[k]`.
  CiteSeer has 15 node ids in the test range that have no test row (isolated nodes); like PyG,
  they get all-zero features and label 0 (the argmax of an all-zero one-hot row). The `x`/`y`
  files (the Planetoid training rows, the first rows of `allx`/`ally`) are not needed.
- Amazon Photo/Computers, Coauthor CS/Physics: the npz files of Shchur et al., "Pitfalls of Graph
  Neural Network Evaluation" (2018), read key by key with `allow_pickle=False`.

Edges are made undirected as PyG does (self-loops dropped, both directions merged); each edge is
stored once with i < j. Features keep their raw values; normalising them is a model choice.

Every file is checked against its published sha256 wherever it comes from: the data dir
(argument, else `FEDJAX_SYN_DATA_DIR`), the cache dir (argument, else `FEDJAX_SYN_CACHE_DIR`, else
`~/.cache/fedjax_syn`), or a download from the canonical repository, written atomically into the
cache.
"""

import dataclasses
import hashlib
import operator
import os
import pathlib
import tempfile
import urllib.request
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.data.files import check_dense_fits, read_npz
from fedjax_syn.data.unpickle import load_pickle

GRAPH_DATASETS = ("cora", "citeseer", "pubmed", "photo", "computers", "cs", "physics")

_PLANETOID_URL = (
    "https://raw.githubusercontent.com/kimiyoung/planetoid/"
    "af6abf468a772cc055bec88c52e4d6f51b7c37e3/data/"
)
_NPZ_URL = (
    "https://raw.githubusercontent.com/shchur/gnn-benchmark/"
    "1e72912a0810cdf27ae54fd589a3b43358a2b161/data/npz/"
)

# Dataset -> (folder in the data/cache dir, base URL, {file name: sha256}).
_SOURCES = {
    "cora": (
        "cora",
        _PLANETOID_URL,
        {
            "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
            "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
            "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
            "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
            "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
            "ind.cora.test.index": (
                "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"
            ),
        },
    ),
    "citeseer": (
        "citeseer",
        _PLANETOID_URL,
        {
            "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
            "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
            "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
            "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
            "ind.citeseer.graph": (
                "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7"
            ),
            "ind.citeseer.test.index": (
                "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"
            ),
        },
    ),
    "pubmed": (
        "pubmed",
        _PLANETOID_URL,
        {
            "ind.pubmed.allx": "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
            "ind.pubmed.ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
            "ind.pubmed.tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
            "ind.pubmed.ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
            "ind.pubmed.graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
            "ind.pubmed.test.index": (
                "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5"
            ),
        },
    ),
    "photo": (
        "amazon_photo",
        _NPZ_URL,
        {
            "amazon_electronics_photo.npz": (
                "bdb1feb8e6ff42ee44024b04479145029c563fd42fc31bff80af20887ba0439a"
            )
        },
    ),
    "computers": (
        "amazon_computers",
        _NPZ_URL,
        {
            "amazon_electronics_computers.npz": (
                "736ba1d9fd85eac2da83a5ad25c463f04b0031a6ca01563f90a7099d9e8ffb2c"
            )
        },
    ),
    "cs": (
        "coauthor_cs",
        _NPZ_URL,
        {"ms_academic_cs.npz": "933c745734e78908c7eb77172a673fee0503f30e26e5a99b36814d88534c42e3"},
    ),
    "physics": (
        "coauthor_physics",
        _NPZ_URL,
        {"ms_academic_phy.npz": "e4d68468eba5fb8f6b280ffd406bd53e6e4295ba1dd2967d6fe99b978e4b3375"},
    ),
}


@dataclasses.dataclass(frozen=True, eq=False)
class GraphDataset:
    """A whole node-classification graph. `eq=False`: arrays have no single truth value.

    x: float32 [N, F] raw features; y: int32 [N] labels in [0, num_classes);
    edges: int64 [2, E] undirected edges, each once with i < j, no self-loops, sorted.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    edges: np.ndarray
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def default_cache_dir() -> pathlib.Path:
    """`FEDJAX_SYN_CACHE_DIR`, else `~/.cache/fedjax_syn`."""
    value = os.environ.get("FEDJAX_SYN_CACHE_DIR")
    return pathlib.Path(value) if value else pathlib.Path.home() / ".cache" / "fedjax_syn"


def fetch_url(url: str, out: BinaryIO) -> None:
    """Streams the body of `url` into `out` (the only network access of this module)."""
    with urllib.request.urlopen(url, timeout=60) as response:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _checked(path: pathlib.Path, expected: str) -> pathlib.Path:
    actual = _sha256(path)
    if actual != expected:
        raise UserError(
            f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or a different "
            "version; replace it with the original"
        )
    return path


def _download(url: str, dest: pathlib.Path, expected: str) -> None:
    """Fetches `url` into `dest` through a temporary file renamed only after its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            fetch_url(url, out)
        actual = _sha256(tmp)
        if actual != expected:
            raise UserError(f"download of {url} has sha256 {actual}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _resolve(
    folder: str,
    filename: str,
    url: str,
    expected: str,
    data_dir: pathlib.Path | None,
    cache_dir: pathlib.Path,
    download: bool,
) -> pathlib.Path:
    """The verified local path of one file: data dir, then cache dir, then a fresh download."""
    candidates = [] if data_dir is None else [data_dir / folder / filename]
    candidates.append(cache_dir / folder / filename)
    for path in candidates:
        if path.is_file():
            return _checked(path, expected)
    cached = cache_dir / folder / filename
    if download:
        try:
            _download(url + filename, cached, expected)
            return cached
        except UserError:
            raise
        except Exception as e:  # any network or file-system failure: say what is missing
            why = f"download from {url + filename} failed ({_one_line(e)})"
    else:
        why = "downloading is disabled"
    target = candidates[0]
    searched = " or ".join(str(p.parent) for p in candidates)
    raise UserError(
        f"missing {filename}: not in {searched} and {why}; put the original file "
        f"(sha256 {expected}) at {target}"
    )


def _csr(data: Any, indices: Any, indptr: Any, shape: Any, source: str) -> sp.csr_matrix:
    """A CSR matrix whose structure is fully checked: indptr monotone, every index in range."""
    try:
        rows, cols = (int(d) for d in shape)
        if rows < 0 or cols < 0:
            raise ValueError(f"negative shape {(rows, cols)}")
        m = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
        m.check_format(full_check=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"{source} holds a malformed sparse matrix ({_one_line(e)})") from None
    return m


def _as_csr(obj: object, source: str) -> sp.csr_matrix:
    """Rebuilds an unpickled sparse matrix from its arrays, so its structure is validated."""
    if not sp.issparse(obj):
        raise UserError(f"{source} holds {type(obj).__name__}, expected a sparse matrix")
    try:
        m = obj.tocsr()  # an unpickled matrix's state may lack any attribute
    except Exception as e:  # any failure means a damaged matrix
        raise UserError(f"{source} holds a malformed sparse matrix ({_one_line(e)})") from None
    return _csr(m.data, m.indices, m.indptr, m.shape, source)


def _as_onehot(obj: object, source: str) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or obj.dtype.kind not in "biuf":
        raise UserError(f"{source} holds {type(obj).__name__}, expected a 2-D one-hot array")
    return obj


def _undirected(src: np.ndarray, dst: np.ndarray, num_nodes: int, source: str) -> np.ndarray:
    """[2, E] int64 unique undirected edges with i < j, self-loops dropped, sorted by (i, j)."""
    src = np.asarray(src, np.int64)
    dst = np.asarray(dst, np.int64)
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num_nodes):
        raise UserError(f"{source} has an edge endpoint outside 0..{num_nodes - 1}")
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keep = lo != hi
    keys = np.unique(lo[keep] * num_nodes + hi[keep])
    return np.stack([keys // num_nodes, keys % num_nodes])


def _planetoid(name: str, paths: dict[str, pathlib.Path]) -> GraphDataset:
    """Rebuilds a Planetoid graph in Kipf's / PyG's node order (see the module docstring)."""
    file = {p.name.removeprefix(f"ind.{name}."): p for p in paths.values()}  # "allx" -> path
    allx = _as_csr(load_pickle(file["allx"]), str(file["allx"]))
    tx = _as_csr(load_pickle(file["tx"]), str(file["tx"]))
    ally = _as_onehot(load_pickle(file["ally"]), str(file["ally"]))
    ty = _as_onehot(load_pickle(file["ty"]), str(file["ty"]))
    graph = load_pickle(file["graph"])
    lines = file["test.index"].read_bytes().split()
    test_index = _node_ids((int(line) for line in lines), str(file["test.index"]))

    n_all = allx.shape[0]
    if not isinstance(graph, dict):
        raise UserError(f"{file['graph']} holds {type(graph).__name__}, expected a dict")
    index = file["test.index"]
    check(len(test_index) > 0, f"{index} lists no test nodes")
    check(
        len(test_index) == tx.shape[0],
        f"{index} lists {len(test_index)} test nodes, {file['tx']} {tx.shape[0]} rows",
    )
    check(len(np.unique(test_index)) == len(test_index), f"{index} lists a node twice")
    check(test_index.min() >= n_all, f"{index} lists a node below {n_all} (a training node)")
    check(ally.shape[0] == n_all, f"{file['ally']} has {ally.shape[0]} rows, allx {n_all}")
    check(ty.shape[0] == tx.shape[0], f"{file['ty']} has {ty.shape[0]} rows, tx {tx.shape[0]}")
    check(
        tx.shape[1] == allx.shape[1],
        f"{file['tx']} has {tx.shape[1]} columns, allx {allx.shape[1]}",
    )
    check(
        ty.shape[1] == ally.shape[1],
        f"{file['ty']} has {ty.shape[1]} classes, ally {ally.shape[1]}",
    )
    num_nodes = int(test_index.max()) + 1
    if num_nodes > n_all + 2 * len(test_index):  # CiteSeer: 15 ids without a row per 1000
        raise UserError(
            f"{file['test.index']} reaches node {num_nodes - 1}, leaving more node ids without a "
            f"row ({num_nodes - n_all - len(test_index)}) than there are test rows"
        )
    check_dense_fits((num_nodes, allx.shape[1]), np.float32, str(file["allx"]))

    x = np.zeros((num_nodes, allx.shape[1]), np.float32)
    x[:n_all] = allx.toarray()
    x[test_index] = tx.toarray()
    onehot = np.zeros((num_nodes, ally.shape[1]), ally.dtype)
    onehot[:n_all] = ally
    onehot[test_index] = ty
    y = np.argmax(onehot, axis=1).astype(np.int32)

    try:
        src = np.repeat(_node_ids(graph, str(file["graph"])), [len(v) for v in graph.values()])
        dst = _node_ids((v for nbrs in graph.values() for v in nbrs), str(file["graph"]))
    except TypeError as e:
        raise UserError(f"{file['graph']} is not an adjacency list ({_one_line(e)})") from None
    edges = _undirected(src, dst, num_nodes, str(file["graph"]))
    return GraphDataset(name, x, y, edges, int(ally.shape[1]))


def _node_ids(values: Iterable[Any], source: str) -> np.ndarray:
    """int64 node ids; a float, a string or a number beyond int64 is refused."""
    try:
        return np.array([operator.index(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"{source} holds an invalid node id ({_one_line(e)})") from None


_NPZ_KEYS = (
    *("attr_data", "attr_indices", "attr_indptr", "attr_shape"),
    *("adj_data", "adj_indices", "adj_indptr", "adj_shape", "labels"),
)


def _npz(name: str, path: pathlib.Path) -> GraphDataset:
    """Reads a gnn-benchmark SparseGraph npz; only the needed keys, never pickled objects."""
    z = read_npz(path, _NPZ_KEYS)
    attr = _csr(z["attr_data"], z["attr_indices"], z["attr_indptr"], z["attr_shape"], str(path))
    adj = _csr(z["adj_data"], z["adj_indices"], z["adj_indptr"], z["adj_shape"], str(path)).tocoo()
    labels = z["labels"]
    num_nodes = attr.shape[0]
    if (
        labels.shape != (num_nodes,)
        or labels.dtype.kind not in "iu"
        or adj.shape != (num_nodes, num_nodes)
        or num_nodes == 0
        or labels.min() < 0
    ):
        raise UserError(f"{path} is inconsistent (labels, attributes and adjacency disagree)")
    edges = _undirected(adj.row, adj.col, num_nodes, str(path))
    check_dense_fits(attr.shape, np.float32, str(path))
    x = attr.toarray().astype(np.float32, copy=False)
    return GraphDataset(name, x, labels.astype(np.int32), edges, int(labels.max()) + 1)


def load_graph(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> GraphDataset:
    """Loads one of `GRAPH_DATASETS`, verifying every file's sha256.

    Files are looked up in `data_dir/<folder>/` (default `FEDJAX_SYN_DATA_DIR`), then in
    `cache_dir/<folder>/`, then downloaded into the cache when `download` is true. A file found
    nowhere raises a one-line `UserError` naming it and where to put it.
    """
    check_choice("graph dataset", name, GRAPH_DATASETS)
    if data_dir is None and os.environ.get("FEDJAX_SYN_DATA_DIR"):
        data_dir = os.environ["FEDJAX_SYN_DATA_DIR"]
    data_path = None if data_dir is None else pathlib.Path(data_dir)
    cache_path = default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    folder, url, hashes = _SOURCES[name]
    paths = {
        filename: _resolve(folder, filename, url, sha, data_path, cache_path, download)
        for filename, sha in hashes.items()
    }
    if url == _PLANETOID_URL:
        return _planetoid(name, paths)
    (path,) = paths.values()
    return _npz(name, path)
