"""FedBABU (Oh, Kim, Yun, "FedBABU: Toward Enhanced Representation for Federated Image
Classification", ICLR 2022).

The classifier head stays at its random initialisation, shared by every client, for the whole of
federated training: clients train only the `encoder` (body) from the global model, the server
averages the bodies FedAvg-style, and the head never changes. For evaluation each client fine-tunes
the whole global model (body and head) on its own training data for `finetune_epochs` epochs with
a fresh optimiser, as FedAvg-FT does; the fine-tuned weights are never sent back.

Evaluation: `personalized` is the fine-tuned model, `local` the client's model right after its body
update (with the fixed head), `global` the server's model (averaged body, initial head).

Deviations from the paper:
- The head's initialisation is the model's default random initialiser.
- Fine-tuning uses the run's optimiser and batch size (the paper tunes the fine-tuning learning
  rate separately), and every client takes part in every round (the paper samples clients).
"""

import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.algorithms.parts import average_encoders, split, train_part
from fedjax_syn.core import interface as base
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


def fedbabu(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    finetune: local.Schedule,
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    def init_server(key, data):
        return task.init(key, data.inputs)

    def client_update(server, client_state, data, key):
        params, metrics = train_part(task, server, "encoder", data, key, optimizer, schedule)
        upload = {"encoder": split(params)[0], "size": base.num_examples(data)}
        return ClientResult(client_state, upload, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        return average_encoders(server, uploads, client_mask, weighted)

    def personalize(server, client_state, data, key):
        return train_from(task, server, data, key, optimizer, finetune)[0]

    return base.FederatedAlgorithm(
        name="fedbabu",
        init_server=init_server,
        init_client=base.no_state,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
        global_model=lambda server: server,
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    return fedbabu(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        common.finetune_schedule(cfg),
        weighted=cfg.weighted,
    )
