"""Local training only: every client trains its own model and never communicates.

The lower bound on generalisation: a client knows nothing beyond its own (skewed) data.
"""

import optax

from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.core import interface as base
from fedjax_syn.core.interface import ClientResult
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


def local_only(
    task: Task, optimizer: optax.GradientTransformation, schedule: local.Schedule
) -> base.FederatedAlgorithm:
    def init_server(key, data):
        return task.init(key, data.inputs)  # the common initialisation every client starts from

    def init_client(server, data, key):
        return server

    def client_update(server, params, data, key):
        params, metrics = train_from(task, params, data, key, optimizer, schedule)
        return ClientResult(params, {}, metrics, model=params)

    def server_update(server, uploads, client_mask, key):
        return server

    def personalize(server, params, data, key):
        return params

    return base.FederatedAlgorithm(
        name="local",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=lambda params, inputs: task.logits(params, inputs),
    )
