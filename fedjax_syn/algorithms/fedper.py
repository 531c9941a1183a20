"""FedPer (Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with Personalization
Layers", arXiv 1912.00818, 2019): a shared encoder, a personal classifier head per client.

The server averages only the `encoder` parameters; each client keeps its own `head` across rounds
and is evaluated with (global encoder, own head).

Choices the paper leaves open: the personal layers are the model's `head` (`algorithms/parts`:
the last, classifying layer of every model here; the paper varies how many top layers stay
personal); the encoders are averaged as FedAvg averages (weighted by client size unless the
run's `weighted` is off);
every client takes part in every round and starts each round with a fresh optimiser.
"""

import optax

from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.algorithms.parts import average_encoders, join, split
from fedjax_syn.core import interface as base
from fedjax_syn.core.interface import ClientResult
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


def fedper(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    def init_server(key, data):
        return task.init(key, data.inputs)

    def init_client(server, data, key):
        return split(server)[1]

    def client_update(server, head, data, key):
        params, metrics = train_from(
            task, join(split(server)[0], head), data, key, optimizer, schedule
        )
        encoder, head = split(params)
        upload = {"encoder": encoder, "size": base.num_examples(data)}
        return ClientResult(head, upload, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        return average_encoders(server, uploads, client_mask, weighted)

    def personalize(server, head, data, key):
        return join(split(server)[0], head)

    return base.FederatedAlgorithm(
        name="fedper",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
    )
