"""FedAvg with personalised fine-tuning (FedAvg-FT).

FedAvg trains the global model; for evaluation each client fine-tunes the current global model on
its own training data for a few epochs with a fresh optimiser. This is the personalisation that
*locally overfits*: it gains on the client's own distribution and loses on unseen classes, nodes and
clients. The fine-tuned weights are used for evaluation only and never sent back.
"""

import optax

from fedjax_syn.algorithms.fedavg import fedavg, train_from
from fedjax_syn.core import interface as base
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


def fedavg_ft(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    finetune: local.Schedule,
    finetune_optimizer: optax.GradientTransformation | None = None,
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    finetune_optimizer = optimizer if finetune_optimizer is None else finetune_optimizer

    def personalize(server, client_state, data, key):
        params, _ = train_from(task, server, data, key, finetune_optimizer, finetune)
        return params

    return fedavg(task, optimizer, schedule, weighted=weighted, name="fedavg_ft")._replace(
        personalize=personalize
    )
