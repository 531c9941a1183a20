"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML 2020).

Control variates correct client drift. The server holds the global parameters x and a control
variate c; every client holds its own c_i (zeros at the start). Each local step descends on the
corrected gradient g(y) + c - c_i instead of g(y). After its K local steps with learning rate eta a
client refreshes its control variate with the paper's option II,

    c_i+ = c_i - c + (x - y) / (K * eta),

and uploads (y - x, c_i+ - c_i). The server moves x <- x + eta_g * mean(y - x) and
c <- c + (|S| / N) * mean(c_i+ - c_i); here every real client takes part each round, so |S| = N
and c stays the plain mean of the clients' c_i. Evaluation: `local` scores y, `global` and
`personalized` score x.

Deviations from the paper:
- The mean of y - x is weighted by client size when `weighted` (the run's FedAvg weighting), not
  uniform; the control-variate mean is uniform over real clients, as in the paper.
- K is the number of steps the client actually took (it varies with the client's size under an
  epochs schedule); a client that took none keeps its c_i (the formula would divide by zero).
- The correction is added to the raw gradient before the run's optimiser transforms it (weight
  decay, momentum, Adam). Under SGD this is the paper's update. Under Adam the corrected gradient
  feeds Adam's moment estimates, and (x - y) / (K * eta) is then the mean Adam step over eta rather
  than the mean corrected gradient the option-II formula assumes: the method runs, but outside
  the paper's analysis.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import train_from
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


def corrected(
    optimizer: optax.GradientTransformation, correction: Any
) -> optax.GradientTransformation:
    """`optimizer` fed with gradient + correction: SCAFFOLD's drift correction c - c_i."""
    shift = optax.stateless(lambda grads, params: jax.tree.map(jnp.add, grads, correction))
    return optax.chain(shift, optimizer)


def scaffold(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    lr: float,
    *,
    global_lr: float = 1.0,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    """SCAFFOLD with local learning rate `lr` (eta, the optimiser's) and server rate `global_lr`."""

    def init_server(key, data):
        params = task.init(key, data.inputs)
        return {"params": params, "control": jax.tree.map(jnp.zeros_like, params)}

    def init_client(server, data, key):
        return jax.tree.map(jnp.zeros_like, server["control"])

    def client_update(server, control, data, key):
        x, c = server["params"], server["control"]
        drift = jax.tree.map(jnp.subtract, c, control)
        y, metrics = train_from(task, x, data, key, corrected(optimizer, drift), schedule)
        steps = metrics["steps"]
        scale = 1.0 / (jnp.maximum(steps, 1.0) * lr)  # guarded: steps = 0 is masked out below
        new_control = jax.tree.map(
            lambda ci, cg, xl, yl: jnp.where(steps > 0, ci - cg + (xl - yl) * scale, ci),
            control,
            c,
            x,
            y,
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
    """Registry builder: the run's optimiser, schedule and `lr` (eta), `cfg.scaffold` options."""
    options = scaffold_options(common.options(cfg, "scaffold"))
    return scaffold(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        cfg.lr,
        global_lr=options.global_lr,
        weighted=cfg.weighted,
    )
