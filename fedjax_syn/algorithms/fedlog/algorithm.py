"""FedLoG (Kim et al., "Subgraph Federated Learning for Local Generalization", ICLR 2025) on the
engine's `FederatedAlgorithm` interface. See docs/FEDLOG.md for the method and docs/fedlog.md for
the design notes.

How FedLoG's rounds map onto the engine (which runs client_update -> server_update ->
personalize/evaluate every round, after init_server/init_client once):

- `init_server`: the common initialisation (model, random generators) and the key every client
  derives its shared draws from (X init, networks). `ready` is False: nothing uploaded yet.
- `init_client`: ALL of FedLoG's round 0 for the client (encoder pretraining with early stopping
  on validation, generator pretraining, one local epoch without L_cd). Its would-be upload stays
  in the client state.
- engine round 1: `client_update` sees `ready == False` and re-uploads the round-0 state
  unchanged (a `lax.cond`, so no work); `server_update` builds the server state from those
  round-0 uploads (average, global synthetic nodes, class-wise generators) and sets `ready`;
  `personalize` evaluates the round-0 models.
- engine round r >= 2 = FedLoG round r - 1: `client_update` loads the averaged parameters,
  customises the global data, trains one local epoch with L_cd and uploads; `server_update`
  aggregates for the next round; the client is evaluated with its own just-trained parameters.

So `rounds = R` runs FedLoG rounds 0 .. R - 1, each followed by an evaluation, exactly as the
released code's `--rounds R`.
"""

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms import base, registry
from fedjax_syn.algorithms.fedlog import model as M
from fedjax_syn.algorithms.fedlog import prompts, server
from fedjax_syn.algorithms.fedlog.client import (
    GlobalSet,
    SharedKeys,
    Spec,
    Trainable,
    local_epoch,
    round_zero,
)
from fedjax_syn.algorithms.fedlog.config import FedLoGConfig, from_dict
from fedjax_syn.engine.task import Task
from fedjax_syn.errors import check
from fedjax_syn.models.gnn import GNN


def global_labels(num_classes: int, slots: int) -> jax.Array:
    """Class-major labels of the global synthetic nodes: c repeated `slots` times."""
    return jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), slots)


def make_spec(task: Task, num_classes: int, config: FedLoGConfig | None = None) -> Spec:
    """FedLoG's static description; `task` is the track's GNN (its encoder shape is phi).
    `config` None: the defaults of docs/FEDLOG.md."""
    config = FedLoGConfig() if config is None else config
    check(task.graph, "fedlog needs the graph track (track='graph'); use fedlog_vision for images")
    gnn = task.model
    check(isinstance(gnn, GNN), f"fedlog needs a GNN model, got {type(gnn).__name__}")
    return Spec(task, M.FedLoGNet(gnn.kind, tuple(gnn.hidden), gnn.dropout), num_classes, config)


def fedlog(task: Task, num_classes: int, config: FedLoGConfig | None = None):
    """FedLoG on graph clients (see `make_spec`)."""
    spec = make_spec(task, num_classes, config)
    net, config = spec.net, spec.config
    s, slots = config.syn_per_class, config.global_slots
    labels = global_labels(num_classes, slots)

    def init_server(key, data):
        model_key, gen_key, shared_key = jax.random.split(key, 3)
        features = data.inputs.x.shape[-1]
        state = {
            "ready": jnp.array(False),
            "params": net.init({"params": model_key}, data.inputs),
            "x_global": jnp.zeros((num_classes * slots, features), jnp.float32),
            "key": jax.random.key_data(shared_key),
        }
        if config.prompt != "none":
            # prompt="random": C random generators shared by all clients, kept all run (released);
            # prompt="trained": placeholders until the first server_update blends the uploads.
            keys = jax.random.split(gen_key, num_classes)
            state["gens"] = jax.vmap(lambda k: prompts.init_generator(k, features, config))(keys)
        return state

    def shared_keys(server_state) -> SharedKeys:
        return SharedKeys.from_key(jax.random.wrap_key_data(server_state["key"]))

    def init_client(server_state, data, key):
        return round_zero(spec, server_state["params"], data, key, shared_keys(server_state))

    def client_update(server_state, state, data, key):
        def train(state):
            glob = GlobalSet(server_state["x_global"], labels, server_state.get("gens"))
            start = Trainable(server_state["params"], state["x_head"], state["x_tail"])
            trainable, scales, loss = local_epoch(spec, start, state["scales"], data, key, glob)
            return {**state, **trainable._asdict(), "scales": scales, "loss": loss}

        state = jax.lax.cond(server_state["ready"], train, lambda state: state, state)
        upload = {
            "params": state["params"],
            "x_head": state["x_head"],
            "x_tail": state["x_tail"],
            "shares": server.class_shares(data.labels, data.mask, num_classes),
            "size": base.num_examples(data),
            "loss": state["loss"],
        }
        if config.prompt == "trained":
            upload["gen"] = state["gen"]
        return state, upload

    def server_update(server_state, uploads, client_mask, key):
        weights = server.blend_weights(uploads["shares"], client_mask, config.weights)
        k = client_mask.shape[0]
        sources = {
            "head": ("x_head",),
            "tail": ("x_tail",),
            "both": ("x_head", "x_tail"),
        }[config.global_synthetic]
        keys = jax.random.split(key, len(sources))
        blended = [
            server.blend_synthetic(
                uploads[name].reshape(k, num_classes, s, -1),
                weights,
                server.slot_permutations(kk, k, s),
            )
            for name, kk in zip(sources, keys)
        ]
        x_global = jnp.concatenate(blended, axis=1).reshape(num_classes * slots, -1)
        new = {
            **server_state,
            "ready": jnp.array(True),
            "params": server.average_params(
                uploads["params"], client_mask, uploads["size"], config.aggregate
            ),
            "x_global": x_global,
        }
        if config.prompt == "trained":
            new["gens"] = server.blend_generators(uploads["gen"], weights)
        return new

    def personalize(server_state, state, data, key):
        return {"params": state["params"], "x_head": state["x_head"], "x_tail": state["x_tail"]}

    def predict(model, graph):
        return M.gated_predict(
            net,
            model["params"],
            model["x_head"],
            model["x_tail"],
            graph,
            num_classes=num_classes,
            gamma=config.gamma,
            synthetic_mode=config.synthetic_graph,
        )

    return base.FederatedAlgorithm(
        name="fedlog",
        init_server=init_server,
        init_client=init_client,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=predict,
    )


def options(cfg) -> FedLoGConfig:
    """FedLoG's options from `cfg.fedlog` (a dict or ConfigDict) over the defaults."""
    raw = cfg.get("fedlog") or {}
    return from_dict(raw.to_dict() if hasattr(raw, "to_dict") else raw)


def build(cfg, task: Task) -> base.FederatedAlgorithm:
    """Registry builder: FedLoG with `cfg.fedlog` options; the class count is the GNN's."""
    return fedlog(task, task.model.num_classes, options(cfg))


registry.register("fedlog", build)
