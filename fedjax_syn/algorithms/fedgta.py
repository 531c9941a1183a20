"""FedGTA (Li et al., "FedGTA: Topology-aware Averaging for Federated Graph Learning", VLDB 2024).

A personalised aggregation for subgraph FL. After its local training every client
1. predicts soft labels for its nodes (labelled training nodes keep their one-hot labels) and
   smooths them by K steps of non-parametric label propagation over its subgraph,
   Y <- alpha * A_hat Y + (1 - alpha) Y0 with A_hat = D^-1/2 (A + I) D^-1/2;
2. summarises the smoothed labels by their "mixed moments" over nodes, per class, orders
   1..moment_order (raw moments E[y^p], central moments E[(y - E y)^p], or both: "hybrid"), the
   topology-aware signature it uploads with its model;
3. computes a local smoothing confidence: sum over nodes of deg_v * (C / e + sum_c q_vc log q_vc),
   with q the propagated labels softened by a temperature; it is >= 0 (x log x >= -1/e) and grows
   as the smoothed labels of well-connected nodes get sharper (lower entropy).
The server aggregates per client: client i averages the models of the clients j whose signature
has cosine similarity > `threshold` with its own (itself included), weighted by their confidence.

Graph track only. Defaults: the benchmark values of the OpenFGL implementation (prop_steps 5,
alpha 0.5, temperature 20, 10 hybrid moments, threshold 0.5).

Deviations and choices:
- The engine gives a client no index into the server's per-slot arrays, so the server keeps, per
  client slot, the uploaded model, signature and confidence ([K, ...]; padded slots are marked
  absent and never count), and each client forms its own personalised average from that state and
  its signature (kept in its state). Client i's weights depend only on its own signature and the
  shared state, so this is exactly the average the paper's server sends to client i.
- The next round's local training starts from that personalised model, as in the paper. There is
  no single server model: `global_model` is None (no "global" evaluation mode).
- Propagation is label propagation with an initial residual, started from every node's soft
  label (training rows: their one-hot labels). The authors' release also re-adds the labelled
  nodes' one-hot labels at every step; OpenFGL's propagates only the training rows.
- The moments are taken over the training nodes and every node with an edge in the client's
  training graph; the reference code takes every node of the subgraph. Isolated nodes carry no
  topology, and here the nodes held out for the unseen-node setting are isolated in the training
  graph, so including them would let held-out features steer training. Degrees are counted
  without self-loops; nodes without edges add nothing to the confidence (as in the reference).
- Fallbacks the paper leaves open: if every accepted client has zero confidence (no edges) the
  accepted models are averaged uniformly; before the first upload (round 1) every slot holds the
  initial model, which is what every client starts from.
- Aggregation weights are the confidences only (no client sizes; `cfg.weighted` is not read),
  as in both reference implementations.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.graph import Graph, gather_scatter, in_degree
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task

MOMENT_TYPES = ("raw", "central", "hybrid")


@dataclasses.dataclass(frozen=True)
class FedGTAOptions:
    prop_steps: int = 5  # K: label propagation steps
    alpha: float = 0.5  # weight of the propagated labels against the initial ones
    temperature: float = 20.0  # softens the propagated labels of the confidence
    moment_order: int = 10  # moments of orders 1..moment_order
    moment_type: str = "hybrid"  # "raw", "central", or both ("hybrid": the mixed moments)
    threshold: float = 0.5  # clients j with cos(signature_i, signature_j) > threshold count for i

    def __post_init__(self):
        check_choice("fedgta moment_type", self.moment_type, MOMENT_TYPES)
        check(self.prop_steps >= 0, f"fedgta prop_steps must be >= 0, got {self.prop_steps}")
        check(self.moment_order >= 1, f"fedgta moment_order must be >= 1, got {self.moment_order}")
        check(0 <= self.alpha <= 1, f"fedgta alpha must be in [0, 1], got {self.alpha}")
        check(self.temperature > 0, f"fedgta temperature must be > 0, got {self.temperature}")
        check(
            -1 <= self.threshold < 1, f"fedgta threshold must be in [-1, 1), got {self.threshold}"
        )

    def signature_size(self, num_classes: int) -> int:
        kinds = 2 if self.moment_type == "hybrid" else 1
        return kinds * self.moment_order * num_classes


def options(raw: Mapping[str, Any] | None) -> FedGTAOptions:
    return common.parse_options(FedGTAOptions, "fedgta", raw)


def propagate_labels(graph: Graph, y0: jax.Array, steps: int, alpha: float) -> jax.Array:
    """K steps of Y <- alpha * A_hat Y + (1 - alpha) Y0, A_hat the self-looped symmetric
    normalisation; padded edges carry no weight."""
    deg = in_degree(graph) + 1.0
    inv_sqrt = jax.lax.rsqrt(deg)
    weight = graph.edge_mask * inv_sqrt[graph.senders] * inv_sqrt[graph.receivers]
    y = y0
    for _ in range(steps):
        smoothed = gather_scatter(y, graph, weight) + y / deg[:, None]
        y = alpha * smoothed + (1.0 - alpha) * y0
    return y


def moments(y: jax.Array, mask: jax.Array, order: int, kind: str) -> jax.Array:
    """Per-class moments over the masked rows of y [N, C], orders 1..order, flattened order-major:
    raw E[y^p], central E[(y - E y)^p], or both (hybrid)."""
    m = mask.astype(y.dtype)[None, :, None]
    count = jnp.maximum(jnp.sum(mask), 1).astype(y.dtype)
    powers = jnp.arange(1, order + 1, dtype=y.dtype)[:, None, None]
    mean = lambda values: jnp.sum(values * m, axis=1) / count  # [order, N, C] -> [order, C]
    parts = []
    if kind in ("raw", "hybrid"):
        parts.append(mean(y[None] ** powers))
    if kind in ("central", "hybrid"):
        centre = jnp.sum(y * m[0], axis=0) / count
        parts.append(mean((y - centre)[None] ** powers))
    return jnp.concatenate([p.reshape(-1) for p in parts])


def topology_signature(
    logits: jax.Array,
    graph: Graph,
    labels: jax.Array,
    train_mask: jax.Array,
    opts: FedGTAOptions,
) -> tuple[jax.Array, jax.Array]:
    """(mixed moments of the propagated soft labels [D], smoothing confidence []) of one client."""
    num_classes = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    train = train_mask[:, None]
    y0 = jnp.where(train, onehot, jax.nn.softmax(logits)) * graph.node_mask[:, None]
    y = propagate_labels(graph, y0, opts.prop_steps, opts.alpha)
    smoothed = jnp.where(train, onehot, jax.nn.softmax(y))
    softened = jnp.where(train, onehot, jax.nn.softmax(y / opts.temperature))
    deg = in_degree(graph)
    # Isolated nodes are left out: nothing smooths their labels, and the nodes held out as unseen
    # are isolated in the training graph (their features must not inform training).
    support = graph.node_mask & (train_mask | (deg > 0))
    signature = moments(smoothed, support, opts.moment_order, opts.moment_type)
    neg_entropy = jnp.sum(jax.scipy.special.xlogy(softened, softened), axis=-1)
    confidence = jnp.sum(deg * (num_classes / math.e + neg_entropy))
    return signature, confidence


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of a [D] with every row of b [K, D]; 0 against a zero vector."""
    norms = jnp.linalg.norm(a) * jnp.linalg.norm(b, axis=-1)
    return (b @ a) / jnp.maximum(norms, 1e-12)


def aggregation_weights(
    signature: jax.Array,
    signatures: jax.Array,
    confidence: jax.Array,
    present: jax.Array,
    threshold: float,
) -> jax.Array:
    """The normalised weights [K] of the personalised average of the client with `signature`:
    confidence_j over the present clients j with cos(signature, signatures_j) > threshold."""
    accepted = (cosine(signature, signatures) > threshold) & present
    weights = jnp.where(accepted, confidence, 0.0)
    # Every accepted client without confidence (no edges): a plain average of them.
    weights = jnp.where(jnp.sum(weights) > 0, weights, accepted.astype(weights.dtype))
    # Nobody uploaded yet (round 1): every slot holds the initial model.
    weights = jnp.where(jnp.sum(weights) > 0, weights, jnp.ones_like(weights))
    return weights / jnp.sum(weights)


def fedgta(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    num_classes: int,
    num_clients: int,
    opts: FedGTAOptions = FedGTAOptions(),
) -> base.FederatedAlgorithm:
    size = opts.signature_size(num_classes)

    def init_server(key, data):
        model = task.init(key, data.inputs)
        return {
            "models": jax.tree.map(lambda leaf: jnp.stack([leaf] * num_clients), model),
            "signature": jnp.zeros((num_clients, size), jnp.float32),
            "confidence": jnp.zeros((num_clients,), jnp.float32),
            "present": jnp.zeros((num_clients,), bool),
        }

    def init_client(server, data, key):
        return {"signature": jnp.zeros((size,), jnp.float32)}

    def personalised(server, state):
        weights = aggregation_weights(
            state["signature"],
            server["signature"],
            server["confidence"],
            server["present"],
            opts.threshold,
        )
        return base.weighted_average(server["models"], weights)

    def client_update(server, state, data, key):
        params, metrics = train_from(
            task, personalised(server, state), data, key, optimizer, schedule
        )
        logits = task.logits(params, data.inputs)
        signature, confidence = topology_signature(
            logits, data.inputs, data.labels, data.mask, opts
        )
        upload = {"params": params, "signature": signature, "confidence": confidence}
        return ClientResult({"signature": signature}, upload, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        return {
            "models": uploads["params"],
            "signature": uploads["signature"],
            "confidence": uploads["confidence"],
            "present": client_mask,
        }

    return base.FederatedAlgorithm(
        name="fedgta",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=lambda server, state, data, key: personalised(server, state),
        predict=lambda params, inputs: task.logits(params, inputs),
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: FedGTA with `cfg.fedgta` options; one server slot per client."""
    check(task.graph, "fedgta needs the graph track (node classification on client subgraphs)")
    return fedgta(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        spec.num_classes,
        spec.num_clients,
        options(common.options(cfg, "fedgta")),
    )
