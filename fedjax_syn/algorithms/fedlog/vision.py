"""FedLoG's synthetic-data recipe carried to images, `fedlog_vision` (docs/fedlog.md, "Images").

Images have no degrees, so there is one branch and no gate: the model is the task's classifier,
trained every round on the client's data plus the server's global set of condensed images. It
shares with graph FedLoG only `shared.py`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedlog import shared as S
from fedjax_syn.condense import CondenseConfig, condense_client
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task

GLOBAL_SETS = ("blend", "concat")


@dataclasses.dataclass(frozen=True)
class FedLoGVisionConfig:
    syn_per_class: int = 10  # s: condensed images per class and client
    global_set: str = "blend"  # "blend" (class-share weighted) or "concat" (all clients' sets)
    weights: str = "class_share"  # blend weights, as on graphs
    aggregate: str = "uniform"  # model average: "uniform" or "weighted" by training examples
    cd_weight: float = 1.0  # weight of the loss on the global synthetic images
    feature_scaling: bool = True
    scale_step: float = 1e-3
    scale_threshold: float = 0.8
    upload_noise: float = 0.0  # std of Gaussian noise added to uploaded synthetic images
    # Condensation per round, from real images: a few gradient-matching steps against the
    # global model only, each on `condense_batch_real` real images per class -- about the cost of
    # one local epoch of a client with a few thousand images.
    condense_iterations: int = 5
    condense_nets: int = 0  # fresh networks next to the global model
    condense_outer_loop: int = 1
    condense_inner_loop: int = 0
    condense_lr: float = 0.1
    condense_batch_real: int = 64

    def __post_init__(self):
        check_choice("fedlog global_set", self.global_set, GLOBAL_SETS)
        check_choice("fedlog weights", self.weights, S.BLEND_WEIGHTS)
        check_choice("fedlog aggregate", self.aggregate, S.AGGREGATES)
        check(
            self.syn_per_class >= 1, f"fedlog syn_per_class must be >= 1, got {self.syn_per_class}"
        )
        for name in ("cd_weight", "scale_step", "upload_noise"):
            value = getattr(self, name)
            check(value >= 0, f"fedlog {name} must be >= 0, got {value}")

    def condense_config(self) -> CondenseConfig:
        return CondenseConfig(
            method="gm",
            ipc=self.syn_per_class,
            iterations=self.condense_iterations,
            num_nets=self.condense_nets,
            outer_loop=self.condense_outer_loop,
            inner_loop=self.condense_inner_loop,
            lr_img=self.condense_lr,
            batch_real=self.condense_batch_real,
        )


def vision_options(options: Mapping[str, Any] | None) -> FedLoGVisionConfig:
    return common.parse_options(FedLoGVisionConfig, "fedlog_vision", options)


def global_set(syn, class_mask, shares, client_mask, key, config: FedLoGVisionConfig):
    """The global synthetic set from stacked uploads syn [K, C, s, ...], class_mask [K, C],
    shares [K, C]: images [C * m, ...], labels [C * m] and validity [C * m] (m = s for the blend,
    K * s for the concatenation)."""
    k, num_classes, s = syn.shape[:3]
    held = class_mask & client_mask[:, None]  # [K, C]
    if config.global_set == "blend":
        weights = S.blend_weights(shares, client_mask, config.weights)
        flat = syn.reshape(k, num_classes, s, -1)
        perms = S.slot_permutations(key, k, s)
        x = S.blend_synthetic(flat, weights, perms).reshape(num_classes, s, *syn.shape[3:])
        valid = jnp.repeat(jnp.any(held, axis=0), s)
    else:
        x = jnp.swapaxes(syn, 0, 1).reshape(num_classes, k * s, *syn.shape[3:])
        valid = jnp.repeat(held.T, s, axis=1).reshape(-1)
    m = x.shape[1]
    labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), m)
    return x.reshape(num_classes * m, *syn.shape[3:]), labels, valid


def add_noise(syn: jax.Array, class_mask: jax.Array, key: jax.Array, std: float) -> jax.Array:
    """syn [C, s, ...] + N(0, std^2) on the classes the client holds (absent ones stay zero)."""
    keep = class_mask.reshape((-1,) + (1,) * (syn.ndim - 1))
    return syn + jnp.where(keep, std * jax.random.normal(key, syn.shape, syn.dtype), 0.0)


def fedlog_vision(
    task: Task,
    num_classes: int,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    num_clients: int,
    config: FedLoGVisionConfig | None = None,
) -> base.FederatedAlgorithm:
    """`num_clients`: the length of the clients axis (a concatenated global set is K * s per
    class, a static shape)."""
    config = FedLoGVisionConfig() if config is None else config
    check(not task.graph, "fedlog_vision needs the vision track; use fedlog for graphs")
    condense_config = config.condense_config()
    s = config.syn_per_class
    slots = s if config.global_set == "blend" else num_clients * s

    def init_server(key, data):
        shape = (num_classes * slots, *data.inputs.shape[1:])
        return {
            "params": task.init(key, data.inputs),
            "x_global": jnp.zeros(shape, data.inputs.dtype),
            "y_global": jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), slots),
            "valid": jnp.zeros((num_classes * slots,), bool),
        }

    def init_client(server_state, data, key):
        return {"params": server_state["params"], "scales": jnp.zeros((num_classes,))}

    def train(server_state, scales, data, key, with_global: bool):
        x_g, y_g, valid = server_state["x_global"], server_state["y_global"], server_state["valid"]

        def step(carry, batch):
            params, opt_state, scales, total = carry
            idx, weight, rng = batch
            local_rng, global_rng = jax.random.split(rng)
            x_cd = S.scale_features(x_g, y_g, scales, valid) if config.feature_scaling else x_g

            def loss_fn(params):
                loss = task.loss(params, data.inputs, data.labels, idx, weight, local_rng)
                if not with_global:
                    return loss, jnp.zeros((num_classes,))
                logits = task.logits(params, x_cd, train=True, rng=global_rng)
                log_probs = jax.nn.log_softmax(logits)
                loss = loss + config.cd_weight * S.nll(log_probs, y_g, valid)
                return loss, S.class_accuracy(log_probs, y_g, num_classes, valid)

            (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            if with_global and config.feature_scaling:
                scales = S.update_scales(
                    scales, accuracy, config.scale_threshold, config.scale_step
                )
            return optax.apply_updates(params, updates), opt_state, scales, total + loss

        params = server_state["params"]
        start = (params, optimizer.init(params), scales, jnp.float32(0.0))
        (params, _, scales, total), steps = S.run_steps(step, start, data.mask, key, schedule)
        return params, scales, local.step_stats(total, steps)

    def update(server_state, state, data, key, with_global: bool):
        cond_key, train_key, noise_key = jax.random.split(key, 3)
        syn, class_mask = condense_client(
            data.inputs,
            data.labels,
            data.mask,
            cond_key,
            config=condense_config,
            model=task.model,
            params=server_state["params"],
        )
        params, scales, metrics = train(server_state, state["scales"], data, train_key, with_global)
        if config.upload_noise > 0:
            syn = add_noise(syn, class_mask, noise_key, config.upload_noise)
        upload = {
            "params": params,
            "syn": syn,
            "class_mask": class_mask,
            "shares": S.class_shares(data.labels, data.mask, num_classes),
            "size": base.num_examples(data),
        }
        return ClientResult({"params": params, "scales": scales}, upload, metrics, model=params)

    def server_update(server_state, uploads, client_mask, key):
        x, y, valid = global_set(
            uploads["syn"], uploads["class_mask"], uploads["shares"], client_mask, key, config
        )
        params = S.average_params(uploads["params"], client_mask, uploads["size"], config.aggregate)
        return {"params": params, "x_global": x, "y_global": y, "valid": valid}

    return base.FederatedAlgorithm(
        name="fedlog_vision",
        init_server=init_server,
        init_client=init_client,
        client_update=lambda *args: update(*args, with_global=True),
        server_update=server_update,
        personalize=lambda server_state, state, data, key: state["params"],
        predict=lambda params, inputs: task.logits(params, inputs),
        setup_client=lambda *args: update(*args, with_global=False),
        global_model=lambda server_state: server_state["params"],
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: the optimiser and local schedule are the run's (as for the baselines),
    FedLoG's options come from `cfg.fedlog`; a concatenated global set is sized by the spec's
    clients axis."""
    return fedlog_vision(
        task,
        spec.num_classes,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        spec.num_clients,
        vision_options(common.options(cfg, "fedlog")),
    )
