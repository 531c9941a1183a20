"""Ditto (Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021).

The global model is trained exactly as FedAvg: each client trains a copy w_k of the global model w
and uploads it, and the server averages the copies. Each client also keeps a personal model v_k
(its state, initialised to the initial global model) which every round trains, for the same local
schedule, on its loss plus (lambda / 2) ||v_k - w||^2, with w the global model at the round's
start. Ditto evaluates each client with its personal model, so `local` and `personalized` both
score v_k after this round's update; `global` scores the server's model.

Choices and deviations:
- lambda defaults to 1, not 0.1: 1 is the value of the released clean-data runs
  (github.com/litian96/ditto, `run_*_clean_ditto_lam1.sh`) and the paper's fixed lambda, outside
  strong attacks, for devices with too little validation data (0.1 is its value under strong
  attacks). The paper otherwise picks lambda per device on validation data (from {0.1, 1, 2}
  without strong attacks); here one lambda serves every client.
- Both models train on the same minibatch sequence (one key), as in the released solver, where
  each minibatch feeds one personal and one global step; the paper's Algorithm 1 runs them as two
  loops. Each training starts a fresh optimiser state (plain SGD in the paper).
- Clients report the global copy's training loss and steps (FedAvg's metrics) and, beside them,
  the personal model's regularised loss as `personal_loss`.
"""

import dataclasses

import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import fedavg, local_loss
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


@dataclasses.dataclass(frozen=True)
class DittoOptions:
    """`cfg.ditto`: lambda, the pull of each personal model towards the global one."""

    lam: float = 1.0

    def __post_init__(self):
        check(self.lam >= 0, f"ditto lam must be >= 0, got {self.lam}")


def ditto_options(raw: dict | None) -> DittoOptions:
    return common.parse_options(DittoOptions, "ditto", raw)


def ditto(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    *,
    lam: float = 1.0,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    """FedAvg for the global model, plus a personal model per client pulled towards it by `lam`."""
    global_part = fedavg(task, optimizer, schedule, weighted=weighted, name="ditto")

    def init_client(server, data, key):
        return server

    def client_update(server, personal, data, key):
        shared = global_part.client_update(server, personal, data, key)
        loss_fn = local_loss(task, data, anchor=server, mu=lam)
        personal, _, stats = local.train(loss_fn, personal, optimizer, data.mask, key, schedule)
        metrics = {**shared.metrics, "personal_loss": stats["loss"]}
        return ClientResult(personal, shared.upload, metrics, model=personal)

    def personalize(server, personal, data, key):
        return personal

    return global_part._replace(
        init_client=init_client, client_update=client_update, personalize=personalize
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: the run's optimiser and schedule for both models, `cfg.ditto` options."""
    options = ditto_options(common.options(cfg, "ditto"))
    return ditto(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        lam=options.lam,
        weighted=cfg.weighted,
    )
