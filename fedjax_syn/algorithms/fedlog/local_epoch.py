"""A client's personal epoch (docs/fedlog.md, "The method"), and round r >= 1 of one client
(`client_update`). Pure functions of one client; the engine vmaps them over clients.

Every minibatch step runs a full-subgraph forward (dropout on) and updates the model and
X_head / X_tail with fresh optimiser states each epoch. From round 1 on, each step first
customises the global synthetic nodes, x~ = x_g + lambda_c (mean(x_g) - x_g) joined to its
prompt g_c(x~), and after it moves lambda_c with the client's accuracy (before the step) on
class c's global nodes.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedlog import generators
from fedjax_syn.algorithms.fedlog import model as M
from fedjax_syn.algorithms.fedlog.config import Spec, epoch_schedule, model_optimizer
from fedjax_syn.algorithms.fedlog.server import own_model, upload
from fedjax_syn.algorithms.fedlog.shared import (
    class_accuracy,
    nll,
    run_steps,
    scale_features,
    update_scales,
)
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.core.graph import Graph, in_degree
from fedjax_syn.core.interface import ClientResult
from fedjax_syn.engine import local


class GlobalSet(NamedTuple):
    """The server's global synthetic nodes x [C * m, F] with class-major labels y [C * m], and
    the per-class generators (leading axis C), None for prompt="none"."""

    x: jax.Array
    y: jax.Array
    gens: Any


class Trainable(NamedTuple):
    params: Any  # FedLoGNet parameters
    x_head: jax.Array  # [C * s, F]
    x_tail: jax.Array  # [C * s, F]


def customised_graph(spec: Spec, glob: GlobalSet, scales: jax.Array, key: jax.Array) -> Graph:
    """The global synthetic nodes scaled per class, each joined to its prompt (or alone); `key`
    draws the generators' dropout where `prompt_dropout` asks for it."""
    c = spec.config
    x = scale_features(glob.x, glob.y, scales) if c.feature_scaling else glob.x
    if glob.gens is None:
        return M.synthetic_graph(x, "isolated")
    per_class = x.reshape(spec.num_classes, -1, x.shape[-1])
    dropout_key = key if c.prompt_dropout else None
    gen = generators.generator(c)
    generated = generators.apply_generators(gen, glob.gens, per_class, dropout_key)
    return M.prompt_pairs(x, generated.reshape(x.shape))


def step_loss(
    spec: Spec,
    trainable: Trainable,
    data: ClientData,
    gate: jax.Array,
    batch: tuple,
    glob: GlobalSet | None = None,
    cd_graph: Graph | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The minibatch loss and, with global data, the per-class accuracy on it [C]."""
    c, net, num_classes = spec.config, spec.net, spec.num_classes
    idx, weight, rng = batch
    r_graph, r_head, r_tail, r_cd = jax.random.split(rng, 4)
    params = trainable.params
    h = M.embed(net, params, data.inputs, r_graph)[idx]
    mu_head = M.prototypes(net, params, trainable.x_head, num_classes, c.synthetic_graph, r_head)
    mu_tail = M.prototypes(net, params, trainable.x_tail, num_classes, c.synthetic_graph, r_tail)
    lp_head, lp_tail = M.branch_log_probs(net, params, h, mu_head, mu_tail)
    log_probs = M.train_log_probs(lp_head, lp_tail, gate[idx])
    loss = c.metric_weight * nll(log_probs, data.labels[idx], weight)
    loss = loss + c.beta * M.norm_loss(trainable.x_head, trainable.x_tail)
    if glob is None:
        return loss, jnp.zeros((num_classes,))
    centres = M.embed(net, params, cd_graph, r_cd)[: glob.y.shape[0]]
    cd_head, cd_tail = M.branch_log_probs(net, params, centres, mu_head, mu_tail)
    cd_log_probs = 0.5 * cd_head + 0.5 * cd_tail  # fixed gate: synthetic nodes have no degree
    loss = loss + c.cd_weight * nll(cd_log_probs, glob.y)
    return loss, class_accuracy(cd_log_probs, glob.y, num_classes)


def local_epoch(
    spec: Spec,
    trainable: Trainable,
    scales: jax.Array,
    data: ClientData,
    key: jax.Array,
    glob: GlobalSet | None = None,
) -> tuple[Trainable, jax.Array, dict[str, jax.Array]]:
    """One local epoch (L_cd only with `glob`). Returns the trained (params, X_head, X_tail), the
    scales lambda [C] and the client's metrics (mean loss over the steps taken, and their
    number)."""
    c = spec.config
    model_opt = model_optimizer(c)
    syn_opt = optax.adam(c.syn_lr)
    gate = M.gate_logit(in_degree(data.inputs), c.gamma)
    synthetic = lambda t: (t.x_head, t.x_tail)

    def step(carry, batch):
        trainable, model_state, syn_state, scales, total = carry
        # The prompts' own key, beside the four the loss splits from the step's.
        prompt_key = jax.random.fold_in(batch[2], 1)
        cd_graph = None if glob is None else customised_graph(spec, glob, scales, prompt_key)
        (loss, accuracy), grads = jax.value_and_grad(
            lambda t: step_loss(spec, t, data, gate, batch, glob, cd_graph), has_aux=True
        )(trainable)
        updates, model_state = model_opt.update(grads.params, model_state, trainable.params)
        params = optax.apply_updates(trainable.params, updates)
        syn_updates, syn_state = syn_opt.update(synthetic(grads), syn_state, synthetic(trainable))
        x_head, x_tail = optax.apply_updates(synthetic(trainable), syn_updates)
        if glob is not None and c.feature_scaling:
            scales = update_scales(scales, accuracy, c.scale_threshold, c.scale_step)
        return Trainable(params, x_head, x_tail), model_state, syn_state, scales, total + loss

    states = model_opt.init(trainable.params), syn_opt.init(synthetic(trainable))
    start = (trainable, *states, scales, jnp.float32(0.0))
    (trainable, _, _, scales, total), steps = run_steps(
        step, start, data.mask, key, epoch_schedule(c)
    )
    return trainable, scales, local.step_stats(total, steps)


def client_update(spec: Spec, server_state, state, data: ClientData, key: jax.Array):
    """Round r >= 1 of one client: load the averaged model, train one local epoch with L_cd on
    the customised global synthetic nodes, upload."""
    # The global synthetic nodes are class-major: class c fills `global_slots` rows.
    labels = jnp.repeat(jnp.arange(spec.num_classes, dtype=jnp.int32), spec.config.global_slots)
    glob = GlobalSet(server_state["x_global"], labels, server_state.get("gens"))
    start = Trainable(server_state["params"], state["x_head"], state["x_tail"])
    trainable, scales, metrics = local_epoch(spec, start, state["scales"], data, key, glob)
    state = {**state, **trainable._asdict(), "scales": scales}
    return ClientResult(state, upload(spec, state, data), metrics, model=own_model(state))
