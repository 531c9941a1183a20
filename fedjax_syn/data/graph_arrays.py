"""A `GraphFederation` (per-client subgraphs, numpy) as padded device arrays (`Federation`).

Each client's subgraph is padded to the largest client's node and edge counts. One padded graph
serves both times: the training-time graph masks out every edge touching an unseen node (so unseen
nodes are isolated and never targets), the evaluation-time graph keeps them. Each graph carries
its mean neighbour features (`Graph.neighbour_mean`), computed once here. Settings: val, seen,
unseen_node, missing_class, and new_client (every client model on the new client's whole subgraph).
"""

import numpy as np
import scipy.sparse as sp

from fedjax_syn.core.arrays import ClientData, EvalGroup, Federation, pad_clients, pad_to, to_device
from fedjax_syn.core.graph import Graph
from fedjax_syn.data.graph_split import GraphClient, GraphFederation

GRAPH_SETTINGS = ("seen", "unseen_node", "missing_class", "new_client")


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Row-normalises features to sum 1 (rows of zeros stay zero)."""
    sums = np.abs(x).sum(axis=1, keepdims=True)
    return (x / np.where(sums == 0, 1.0, sums)).astype(np.float32)


def neighbour_mean(x: np.ndarray, senders, receivers, edge_mask: np.ndarray) -> np.ndarray:
    """Mean features of each node's real in-neighbours [N, F] (zeros without any), as a sparse
    product: gathering x per edge would hold edges x features floats at once."""
    n = x.shape[0]
    adjacency = sp.csr_matrix(
        (edge_mask.astype(np.float32), (receivers, senders)), shape=(n, n), dtype=np.float32
    )
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return (adjacency @ x / np.maximum(degree, 1.0)[:, None]).astype(np.float32)


def _client_graph(
    client: GraphClient, features: np.ndarray, n_pad: int, e_pad: int, trains: bool = True
):
    """Padded arrays of one client; `trains=False` (the new client, only ever evaluated) leaves
    out the training-edge neighbour mean, which no model would read."""
    n = len(client.nodes)
    src, dst = client.edges
    senders = np.concatenate([src, dst]).astype(np.int32)
    receivers = np.concatenate([dst, src]).astype(np.int32)
    real_edge = np.ones(len(senders), bool)
    train_edge = ~client.unseen[senders] & ~client.unseen[receivers]
    node_mask = np.ones(n, bool)
    y = client.y.astype(np.int32)
    x = features[client.nodes]
    arrays = {
        "x": pad_to(x, n_pad),
        "neighbour_mean": pad_to(neighbour_mean(x, senders, receivers, real_edge), n_pad),
        "senders": pad_to(senders, e_pad),
        "receivers": pad_to(receivers, e_pad),
        "edge_mask": pad_to(real_edge, e_pad),
        "train_edge_mask": pad_to(train_edge, e_pad),
        "node_mask": pad_to(node_mask, n_pad),
        "y": pad_to(y, n_pad),
        "train": pad_to(client.train, n_pad),
        "val": pad_to(client.val, n_pad),
        "seen": pad_to(client.test, n_pad),
        "unseen_node": pad_to(client.unseen, n_pad),
        "missing_class": pad_to(client.missing_classes[y], n_pad),
    }
    if trains:
        arrays["train_neighbour_mean"] = pad_to(
            neighbour_mean(x, senders, receivers, train_edge), n_pad
        )
    return arrays


def _graph(t: dict, edge_mask: str = "edge_mask", mean: str = "neighbour_mean") -> Graph:
    return Graph(t["x"], t["senders"], t["receivers"], t[edge_mask], t["node_mask"], t[mean])


def graph_arrays(
    fed: GraphFederation, num_clients: int | None = None, normalize: bool = True
) -> Federation:
    """Pads every client's subgraph; `num_clients` > K appends empty clients (to fill a mesh)."""
    features = normalize_rows(fed.dataset.x) if normalize else fed.dataset.x.astype(np.float32)
    n_pad = max(len(c.nodes) for c in fed.clients)
    e_pad = max(2 * c.edges.shape[1] for c in fed.clients)
    per_client = [_client_graph(c, features, n_pad, e_pad) for c in fed.clients]
    tree = {key: np.stack([c[key] for c in per_client]) for key in per_client[0]}
    k = len(per_client)
    tree["client_mask"] = np.ones((k,), bool)
    new = fed.new_client
    new_n, new_e = len(new.nodes), 2 * new.edges.shape[1]
    new_graph = _client_graph(new, features, new_n, new_e, trains=False)
    tree["new_client"] = np.ones((k, new_n), bool)
    if num_clients is not None and num_clients > k:
        tree = pad_clients(tree, num_clients)
    t = to_device(tree)
    train_graph = _graph(t, "train_edge_mask", "train_neighbour_mean")
    masks = {name: t[name] for name in ("val", "seen", "unseen_node", "missing_class")}
    shared = to_device(new_graph)
    groups = {
        "local": EvalGroup(_graph(t), t["y"], masks),
        "new": EvalGroup(_graph(shared), shared["y"], {"new_client": t["new_client"]}, shared=True),
    }
    train = ClientData(inputs=train_graph, labels=t["y"], mask=t["train"], val_mask=t["val"])
    return Federation(train, groups, t["client_mask"], num_classes=fed.dataset.num_classes)
