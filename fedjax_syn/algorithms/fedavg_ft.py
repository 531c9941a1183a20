"""FedAvg with personalised fine-tuning (FedAvg-FT), the baseline of on-device personalisation
evaluated by Wang et al., "Federated Evaluation of On-device Personalization", arXiv 1910.10252,
2019.

FedAvg trains the global model; for evaluation each client fine-tunes the current global model on
its own training data for a few epochs with a fresh optimiser. This is the personalisation that
*locally overfits*: it gains on the client's own distribution and loses on unseen classes, nodes and
clients. The fine-tuned weights are used for evaluation only and never sent back.

Deviations: fine-tuning takes `finetune_epochs` full epochs (default 5) with the run's optimiser
at every evaluated round, on all of the client's training data (Wang et al. fine-tune on a
client's earlier data and score its later data); every client takes part in every round.
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
