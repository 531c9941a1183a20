"""GCFL+ (Xie, Ma, Liu, Liang and Ho, "Federated Graph Classification over Non-IID Graphs",
NeurIPS 2021), adapted to node classification on client subgraphs. Graph track only.

Clients are grouped into clusters, each with its own model. A round: every client trains its
cluster's model and uploads the weight update dW_i; the server may split one cluster, then adds to
each cluster's model the size-weighted mean of its members' updates (FedAvg within the cluster).
The server keeps, per client, the sequence of its last `seq_length` update signatures (a fixed-size
buffer, oldest first). A cluster with at least 3 real members is split when training has settled
for the cluster as a whole but not for its members,
    || mean_i dW_i || < eps1   and   max_i || dW_i || > eps2,
after `warmup_rounds` rounds and once every buffer holds `seq_length` entries since the last split.
The split is the minimum cut (Stoer-Wagner) of the cluster's members under the similarity
max(D) - D, D being the dynamic-time-warping distances between their signature sequences. One
member side keeps the cluster's id, the other takes the next free id, and both start from the
cluster's model. After a split every buffer starts over; so at most one cluster splits per round:
the lowest-numbered that qualifies (the released code checks clusters in its list order).

Evaluation modes: `local` is the client's model right after its update; `personalized` is its
cluster's model after the round's aggregation; there is no single global model.

Checked against the paper and the released code (Oxfordblue7/GCFL). Choices and deviations:
- Node classification: a client's model is the whole GNN of the run, and all of it is shared
  within the cluster. GCFL shares only the graph convolutions and keeps per-client input and
  readout layers, which its cross-dataset graph classification needs (different features and
  classes per client) and subgraphs of one graph do not.
- Signatures: the norm of the client's weight update (the released `gcflplus_dWs` variant, a
  1-d sequence; its default `gcflplus` records the norm of the last minibatch's gradient, which
  local training here does not expose). `signature_dim > 0` instead records a random projection of
  the update to that many dimensions (a fixed Gaussian matrix, entries N(0, 1/d), drawn from the
  server's key), so that updates of equal norm but different directions can be told apart; DTW
  then compares sequences of vectors. DTW is unconstrained, with squared Euclidean cost and the
  square root of the total (dtaidistance's `distance`); no standardisation (released default).
- Thresholds eps1 = 0.05, eps2 = 0.1, seq_length 5 and the 20 warm-up rounds are the released
  defaults, set for its SGD graph-classification recipe. Update norms scale with the optimiser,
  learning rate and local steps, and the toolkit does not retune eps1 and eps2: under the
  comparison's recipe (Adam 1e-3, one local epoch) no cluster ever splits, so GCFL+ computes
  FedAvg there (results/README.md).
- Every round starts a fresh client optimiser; the released clients keep theirs.
- At most K clusters, one model slot each, so every shape is static and the round jits; clients
  find their cluster through their slot, which they find by id (`client_slots`).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import client_slots, common
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task

MIN_SPLIT_MEMBERS = 3  # the released code splits only clusters of more than 2 clients


@dataclasses.dataclass(frozen=True)
class GcflPlusOptions:
    eps1: float = 0.05  # split only if the norm of the cluster's mean update is below this
    eps2: float = 0.1  # ... and some member's update norm is above this
    seq_length: int = 5  # signatures per client compared by DTW
    warmup_rounds: int = 20  # no split in rounds 1..warmup_rounds
    signature_dim: int = 0  # 0: update norms (released); d > 0: random projections to d dims

    def __post_init__(self):
        for name in ("eps1", "eps2"):
            value = getattr(self, name)
            check(value >= 0, f"gcfl_plus {name} must be >= 0, got {value}")
        check(self.seq_length >= 1, f"gcfl_plus seq_length must be >= 1, got {self.seq_length}")
        for name in ("warmup_rounds", "signature_dim"):
            value = getattr(self, name)
            check(value >= 0, f"gcfl_plus {name} must be >= 0, got {value}")


def parse_options(raw: Mapping[str, Any] | None) -> GcflPlusOptions:
    return common.parse_options(GcflPlusOptions, "gcfl_plus", raw)


def dtw_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """Dynamic time warping between sequences a, b [L, d]: sqrt of the least total squared
    Euclidean cost over monotone alignments of the two."""
    cost = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)  # [L, L]
    inf = jnp.asarray(jnp.inf, cost.dtype)

    def row(previous, row_cost):  # previous: D[i-1, 0..L] with D[., 0] the empty prefix
        def cell(left, inputs):
            c, up, diagonal = inputs
            value = c + jnp.minimum(jnp.minimum(up, diagonal), left)
            return value, value

        _, values = jax.lax.scan(cell, inf, (row_cost, previous[1:], previous[:-1]))
        current = jnp.concatenate([inf[None], values])
        return current, None

    first = jnp.full((cost.shape[1] + 1,), inf).at[0].set(0.0)
    last, _ = jax.lax.scan(row, first, cost)
    return jnp.sqrt(last[-1])


def pairwise_dtw(sequences: jax.Array) -> jax.Array:
    """[K, K] DTW distances between the clients' sequences [K, L, d]."""
    one = jax.vmap(dtw_distance, in_axes=(None, 0))
    return jax.vmap(one, in_axes=(0, None))(sequences, sequences)


def min_cut(weights: jax.Array, members: jax.Array) -> jax.Array:
    """One side [K] bool of a minimum-weight cut of the graph on `members` (Stoer-Wagner) with
    symmetric non-negative edge weights [K, K]; all False when fewer than 2 members. Fixed loop
    counts (K - 1 phases of K steps, surplus steps masked), so it traces once for any members."""
    k = weights.shape[0]
    eye = jnp.eye(k, dtype=bool)
    w = jnp.where(members[:, None] & members[None, :] & ~eye, weights, 0.0)

    def phase(_, carry):
        w, groups, active, best, side = carry

        def grow(_, order):  # maximum adjacency order: add the vertex most tied to the set
            in_set, ties, previous, last = order
            free = active & ~in_set
            v = jnp.argmax(jnp.where(free, ties, -jnp.inf))
            grows = jnp.any(free)
            in_set = in_set | (grows & (jnp.arange(k) == v))
            ties = ties + jnp.where(grows, w[v], 0.0)
            return in_set, ties, jnp.where(grows, last, previous), jnp.where(grows, v, last)

        zero = jnp.zeros((), jnp.int32)
        start = (jnp.zeros(k, bool), jnp.zeros(k, w.dtype), zero, zero)
        _, _, s, t = jax.lax.fori_loop(0, k, grow, start)
        valid = jnp.sum(active) >= 2
        cut = jnp.sum(jnp.where(active, w[t], 0.0))  # the cut of the phase: t against the rest
        better = valid & (cut < best)
        best, side = jnp.where(better, cut, best), jnp.where(better, groups[t], side)
        # Merge t into s.
        row = (w[s] + w[t]).at[s].set(0.0).at[t].set(0.0)
        merged = w.at[s].set(row).at[:, s].set(row).at[t].set(0.0).at[:, t].set(0.0)
        w = jnp.where(valid, merged, w)
        groups = jnp.where(valid, groups.at[s].set(groups[s] | groups[t]), groups)
        active = active & ~(valid & (jnp.arange(k) == t))
        return w, groups, active, best, side

    init = (w, eye, members, jnp.asarray(jnp.inf, w.dtype), jnp.zeros(k, bool))
    return jax.lax.fori_loop(0, k - 1, phase, init)[-1]


def flat_updates(updates: Any) -> jax.Array:
    """[K, P]: each client's update tree as one vector."""
    leaves = jax.tree.leaves(updates)
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)


def split_cluster(
    server: dict, flat: jax.Array, client_mask: jax.Array, options: GcflPlusOptions
) -> dict:
    """The server after this round's split test: `cluster` and `num_clusters` changed and the
    new cluster's model copied from its parent when a cluster splits, else unchanged."""
    k = flat.shape[0]
    cluster, num_clusters = server["cluster"], server["num_clusters"]
    member = (cluster[None, :] == jnp.arange(k)[:, None]) & client_mask[None, :]  # [C, K]
    count = jnp.sum(member, axis=1)
    mean = (member.astype(flat.dtype) @ flat) / jnp.maximum(count, 1)[:, None]
    norms = jnp.linalg.norm(flat, axis=1)
    mean_norm = jnp.linalg.norm(mean, axis=1)
    max_norm = jnp.max(jnp.where(member, norms[None, :], 0.0), axis=1)
    qualifies = (
        (mean_norm < options.eps1)
        & (max_norm > options.eps2)
        & (count >= MIN_SPLIT_MEMBERS)
        & (server["round"] > options.warmup_rounds)
        & (server["filled"] >= options.seq_length)
    )
    parent = jnp.argmax(qualifies)

    def split(server):
        members = member[parent]
        distances = pairwise_dtw(server["history"])
        pair = members[:, None] & members[None, :]
        similarity = jnp.max(jnp.where(pair, distances, 0.0)) - distances
        side = min_cut(similarity, members)
        models = jax.tree.map(
            lambda leaf: leaf.at[num_clusters].set(leaf[parent]), server["models"]
        )
        return server | {
            "cluster": jnp.where(side, num_clusters, cluster),
            "num_clusters": num_clusters + 1,
            "models": models,
            "filled": jnp.zeros_like(server["filled"]),
        }

    return jax.lax.cond(jnp.any(qualifies), split, lambda server: server, server)


def gcfl_plus(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    num_clients: int,
    options: GcflPlusOptions = GcflPlusOptions(),
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    opts = options
    width = opts.signature_dim or 1

    def init_server(key, data):
        params = task.init(key, data.inputs)
        server = {
            "models": jax.tree.map(lambda leaf: jnp.stack([leaf] * num_clients), params),
            "cluster": jnp.zeros((num_clients,), jnp.int32),
            "num_clusters": jnp.ones((), jnp.int32),
            "ids": client_slots.no_ids(num_clients),
            "history": jnp.zeros((num_clients, opts.seq_length, width), jnp.float32),
            "filled": jnp.zeros((), jnp.int32),
            "round": jnp.zeros((), jnp.int32),
        }
        if opts.signature_dim:
            server["projection_key"] = jax.random.key_data(jax.random.fold_in(key, 1))
        return server

    def init_client(server, data, key):
        return {"id": client_slots.new_id(key)}

    def cluster_model(server, state):
        index, _ = client_slots.find(server["ids"], state["id"])
        return client_slots.take(server["models"], server["cluster"][index])

    def client_update(server, state, data, key):
        start = cluster_model(server, state)
        params, metrics = train_from(task, start, data, key, optimizer, schedule)
        update = jax.tree.map(jnp.subtract, params, start)
        upload = {"id": state["id"], "update": update, "size": base.num_examples(data)}
        return ClientResult(state, upload, metrics, model=params)

    def signatures(server, flat):
        if not opts.signature_dim:
            return jnp.linalg.norm(flat, axis=1, keepdims=True)
        key = jax.random.wrap_key_data(server["projection_key"])
        shape = (flat.shape[1], opts.signature_dim)
        return flat @ (jax.random.normal(key, shape) / jnp.sqrt(opts.signature_dim))

    def server_update(server, uploads, client_mask, key):
        del key
        flat = flat_updates(uploads["update"])
        history = jnp.roll(server["history"], -1, axis=1).at[:, -1].set(signatures(server, flat))
        server = server | {
            "ids": client_slots.keep_present(server["ids"], uploads["id"], client_mask),
            "history": history,
            "filled": jnp.minimum(server["filled"] + 1, opts.seq_length),
            "round": server["round"] + 1,
        }
        server = split_cluster(server, flat, client_mask, opts)
        # FedAvg of the updates within each cluster; a cluster without real members keeps its model.
        sizes = uploads["size"] if weighted else jnp.ones_like(uploads["size"])
        member = server["cluster"][None, :] == jnp.arange(num_clients)[:, None]
        share = member * (sizes * client_mask)[None, :]
        share = share / jnp.maximum(jnp.sum(share, axis=1, keepdims=True), 1e-12)
        models = jax.tree.map(
            lambda model, update: model + jnp.tensordot(share, update, axes=1).astype(model.dtype),
            server["models"],
            uploads["update"],
        )
        return server | {"models": models}

    return base.FederatedAlgorithm(
        name="gcfl_plus",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=lambda server, state, data, key: cluster_model(server, state),
        predict=lambda params, inputs: task.logits(params, inputs),
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """The registry's builder: `cfg.gcfl_plus` options over the released defaults."""
    return gcfl_plus(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        spec.num_clients,
        parse_options(common.options(cfg, "gcfl_plus")),
        weighted=cfg.weighted,
    )
