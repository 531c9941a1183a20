"""Graph FedLoG's server: its state, what clients upload, and the blend after every round
(docs/fedlog.md, "The method"). The reductions themselves are shared with the image recipe
(`shared.py`); graph-only here are the choice of synthetic nodes behind the global set and the
class-wise generators g_c = sum_k w_kc g^k (parameters blended with the same weights w_kc).
"""

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms.fedlog import generators
from fedjax_syn.algorithms.fedlog import shared as S
from fedjax_syn.algorithms.fedlog.config import Spec
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData

_SOURCES = {"head": ("x_head",), "tail": ("x_tail",), "both": ("x_head", "x_tail")}


def init_server(spec: Spec, key: jax.Array, data: ClientData) -> dict:
    """The common model, empty global synthetic nodes, the key every client derives its shared
    draws from, and the generators."""
    config, num_classes = spec.config, spec.num_classes
    model_key, gen_key, shared_key = jax.random.split(key, 3)
    features = data.inputs.x.shape[-1]
    state = {
        "params": spec.net.init({"params": model_key}, data.inputs),
        "x_global": jnp.zeros((num_classes * config.global_slots, features), jnp.float32),
        "key": jax.random.key_data(shared_key),
    }
    if config.prompt != "none":
        # prompt="random": C random generators shared by all clients, kept all run (released);
        # prompt="trained": placeholders until the setup round's server update blends the uploads.
        keys = jax.random.split(gen_key, num_classes)
        state["gens"] = jax.vmap(lambda k: generators.init_generator(k, features, config))(keys)
    return state


def upload(spec: Spec, state: dict, data: ClientData) -> dict:
    """What a client sends: its model, both synthetic sets, class shares, size (and trained
    generator)."""
    shares = S.class_shares(data.labels, data.mask, spec.num_classes)
    sent = {**own_model(state), "shares": shares, "size": base.num_examples(data)}
    if spec.config.prompt == "trained":
        sent["gen"] = state["gen"]
    return sent


def own_model(state: dict) -> dict:
    """A client's own model: its just-trained parameters and synthetic nodes."""
    return {"params": state["params"], "x_head": state["x_head"], "x_tail": state["x_tail"]}


def global_model(server_state: dict) -> dict:
    """The server's model: the averaged parameters, with the global synthetic nodes as both
    branches' prototypes."""
    x = server_state["x_global"]
    return {"params": server_state["params"], "x_head": x, "x_tail": x}


def blend_generators(gens, weights: jax.Array):
    """Stacked client generators (leading K) -> per-class generators (leading C)."""
    return jax.tree.map(lambda leaf: jnp.tensordot(weights.T, leaf, axes=1), gens)


def server_update(spec: Spec, server_state: dict, uploads: dict, client_mask, key) -> dict:
    """Model average, global synthetic nodes (blend of the configured synthetic sets, one
    permutation key each) and, for trained prompts, the class-wise generators."""
    config, num_classes = spec.config, spec.num_classes
    weights = S.blend_weights(uploads["shares"], client_mask, config.weights)
    k, s = client_mask.shape[0], config.syn_per_class
    sources = _SOURCES[config.global_synthetic]
    keys = jax.random.split(key, len(sources))
    blended = [
        S.blend_synthetic(
            uploads[name].reshape(k, num_classes, s, -1),
            weights,
            S.slot_permutations(kk, k, s),
        )
        for name, kk in zip(sources, keys)
    ]
    x_global = jnp.concatenate(blended, axis=1).reshape(num_classes * config.global_slots, -1)
    params = S.average_params(uploads["params"], client_mask, uploads["size"], config.aggregate)
    new = {**server_state, "params": params, "x_global": x_global}
    if config.prompt == "trained":
        new["gens"] = blend_generators(uploads["gen"], weights)
    return new
