"""Setup round 0 of one client (docs/fedlog.md, "The method"; the engine's `setup_client`, run
once in its own jitted program and evaluated as round 0): encoder pretraining, the first
synthetic nodes and one local epoch without L_cd, and, with prompt="trained", generator
pretraining. Every client starts from the common initialisation, and draws the pretraining head,
the synthetic nodes, the generator and the random networks from the key the server shares.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms.fedlog import generators
from fedjax_syn.algorithms.fedlog.config import Spec
from fedjax_syn.algorithms.fedlog.encoder_pretraining import pretrain_encoder
from fedjax_syn.algorithms.fedlog.local_epoch import Trainable, local_epoch
from fedjax_syn.algorithms.fedlog.server import own_model, upload
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.interface import ClientResult


class SharedKeys(NamedTuple):
    """Keys every client derives from the same server key (identical draws everywhere)."""

    head: jax.Array  # the pretraining head's initialisation
    x_head: jax.Array
    x_tail: jax.Array
    generator: jax.Array
    networks: jax.Array  # the random networks of generator pretraining

    @classmethod
    def from_server(cls, server_state: dict) -> "SharedKeys":
        return cls(*jax.random.split(jax.random.wrap_key_data(server_state["key"]), 5))


def pretrained_model(spec: Spec, init_params, data: ClientData, key, shared: SharedKeys):
    """The common FedLoGNet initialisation with the encoder pretrained on the client's data."""
    head = spec.task.init(shared.head, data.inputs)["params"]["head"]
    gnn_params = {"params": {"encoder": init_params["params"]["encoder"], "head": head}}
    pretrained = pretrain_encoder(spec.task, gnn_params, data, key, spec.config)
    encoder = pretrained.params["params"]["encoder"]
    return {"params": {**init_params["params"], "encoder": encoder}}


def first_epoch(spec: Spec, params, data: ClientData, key, shared: SharedKeys):
    """The first synthetic nodes X_head, X_tail [C * s, F] (Xavier uniform, identical on every
    client), trained with the model for one local epoch without L_cd."""
    shape = (spec.num_classes * spec.config.syn_per_class, data.inputs.x.shape[-1])
    xavier = jax.nn.initializers.xavier_uniform()
    x_head, x_tail = xavier(shared.x_head, shape), xavier(shared.x_tail, shape)
    scales = jnp.zeros((spec.num_classes,), jnp.float32)
    return local_epoch(spec, Trainable(params, x_head, x_tail), scales, data, key)


def setup_client(spec: Spec, server_state: dict, state, data: ClientData, key: jax.Array):
    """Round 0 of one client. Its state: params, X_head, X_tail, scales (and gen for
    prompt="trained"); its metrics: those of its local epoch."""
    del state  # nothing before round 0
    shared = SharedKeys.from_server(server_state)
    pre_key, gen_key, epoch_key = jax.random.split(key, 3)
    params = pretrained_model(spec, server_state["params"], data, pre_key, shared)
    trainable, scales, metrics = first_epoch(spec, params, data, epoch_key, shared)
    state = {**trainable._asdict(), "scales": scales}
    c = spec.config
    if c.prompt == "trained":  # pretrained from the common initialisation
        gen0 = generators.init_generator(shared.generator, data.inputs.x.shape[-1], c)
        state["gen"], _ = generators.pretrain_generator(
            gen0, spec.task.model, data.inputs, data.labels, data.mask, gen_key, shared.networks, c
        )
    return ClientResult(state, upload(spec, state, data), metrics, model=own_model(state))
