"""APFL (Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning", arXiv 2003.13461,
2020).

Every client keeps a personal model v and a mixing weight alpha in [0, 1]; its personalised model
is the mixture alpha v + (1 - alpha) w with the shared model w. Each local step, on one minibatch
and from the values before the step (the paper's Algorithm 1):

    w     <- w - lr grad f(w)
    v     <- v - lr grad_v f(alpha v + (1 - alpha) w)       (= alpha grad f at the mixture)
    alpha <- clip(alpha - lr grad_alpha f(alpha v + (1 - alpha) w), 0, 1)   (when `adaptive`)

The three run as one `local.train` on the tree {w, v, alpha} with the loss
f(alpha v + (1 - alpha) sg(w)) + f(w) - sg(f(w)) (sg: stop-gradient), whose gradient is exactly
(grad f(w), grad_v f(mixture), grad_alpha f(mixture)) and whose value is the mixture's loss (the
reported training loss). Clients upload w and the server averages it as FedAvg does.

Evaluation: `personalized` mixes the client's v and alpha with the new global w (the w it starts
the next round from); `local` mixes them with the client's own just-trained w; `global` is the
server's w.

Deviations from the paper:
- The run's optimiser (momentum, Adam, weight decay) steps w and v; alpha always takes plain SGD
  steps at the run's learning rate, projected onto [0, 1] after each step, so with
  `adaptive=False` nothing moves it. Under an Adam recipe (the graph comparison: lr 1e-3) that
  rate is far below the paper's SGD rates, and alpha stays close to its start.
- v starts at the common initial model, alpha at the `alpha` option (0.25, as in the paper's
  experiments).
- The server averages w weighted by training examples when the run's `weighted` is set (the paper:
  a plain mean), and every client takes part in every round (the paper samples clients).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import fedavg, local_loss
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


@dataclasses.dataclass(frozen=True)
class APFLOptions:
    alpha: float = 0.25  # each client's initial mixing weight of its personal model
    adaptive: bool = True  # learn alpha by its gradient; False keeps it at `alpha`

    def __post_init__(self):
        check(
            isinstance(self.alpha, int | float)
            and not isinstance(self.alpha, bool)
            and 0.0 <= self.alpha <= 1.0,
            f"apfl alpha must be a number in [0, 1], got {self.alpha!r}",
        )
        check(
            isinstance(self.adaptive, bool),
            f"apfl adaptive must be true or false, got {self.adaptive!r}",
        )


def options(raw: dict | None) -> APFLOptions:
    return common.parse_options(APFLOptions, "apfl", raw)


def mix(alpha: jax.Array, v: Any, w: Any) -> Any:
    """The personalised model alpha v + (1 - alpha) w."""
    return jax.tree.map(lambda a, b: alpha * a + (1.0 - alpha) * b, v, w)


def apfl_loss(task: Task, data: ClientData) -> local.LossFn:
    """The loss on {w, v, alpha} whose gradient is APFL's three updates (module docstring)."""
    loss = local_loss(task, data)

    def loss_fn(params, idx, weights, rng):
        w = params["w"]
        mixed = loss(mix(params["alpha"], params["v"], jax.lax.stop_gradient(w)), idx, weights, rng)
        shared = loss(w, idx, weights, rng)
        return mixed + shared - jax.lax.stop_gradient(shared)

    return loss_fn


def projected_sgd(lr: float) -> optax.GradientTransformation:
    """Plain SGD whose every step lands back in [0, 1]."""

    def update(grads, state, params):
        return jax.tree.map(lambda g, p: jnp.clip(p - lr * g, 0.0, 1.0) - p, grads, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def apfl(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    *,
    alpha: float = 0.25,
    adaptive: bool = True,
    alpha_lr: float = 0.1,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    alpha_step = projected_sgd(alpha_lr) if adaptive else optax.set_to_zero()
    joint = optax.multi_transform(
        {"model": optimizer, "alpha": alpha_step}, {"w": "model", "v": "model", "alpha": "alpha"}
    )

    def init_client(server, data, key):
        return {"v": server, "alpha": jnp.asarray(alpha, jnp.float32)}

    def client_update(server, state, data, key):
        params = {"w": server, **state}
        params, _, metrics = local.train(
            apfl_loss(task, data), params, joint, data.mask, key, schedule
        )
        upload = {"params": params["w"], "size": base.num_examples(data)}
        state = {"v": params["v"], "alpha": params["alpha"]}
        return ClientResult(
            state, upload, metrics, model=mix(params["alpha"], params["v"], params["w"])
        )

    def personalize(server, state, data, key):
        return mix(state["alpha"], state["v"], server)

    # FedAvg's server: initialisation, averaging of w, global model.
    return fedavg(task, optimizer, schedule, weighted=weighted, name="apfl")._replace(
        init_client=init_client, client_update=client_update, personalize=personalize
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    opts = options(common.options(cfg, "apfl"))
    return apfl(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        alpha=opts.alpha,
        adaptive=opts.adaptive,
        alpha_lr=cfg.lr,
        weighted=cfg.weighted,
    )
