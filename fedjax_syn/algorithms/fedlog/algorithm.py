"""FedLoG (Kim et al., "Subgraph Federated Learning for Local Generalization", ICLR 2025) on the
engine's `FederatedAlgorithm` interface. See docs/FEDLOG.md for the method and docs/fedlog.md for
the design notes.

FedLoG's rounds are the engine's rounds:

- round 0, `setup_client` (the engine's one-time setup program): encoder pretraining with early
  stopping on validation, generator pretraining, one local epoch without L_cd; then
  `server_update` averages the models, blends the global synthetic nodes and the generators.
- round r >= 1, `client_update`: load the averaged parameters, customise the global data, train
  one local epoch with L_cd and upload; `server_update` aggregates for the next round.

After every round each client is evaluated with its own just-trained parameters. A run of
`rounds = R` runs FedLoG rounds 0 .. R - 1, as the released code's `--rounds R`.
"""

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms import common
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
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine.task import Task
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

    def upload(state, data):
        sent = {
            "params": state["params"],
            "x_head": state["x_head"],
            "x_tail": state["x_tail"],
            "shares": server.class_shares(data.labels, data.mask, num_classes),
            "size": base.num_examples(data),
        }
        if config.prompt == "trained":
            sent["gen"] = state["gen"]
        return sent

    def setup_client(server_state, state, data, key):
        del state  # nothing before round 0
        state, metrics = round_zero(
            spec, server_state["params"], data, key, shared_keys(server_state)
        )
        return ClientResult(state, upload(state, data), metrics)

    def client_update(server_state, state, data, key):
        glob = GlobalSet(server_state["x_global"], labels, server_state.get("gens"))
        start = Trainable(server_state["params"], state["x_head"], state["x_tail"])
        trainable, scales, metrics = local_epoch(spec, start, state["scales"], data, key, glob)
        state = {**state, **trainable._asdict(), "scales": scales}
        return ClientResult(state, upload(state, data), metrics)

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
        init_client=base.no_state,
        client_update=client_update,
        server_update=server_update,
        personalize=personalize,
        predict=predict,
        setup_client=setup_client,
    )


def options(cfg, spec: DataSpec | None = None) -> FedLoGConfig:
    """FedLoG's options from `cfg.fedlog` over the defaults. With a data spec, the generator's
    node cap `gen_nodes` = 0 becomes the largest client's training-node count, so generator
    pretraining reads exactly the training nodes instead of every padded node slot."""
    raw = common.options(cfg, "fedlog")
    if spec is not None and not raw.get("gen_nodes"):
        raw["gen_nodes"] = max(spec.max_train_examples, 1)
    return from_dict(raw)


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: FedLoG with `cfg.fedlog` options, for the classes of `spec`."""
    return fedlog(task, spec.num_classes, options(cfg, spec))
