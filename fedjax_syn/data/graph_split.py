"""Subgraph-FL splits: K training clients, a new client, unseen nodes and missing classes.

Implements the graph track of the project's evaluation protocol (`../shared/docs/PROTOCOL.md`,
outside the repository) for the four settings of FedLoG (Kim et al., "Subgraph Federated Learning
for Local Generalization", ICLR 2025): seen data, unseen nodes, missing classes and a new client.
The paper did not release its split code, so every rule below is explicit and every draw is seeded.

Order of operations (each step has its own random stream, derived from (seed, step, client), so
changing one parameter never reshuffles an earlier step):

1. Partition the graph into K + 1 parts and drop edges between parts. `louvain`: communities from
   `networkx.community.louvain_communities(G, seed=seed)`, sorted by (size descending, smallest
   node id), each put into the part with the fewest nodes so far (ties: lowest part index).
   `metis`: `pymetis.part_graph` with METIS's seed option. `random`: a seeded permutation cut into
   K + 1 near-equal chunks. The last part is the new client; it never trains. networkx's Louvain
   with a fixed seed is deterministic across processes and hash seeds (tested), but its output may
   change between networkx releases, so results records should carry the networkx version.
2. Missing classes, per training client: of the p classes present, hide
   m = max(1, round_half_up(missing_frac * p)), at most p - 1 (a client keeps one class to train
   on; m = 0 when missing_frac = 0), in a seeded random order. Then, for every class present in
   some training client but hidden in all of them, a repair pass restores it in the holder with
   the most nodes of that class, hiding instead the first class of that client's random order
   that is trained in it and by at least one other client (or, if none exists, hiding nothing).
3. Unseen nodes, per training client: round_half_up(unseen_frac * n) nodes in a seeded random
   order, drawn from nodes of trained classes (`closeset`) or from all nodes (`openset`). A draw
   never takes the last remaining seen node of a trained class, so every trained class keeps a
   training label. Unseen nodes and their edges are absent from the training-time subgraph
   (`graph_arrays`' training edge mask).
4. Seen split, per training client: nodes that are neither unseen nor of a missing class are split
   train / val / test, stratified by class, with cumulative round-half-up boundaries and at least
   one training node per class.

So: every class present in a training client is trained (has a training label) by at least one
client, and nodes of a client's missing classes never carry a training or validation label.
"""

import dataclasses

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.data.graphs import GraphDataset

PARTITIONERS = ("louvain", "metis", "random")
SETTINGS = ("closeset", "openset")

# Random-stream ids of the steps above.
_PARTITION, _MISSING, _UNSEEN, _SPLIT = range(4)


@dataclasses.dataclass(frozen=True, eq=False)
class GraphClient:
    """One client's subgraph. Masks are [n] bool over the client's nodes (local order).

    nodes: [n] sorted global node ids; y: [n] int32 labels; edges: [2, e] int64 undirected edges
    inside the part in local indices, i < j. train/val/test: the seen split. unseen: held out of
    the training-time subgraph with their edges. missing_classes: [C] bool, hidden here.
    """

    nodes: np.ndarray
    y: np.ndarray
    edges: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unseen: np.ndarray
    missing_classes: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def missing_eval(self) -> np.ndarray:
        """[n] bool: nodes whose class is missing here (the Missing Class evaluation set)."""
        return self.missing_classes[self.y]


@dataclasses.dataclass(frozen=True, eq=False)
class GraphFederation:
    """K training clients, the new client (test = all its nodes) and the protocol parameters."""

    dataset: GraphDataset
    clients: list[GraphClient]
    new_client: GraphClient
    protocol: dict


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _rng(seed: int, step: int, client: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, client])


def _pack(groups: list[np.ndarray], num_parts: int) -> list[np.ndarray]:
    """Puts each group (in the given order) into the part with the fewest nodes so far."""
    sizes = np.zeros(num_parts, np.int64)
    members: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
    for group in groups:
        k = int(np.argmin(sizes))
        members[k].append(group)
        sizes[k] += len(group)
    return [np.sort(np.concatenate(m)) for m in members]


def _louvain_parts(data: GraphDataset, num_parts: int, seed: int) -> list[np.ndarray]:
    graph = nx.Graph()
    graph.add_nodes_from(range(data.num_nodes))
    graph.add_edges_from(data.edges.T.tolist())
    communities = [
        np.sort(np.fromiter(c, np.int64, count=len(c)))
        for c in nx.community.louvain_communities(graph, seed=seed)
    ]
    check(
        len(communities) >= num_parts,
        f"louvain found {len(communities)} communities in {data.name}, fewer than the "
        f"{num_parts} parts needed; use fewer clients or another partitioner",
    )
    communities.sort(key=lambda c: (-len(c), int(c[0])))
    return _pack(communities, num_parts)


def _metis_parts(data: GraphDataset, num_parts: int, seed: int) -> list[np.ndarray]:
    try:
        import pymetis
    except ImportError:
        raise UserError(
            "partitioner 'metis' needs the pymetis package: pip install pymetis"
        ) from None
    n = data.num_nodes
    src = np.concatenate([data.edges[0], data.edges[1]])
    dst = np.concatenate([data.edges[1], data.edges[0]])
    adj = sp.csr_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
    _, membership = pymetis.part_graph(
        num_parts,
        xadj=adj.indptr.tolist(),
        adjncy=adj.indices.tolist(),
        options=pymetis.Options(seed=seed),
    )
    membership = np.asarray(membership)
    parts = [np.flatnonzero(membership == k) for k in range(num_parts)]
    check(all(len(p) for p in parts), f"metis left a part of {data.name} empty")
    return parts


def _random_parts(data: GraphDataset, num_parts: int, seed: int) -> list[np.ndarray]:
    perm = _rng(seed, _PARTITION).permutation(data.num_nodes)
    return [np.sort(p) for p in np.array_split(perm, num_parts)]


_PARTITION_FNS = {"louvain": _louvain_parts, "metis": _metis_parts, "random": _random_parts}


def _num_missing(num_present: int, missing_frac: float) -> int:
    if missing_frac == 0 or num_present <= 1:
        return 0
    return min(num_present - 1, max(1, _round_half_up(missing_frac * num_present)))


def _choose_missing(
    labels: list[np.ndarray], num_classes: int, missing_frac: float, seed: int
) -> np.ndarray:
    """[K, C] bool missing classes per training client (step 2 of the module docstring)."""
    counts = np.stack([np.bincount(y, minlength=num_classes) for y in labels])
    present = counts > 0
    missing = np.zeros_like(present)
    orders = []
    for k in range(len(labels)):
        order = _rng(seed, _MISSING, k).permutation(np.flatnonzero(present[k]))
        missing[k, order[: _num_missing(len(order), missing_frac)]] = True
        orders.append(order)
    for c in range(num_classes):
        trained = present & ~missing
        if not present[:, c].any() or trained[:, c].any():
            continue
        holder = int(np.argmax(counts[:, c]))  # ties: lowest client index
        missing[holder, c] = False
        for d in orders[holder]:
            if trained[holder, d] and trained[:, d].sum() >= 2:
                missing[holder, d] = True
                break
    return missing


def _choose_unseen(
    y: np.ndarray, missing_classes: np.ndarray, setting: str, unseen_frac: float, rng
) -> np.ndarray:
    """[n] bool unseen nodes of one training client (step 3 of the module docstring)."""
    target = _round_half_up(unseen_frac * len(y))
    of_missing = missing_classes[y]
    pool = np.flatnonzero(~of_missing) if setting == "closeset" else np.arange(len(y))
    remaining = np.bincount(y[~of_missing], minlength=len(missing_classes))
    unseen = np.zeros(len(y), bool)
    taken = 0
    for i in rng.permutation(pool):
        if taken == target:
            break
        c = y[i]
        if not missing_classes[c]:
            if remaining[c] <= 1:
                continue
            remaining[c] -= 1
        unseen[i] = True
        taken += 1
    return unseen


def _seen_split(y: np.ndarray, seen: np.ndarray, split: tuple, rng) -> tuple[np.ndarray, ...]:
    """Stratified train/val/test masks over the `seen` nodes (step 4 of the module docstring)."""
    masks = [np.zeros(len(y), bool) for _ in range(3)]
    first, second = split[0], split[0] + split[1]
    for c in np.unique(y[seen]):
        idx = rng.permutation(np.flatnonzero(seen & (y == c)))
        n = len(idx)
        b1 = max(1, _round_half_up(first * n))
        b2 = min(n, max(b1, _round_half_up(second * n)))
        masks[0][idx[:b1]] = True
        masks[1][idx[b1:b2]] = True
        masks[2][idx[b2:]] = True
    return tuple(masks)


def _local_edges(edges: np.ndarray, part_of: np.ndarray, part: int, nodes: np.ndarray):
    inside = edges[:, (part_of[edges[0]] == part) & (part_of[edges[1]] == part)]
    return np.searchsorted(nodes, inside).astype(np.int64)


def _check_inputs(data, num_clients, partitioner, setting, unseen_frac, missing_frac, split, seed):
    check_choice("partitioner", partitioner, PARTITIONERS)
    check_choice("setting", setting, SETTINGS)
    for name, value, low in (("num_clients", num_clients, 1), ("seed", seed, 0)):
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= low,
            f"{name} must be an integer >= {low}, got {value!r}",
        )
    check(
        num_clients + 1 <= data.num_nodes,
        f"num_clients={num_clients} needs {num_clients + 1} parts but {data.name} has "
        f"{data.num_nodes} nodes",
    )
    for name, value in (("unseen_frac", unseen_frac), ("missing_frac", missing_frac)):
        check(
            isinstance(value, int | float) and 0 <= value < 1,
            f"{name} must be in [0, 1), got {value!r}",
        )
    check(
        len(split) == 3
        and all(isinstance(s, int | float) and s >= 0 for s in split)
        and split[0] > 0
        and abs(sum(split) - 1) < 1e-6,
        f"split must be three fractions >= 0 (train > 0) summing to 1, got {split!r}",
    )


def build_graph_federation(
    data: GraphDataset,
    num_clients: int,
    *,
    partitioner: str = "louvain",
    setting: str = "closeset",
    unseen_frac: float = 0.2,
    missing_frac: float = 0.3,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> GraphFederation:
    """Splits `data` into `num_clients` training clients and one new client (see module doc)."""
    _check_inputs(data, num_clients, partitioner, setting, unseen_frac, missing_frac, split, seed)
    parts = _PARTITION_FNS[partitioner](data, num_clients + 1, seed)
    part_of = np.empty(data.num_nodes, np.int64)
    for k, nodes in enumerate(parts):
        part_of[nodes] = k
    labels = [data.y[nodes] for nodes in parts]
    missing = _choose_missing(labels[:num_clients], data.num_classes, missing_frac, seed)

    clients = []
    for k in range(num_clients):
        y = labels[k]
        unseen = _choose_unseen(y, missing[k], setting, unseen_frac, _rng(seed, _UNSEEN, k))
        seen = ~unseen & ~missing[k][y]
        train, val, test = _seen_split(y, seen, split, _rng(seed, _SPLIT, k))
        edges = _local_edges(data.edges, part_of, k, parts[k])
        clients.append(GraphClient(parts[k], y, edges, train, val, test, unseen, missing[k]))

    nodes, no_class = parts[-1], np.zeros(data.num_classes, bool)
    none, edges = np.zeros(len(nodes), bool), _local_edges(data.edges, part_of, num_clients, nodes)
    new_client = GraphClient(nodes, labels[-1], edges, none, none, ~none, none, no_class)
    protocol = {
        "dataset": data.name,
        "num_clients": num_clients,
        "partitioner": partitioner,
        "setting": setting,
        "unseen_frac": float(unseen_frac),
        "missing_frac": float(missing_frac),
        "split": [float(s) for s in split],
        "seed": seed,
    }
    return GraphFederation(data, clients, new_client, protocol)


def split_table(fed: GraphFederation) -> str:
    """A Markdown table of per-client, per-class node counts, for readers to check a split.

    Columns: nodes of the class in the client; train / val / test (seen split; the new client's
    test is all its nodes); unseen; missing (nodes of a class hidden in that client, the Missing
    Class evaluation set). Classes absent from a client are left out; each client ends with a
    total row.
    """
    p = fed.protocol
    lines = [
        f"{p['dataset']}: {p['num_clients']} training clients + 1 new client, "
        f"partitioner={p['partitioner']}, setting={p['setting']}, "
        f"unseen_frac={p['unseen_frac']}, missing_frac={p['missing_frac']}, "
        f"split={p['split']}, seed={p['seed']}",
        "",
        "| client | class | nodes | train | val | test | unseen | missing |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    named = [(str(k), c) for k, c in enumerate(fed.clients)] + [("new", fed.new_client)]
    for name, client in named:
        every = np.ones(client.num_nodes, bool)
        columns = (every, client.train, client.val, client.test, client.unseen, client.missing_eval)
        num_classes = fed.dataset.num_classes
        counts = np.stack([np.bincount(client.y[m], minlength=num_classes) for m in columns])
        for c in np.flatnonzero(counts[0]):
            lines.append(f"| {name} | {c} | " + " | ".join(str(v) for v in counts[:, c]) + " |")
        lines.append(f"| {name} | all | " + " | ".join(str(v) for v in counts.sum(1)) + " |")
    return "\n".join(lines) + "\n"
