"""FedAvg (McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning
of Deep Networks from Decentralized Data", AISTATS 2017) and FedProx (Li, Sahu, Zaheer, Sanjabi,
Talwalkar and Smith, "Federated Optimization in Heterogeneous Networks", MLSys 2020).

Each round every client starts from the global model, trains locally with a fresh optimiser, and the
server averages the returned parameters weighted by client size. FedProx adds (mu / 2) ||w - w_g||^2
to every local loss; with mu = 0 it is FedAvg. The personalised model is the new global model; the
`local` evaluation mode scores each client's parameters right after its local training.

Option `keep_optimizer_state` (group `fedavg`, read by both): each client keeps its optimiser state
from one round to the next, as the FED-PUB code the released FedLoG baselines build on does, where
the default (a fresh optimiser every round) follows the released FedLoG code. With Adam and a
handful of local steps a fresh state makes each step about lr * sign(gradient); on Cora K = 10 a
kept state did not lift FedAvg's global model off the class prior (results/README.md).

Deviations: every client takes part in every round (both papers sample a fraction of the
clients), and FedProx's clients run their full local schedule (the paper also lets a client
stop early, its "gamma-inexact" solutions).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.interface import ClientResult
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


@dataclasses.dataclass(frozen=True)
class FedAvgOptions:
    keep_optimizer_state: bool = False  # each client's optimiser state carries over rounds


def fedavg_options(raw: Mapping[str, Any] | None) -> FedAvgOptions:
    """`FedAvgOptions` from the `fedavg` option group; absent keys keep the defaults."""
    return common.parse_options(FedAvgOptions, "fedavg", raw)


def local_loss(task: Task, data: ClientData, anchor: Any = None, mu: float = 0.0):
    """The per-minibatch loss on `data`, plus FedProx's proximal pull towards `anchor`."""

    def loss_fn(params, idx, weights, rng):
        loss = task.loss(params, data.inputs, data.labels, idx, weights, rng)
        if mu:
            sq = sum(
                jnp.sum((p - a) ** 2)
                for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(anchor))
            )
            loss = loss + 0.5 * mu * sq
        return loss

    return loss_fn


def train_from(
    task: Task,
    params: Any,
    data: ClientData,
    key: jax.Array,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    mu: float = 0.0,
) -> tuple[Any, base.Metrics]:
    """Trains `params` on one client's training examples; returns (params, metrics: mean loss
    and local steps taken)."""
    loss_fn = local_loss(task, data, anchor=params, mu=mu)
    params, _, stats = local.train(loss_fn, params, optimizer, data.mask, key, schedule)
    return params, stats


def fedavg(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    *,
    proximal_mu: float = 0.0,
    weighted: bool = True,
    name: str = "fedavg",
    options: FedAvgOptions = FedAvgOptions(),
) -> base.FederatedAlgorithm:
    keep = options.keep_optimizer_state

    def init_server(key, data):
        return task.init(key, data.inputs)

    def init_client(server, data, key):
        return optimizer.init(server) if keep else base.no_state()

    def client_update(server, client_state, data, key):
        loss_fn = local_loss(task, data, anchor=server, mu=proximal_mu)
        opt_state = client_state if keep else None
        params, opt_state, metrics = local.train(
            loss_fn, server, optimizer, data.mask, key, schedule, opt_state
        )
        upload = {"params": params, "size": base.num_examples(data)}
        return ClientResult(opt_state if keep else client_state, upload, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        del server, key
        weights = uploads["size"] if weighted else jnp.ones_like(uploads["size"])
        return base.weighted_average(uploads["params"], weights * client_mask)

    def personalize(server, client_state, data, key):
        return server

    return base.FederatedAlgorithm(
        name=name,
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
        global_model=lambda server: server,
    )


def fedprox(
    task,
    optimizer,
    schedule,
    *,
    mu: float = 0.01,
    weighted: bool = True,
    options: FedAvgOptions = FedAvgOptions(),
):
    return fedavg(
        task,
        optimizer,
        schedule,
        proximal_mu=mu,
        weighted=weighted,
        name="fedprox",
        options=options,
    )
