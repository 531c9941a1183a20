"""FedProto (Tan, Long, Liu, Zhou, Lu, Jiang and Zhang, "FedProto: Federated Prototype Learning
across Heterogeneous Clients", AAAI 2022).

No model is averaged: each client keeps its own model and the clients and server exchange class
prototypes, the mean encoder representation of each class. A client trains on

    CE + lam * ||f(x) - P[y]||^2      (per example, averaged over the minibatch)

where P[y] is the server's prototype of the example's class (an example of a class the server has
no prototype of, e.g. in round 1, contributes 0), then uploads its own prototypes of the classes
it holds with their example counts. The server's prototype of a class is the count-weighted mean
of the clients' prototypes of it; a class no real client holds stays without one. Every mode
evaluates the client's own model (there is no global model).

Deviations from the paper and its released code:
- Aggregation: the count-weighted mean sum_i |D_ij| C_ij / N_j (the paper's equation carries an
  extra 1 / |N_j| factor; the released code takes the plain mean over the clients holding j).
- Regulariser: the squared L2 distance summed over the representation's dimensions; the released
  code's MSELoss also divides by the dimension (lam / d in our terms). Minibatch rows whose class
  has no prototype count in the mean with 0, as in the released code.
- Local prototypes are the means of the trained model's representations (inference mode) over
  the client's training examples, as the paper defines them; the released code averages the
  representations it saw during local training.
- Prediction uses the client model's head (the paper also reports nearest-prototype inference).
- Every client's model has the same architecture (the paper allows them to differ) and its own
  initialisation, drawn from its own key, as in the released code; every client takes part in
  every round. The representation is the encoder's output (`Task.embed`); on graphs, that of the
  minibatch's target nodes after propagating the whole subgraph.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.representation import cross_entropy_and_features
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task, weighted_mean

_CHUNK = 512  # images embedded at a time when computing prototypes, to bound memory


@dataclasses.dataclass(frozen=True)
class FedProtoOptions:
    lam: float = 1.0  # weight of the prototype regulariser; 0 is local training

    def __post_init__(self):
        check(self.lam >= 0, f"fedproto lam must be >= 0, got {self.lam}")


def fedproto_options(raw: Mapping[str, Any] | None) -> FedProtoOptions:
    """`FedProtoOptions` from the `fedproto` option group; absent keys keep the defaults."""
    return common.parse_options(FedProtoOptions, "fedproto", raw)


def prototype_loss(task: Task, data: ClientData, server: Any, lam: float) -> local.LossFn:
    """The per-minibatch loss CE + lam * mean ||f(x) - P[y]||^2 over the rows whose class has a
    server prototype (the others add 0)."""

    def loss_fn(params, idx, weights, rng):
        ce, z = cross_entropy_and_features(task, params, data, idx, weights, rng)
        labels = data.labels[idx]
        distance = jnp.sum((z - server["protos"][labels]) ** 2, axis=-1)
        regulariser = jnp.where(server["count"][labels] > 0, distance, 0.0)
        return ce + lam * weighted_mean(regulariser, weights)

    return loss_fn


def class_prototypes(
    task: Task, params: Any, data: ClientData, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    """(prototypes [C, d]: the mean representation of each class over the client's training
    examples, 0 for a class it lacks; counts [C]). Images are embedded `_CHUNK` at a time."""
    onehot = jax.nn.one_hot(data.labels, num_classes) * data.mask[:, None]  # [n, C]
    counts = jnp.sum(onehot, axis=0)
    if task.graph:
        sums = onehot.T @ task.embed(params, data.inputs)[0]
    else:
        n = data.labels.shape[0]
        chunk = min(_CHUNK, n)
        steps = -(-n // chunk)
        idx = jnp.minimum(jnp.arange(steps * chunk), n - 1).reshape(steps, chunk)
        weights = jnp.pad(onehot, ((0, steps * chunk - n), (0, 0))).reshape(steps, chunk, -1)
        embed = lambda i: task.embed(params, data.inputs, i)[0]
        dim = jax.eval_shape(embed, idx[0]).shape[-1]

        def add(total, batch):
            i, w = batch
            return total + w.T @ embed(i), None

        sums, _ = jax.lax.scan(add, jnp.zeros((num_classes, dim)), (idx, weights))
    return sums / jnp.maximum(counts, 1.0)[:, None], counts


def fedproto(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    num_classes: int,
    options: FedProtoOptions = FedProtoOptions(),
) -> base.FederatedAlgorithm:
    def init_server(key, data):
        """No prototype of any class yet (count 0), shaped like the encoder's output."""
        params = jax.eval_shape(task.init, key, data.inputs)
        features = jax.eval_shape(lambda p: task.embed(p, data.inputs)[0], params)
        return {
            "protos": jnp.zeros((num_classes, features.shape[-1])),
            "count": jnp.zeros((num_classes,)),
        }

    def init_client(server, data, key):
        return task.init(key, data.inputs)

    def client_update(server, params, data, key):
        loss_fn = prototype_loss(task, data, server, options.lam)
        params, _, metrics = local.train(loss_fn, params, optimizer, data.mask, key, schedule)
        protos, counts = class_prototypes(task, params, data, num_classes)
        return ClientResult(params, {"protos": protos, "count": counts}, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        counts = uploads["count"] * client_mask[:, None]  # [K, C]; padded clients count 0
        total = jnp.sum(counts, axis=0)
        sums = jnp.einsum("kc,kcd->cd", counts, uploads["protos"])
        return {"protos": sums / jnp.maximum(total, 1.0)[:, None], "count": total}

    def personalize(server, params, data, key):
        return params

    return base.FederatedAlgorithm(
        name="fedproto",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """The registry's builder: the run's optimiser and schedule, options from `cfg.fedproto`."""
    options = fedproto_options(common.options(cfg, "fedproto"))
    optimizer, schedule = common.optimizer(cfg), common.local_schedule(cfg)
    return fedproto(task, optimizer, schedule, spec.num_classes, options)
