"""MOON (Li, He and Song, "Model-Contrastive Federated Learning", CVPR 2021).

FedAvg whose local loss adds a model-contrastive term: on every minibatch the representation z of
the model being trained is pulled towards z_glob, that of the round's global model, and pushed
away from z_prev, that of the client's own model after its previous local update:

    loss  = CE + mu * l_con,
    l_con = -log( exp(sim(z, z_glob) / tau) / (exp(sim(z, z_glob) / tau) + exp(sim(z, z_prev) / tau)) )

with sim the cosine similarity. Both reference models are fixed during local training. The client
state is its previous local model; the server averages the clients' models as FedAvg does, and the
personalised model is the new global model.

Deviations from the paper:
- Representation: the paper compares the outputs of a projection head added on top of the
  encoder; our models are encoder + linear head only, so z is the encoder's output
  (`Task.embed`). On graphs it is the minibatch's target nodes' output after propagating the
  client's whole subgraph.
- Previous model before the first update: the client's previous model starts as the initial
  global model (the released code has no previous model in round 1 and skips the negative term).
  In round 1 z_glob == z_prev, so l_con is the constant log 2, whose gradient is zero: round 1
  trains exactly as FedAvg does, as in the released code.
- mu: the paper tunes it per data set (5 on CIFAR-10, 1 on CIFAR-100 and Tiny-ImageNet); the
  default here is 1. tau = 0.5 as in the paper.
- The fixed models' representations are computed in inference mode (no dropout); every client
  takes part in every round (the paper also samples clients); one previous model per client (the
  paper's model buffer of size 1, its default).
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import fedavg
from fedjax_syn.algorithms.representation import cross_entropy_and_features
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task, weighted_mean

_EPS = 1e-8  # floor of |a| |b| in the cosine similarity, as PyTorch's CosineSimilarity


@dataclasses.dataclass(frozen=True)
class MoonOptions:
    mu: float = 1.0  # weight of the model-contrastive term; 0 is FedAvg
    temperature: float = 0.5  # tau

    def __post_init__(self):
        check(self.mu >= 0, f"moon mu must be >= 0, got {self.mu}")
        check(self.temperature > 0, f"moon temperature must be > 0, got {self.temperature}")


def moon_options(raw: Mapping[str, Any] | None) -> MoonOptions:
    """`MoonOptions` from the `moon` option group; absent keys keep the defaults."""
    return common.parse_options(MoonOptions, "moon", raw)


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """Row-wise cosine similarity of [B, d] arrays. The floor goes on the squared norms: the
    gradient of a norm at a zero row (a padded node, a dead representation) is 0/0, and NaN
    times the floor's zero cotangent is still NaN."""
    squared = jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1)
    return jnp.sum(a * b, axis=-1) / jnp.sqrt(jnp.maximum(squared, _EPS**2))


def contrastive(
    z: jax.Array, z_glob: jax.Array, z_prev: jax.Array, temperature: float
) -> jax.Array:
    """l_con per example [B]: the cross-entropy of picking z_glob (the positive) over z_prev."""
    pos = cosine(z, z_glob) / temperature
    neg = cosine(z, z_prev) / temperature
    return jnp.logaddexp(pos, neg) - pos


def _fixed_features(task: Task, params: Any, inputs: Any) -> Callable[[jax.Array], jax.Array]:
    """idx -> a fixed model's representations of the examples (nodes) at idx. A graph is
    propagated once up front, since the whole subgraph would be propagated for every minibatch."""
    if task.graph:
        features = task.embed(params, inputs)[0]
        return lambda idx: features[idx]
    return lambda idx: task.embed(params, inputs, idx)[0]


def moon_loss(
    task: Task, data: ClientData, global_params: Any, previous: Any, options: MoonOptions
) -> local.LossFn:
    """The per-minibatch loss CE + mu * l_con on `data`, against the fixed global and previous
    models."""
    global_features = _fixed_features(task, global_params, data.inputs)
    previous_features = _fixed_features(task, previous, data.inputs)

    def loss_fn(params, idx, weights, rng):
        ce, z = cross_entropy_and_features(task, params, data, idx, weights, rng)
        l_con = contrastive(z, global_features(idx), previous_features(idx), options.temperature)
        return ce + options.mu * weighted_mean(l_con, weights)

    return loss_fn


def moon(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    options: MoonOptions = MoonOptions(),
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    def init_client(server, data, key):
        return server  # the previous local model starts as the initial global model

    def client_update(server, previous, data, key):
        loss_fn = moon_loss(task, data, server, previous, options)
        params, _, metrics = local.train(loss_fn, server, optimizer, data.mask, key, schedule)
        upload = {"params": params, "size": base.num_examples(data)}
        return ClientResult(params, upload, metrics, model=params)

    # Server, personalisation, prediction and the global model are FedAvg's.
    return fedavg(task, optimizer, schedule, weighted=weighted, name="moon")._replace(
        init_client=init_client, client_update=client_update
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """The registry's builder: the run's optimiser and schedule, options from `cfg.moon`."""
    options = moon_options(common.options(cfg, "moon"))
    return moon(
        task, common.optimizer(cfg), common.local_schedule(cfg), options, weighted=cfg.weighted
    )
