"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML 2020).

Control variates correct client drift. The server holds the global parameters x and a control
variate c; every client holds its own c_i (zeros at the start). Each local step descends on the
corrected gradient g(y) + c - c_i instead of g(y). After its K local steps with learning rate eta a
client refreshes its control variate to the mean of the raw gradients g it met on the way,

    c_i+ = (1 / K) * sum_k g(y_k),

which under plain SGD equals the paper's option II, c_i - c + (x - y) / (K * eta) (the steps sum to
x - y = eta * sum_k (g(y_k) + c - c_i)), and stays a gradient estimate under any optimiser. It
uploads (y - x, c_i+ - c_i). The server moves x <- x + eta_g * mean(y - x) and
c <- c + (|S| / N) * mean(c_i+ - c_i); here every real client takes part each round, so |S| = N
and c stays the plain mean of the clients' c_i. Evaluation: `local` scores y, `global` and
`personalized` score x.

Deviations from the paper:
- The mean of y - x is weighted by client size when `weighted` (the run's FedAvg weighting), not
  uniform; the control-variate mean is uniform over real clients, as in the paper.
- K is the number of steps the client actually took (it varies with the client's size under an
  epochs schedule); a client that took none keeps its c_i.
- The control variate is the mean raw gradient, not option II's parameter difference: the same
  under SGD without weight decay (tests/test_scaffold.py), and still the client's gradient under
  Adam, whose steps (x - y) / (K * eta) are normalised, not gradients; read as gradients they made
  the correction dwarf the gradient (Cora, Adam: Seen 57 % against FedAvg's 82 %). Weight decay
  (added by the run's optimiser after the correction) is not part of g, as in the paper's SGD.
- The correction is added to the raw gradient before the run's optimiser transforms it (weight
  decay, momentum, Adam). Under SGD this is the paper's update.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import local_loss
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


@dataclasses.dataclass(frozen=True)
class ScaffoldOptions:
    """`cfg.scaffold`: the server learning rate eta_g (1.0 in the paper's experiments)."""

    global_lr: float = 1.0

    def __post_init__(self):
        check(self.global_lr > 0, f"scaffold global_lr must be > 0, got {self.global_lr}")


def scaffold_options(raw: dict | None) -> ScaffoldOptions:
    return common.parse_options(ScaffoldOptions, "scaffold", raw)


class _Sum(NamedTuple):
    total: Any  # the raw gradients received so far, summed


def corrected(
    optimizer: optax.GradientTransformation, correction: Any
) -> optax.GradientTransformation:
    """`optimizer` fed with gradient + correction (SCAFFOLD's drift correction c - c_i), keeping
    the sum of the raw gradients in its state (first element of the chain's state)."""

    def init(params):
        return _Sum(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        shifted = jax.tree.map(jnp.add, grads, correction)
        return shifted, _Sum(jax.tree.map(jnp.add, state.total, grads))

    return optax.chain(optax.GradientTransformation(init, update), optimizer)


def scaffold(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    *,
    global_lr: float = 1.0,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    """SCAFFOLD with the run's local optimiser and server learning rate `global_lr`."""

    def init_server(key, data):
        params = task.init(key, data.inputs)
        return {"params": params, "control": jax.tree.map(jnp.zeros_like, params)}

    def init_client(server, data, key):
        return jax.tree.map(jnp.zeros_like, server["control"])

    def client_update(server, control, data, key):
        x, c = server["params"], server["control"]
        drift = jax.tree.map(jnp.subtract, c, control)
        y, opt_state, metrics = local.train(
            local_loss(task, data), x, corrected(optimizer, drift), data.mask, key, schedule
        )
        steps = metrics["steps"]
        mean = 1.0 / jnp.maximum(steps, 1.0)  # guarded: steps = 0 is masked out below
        new_control = jax.tree.map(
            lambda ci, total: jnp.where(steps > 0, total * mean, ci), control, opt_state[0].total
        )
        upload = {
            "delta": jax.tree.map(jnp.subtract, y, x),
            "control_delta": jax.tree.map(jnp.subtract, new_control, control),
            "size": base.num_examples(data),
        }
        return ClientResult(new_control, upload, metrics, model=y)

    def server_update(server, uploads, client_mask, key):
        sizes = uploads["size"]
        weights = (sizes if weighted else jnp.ones_like(sizes)) * client_mask
        delta = base.weighted_average(uploads["delta"], weights)
        # Full participation: |S| / N = 1, so c moves by the plain mean over real clients.
        control_delta = base.weighted_average(uploads["control_delta"], client_mask)
        step = lambda old, d: old + global_lr * d
        return {
            "params": jax.tree.map(step, server["params"], delta),
            "control": jax.tree.map(jnp.add, server["control"], control_delta),
        }

    def personalize(server, control, data, key):
        return server["params"]

    return base.FederatedAlgorithm(
        name="scaffold",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
        global_model=lambda server: server["params"],
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: the run's optimiser and schedule, `cfg.scaffold` options."""
    options = scaffold_options(common.options(cfg, "scaffold"))
    return scaffold(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        global_lr=options.global_lr,
        weighted=cfg.weighted,
    )
