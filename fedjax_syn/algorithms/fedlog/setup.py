"""Setup round 0 of one client (docs/fedlog.md, "The method"; the engine's `setup_client`, run
once in its own jitted program and evaluated as round 0):

1. encoder pretraining, phi + a linear head, early stopping on validation (`encoder_pretraining`);
2. the first synthetic nodes X_head, X_tail (Xavier uniform, identical on every client) and one
   local epoch without L_cd (`local_epoch`), from the pretrained encoder;
3. with prompt="trained", generator pretraining (`generators`, `pair_gradients`).

Every client starts from the common initialisation, and draws the pretraining head, the
synthetic nodes, the generator and the random networks from the key the server shares.
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


def init_synthetic(keys: SharedKeys, num_classes: int, features: int, s: int):
    """X_head, X_tail [C * s, F], Xavier uniform, identical on every client."""
    xavier = jax.nn.initializers.xavier_uniform()
    shape = (num_classes * s, features)
    return xavier(keys.x_head, shape), xavier(keys.x_tail, shape)


def pretrained_model(spec: Spec, init_params, data: ClientData, key, shared: SharedKeys):
    """The common FedLoGNet initialisation with the encoder pretrained on the client's data."""
    head = spec.task.init(shared.head, data.inputs)["params"]["head"]
    gnn_params = {"params": {"encoder": init_params["params"]["encoder"], "head": head}}
    pretrained = pretrain_encoder(spec.task, gnn_params, data, key, spec.config)
    encoder = pretrained.params["params"]["encoder"]
    return {"params": {**init_params["params"], "encoder": encoder}}


def first_epoch(spec: Spec, params, data: ClientData, key, shared: SharedKeys):
    """The first synthetic nodes, trained with the model for one local epoch without L_cd."""
    features = data.inputs.x.shape[-1]
    x_head, x_tail = init_synthetic(shared, spec.num_classes, features, spec.config.syn_per_class)
    scales = jnp.zeros((spec.num_classes,), jnp.float32)
    return local_epoch(spec, Trainable(params, x_head, x_tail), scales, data, key)


def pretrained_generator(spec: Spec, data: ClientData, key, shared: SharedKeys):
    """The client's prompt generator, pretrained from the common initialisation."""
    c = spec.config
    gen0 = generators.init_generator(shared.generator, data.inputs.x.shape[-1], c)
    inputs, labels, mask = data.inputs, data.labels, data.mask
    gen, _ = generators.pretrain_generator(
        gen0, spec.task.model, inputs, labels, mask, key, shared.networks, c
    )
    return gen


def setup_client(spec: Spec, server_state: dict, state, data: ClientData, key: jax.Array):
    """Round 0 of one client. Its state: params, X_head, X_tail, scales (and gen for
    prompt="trained"); its metrics: those of its local epoch."""
    del state  # nothing before round 0
    shared = SharedKeys.from_server(server_state)
    pre_key, gen_key, epoch_key = jax.random.split(key, 3)
    params = pretrained_model(spec, server_state["params"], data, pre_key, shared)
    trainable, scales, metrics = first_epoch(spec, params, data, epoch_key, shared)
    state = {**trainable._asdict(), "scales": scales}
    if spec.config.prompt == "trained":
        state["gen"] = pretrained_generator(spec, data, gen_key, shared)
    return ClientResult(state, upload(spec, state, data), metrics, model=own_model(state))
