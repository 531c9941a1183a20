"""Graph condensation by gradient matching, on one padded client subgraph.

Jin et al., "Graph Condensation for Graph Neural Networks" (GCond, ICLR 2022), feature-only form
(synthetic nodes are isolated, as FedLoG embeds them; no learned structure), and its one-step
variant (DosCond: Jin et al., KDD 2022), which matches only at initialisation and never trains the
network. Per class c, the GNN's gradient of the cross-entropy on the client's training nodes of
class c (one forward over the whole client subgraph, one backward per class via a vmapped VJP) is
matched by the gradient on class c's synthetic nodes embedded as isolated nodes. Features are
updated with Adam (lr 1e-4 in GCond), the networks with Adam (lr 0.01) between matching steps.
Classes absent from the client's training nodes get class_mask False and zero features.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.condense.core import (
    check_fields,
    class_counts,
    init_nets,
    init_synthetic,
    map_classes,
    run_iterations,
)
from fedjax_syn.condense.distance import gradient_distance
from fedjax_syn.core.errors import check
from fedjax_syn.core.graph import Graph, isolated_nodes


@dataclasses.dataclass(frozen=True)
class GraphCondenseConfig:
    """Graph condensation settings (frozen, hashable). Defaults follow GCond's small graphs:
    20 matching steps per network with 10 training steps in between; `one_step=True` is DosCond
    (one matching step per network, no training)."""

    ipc: int = 20  # synthetic nodes per class
    iterations: int = 100  # fresh networks
    outer_loop: int = 20
    inner_loop: int = 10
    one_step: bool = False
    lr_feat: float = 1e-4
    lr_net: float = 0.01
    num_nets: int = 1
    distance: str = "layerwise_cos"
    init: str = "real"  # "real": features of random training nodes of the class; "noise": N(0, 1)
    class_batching: str = "vmap"

    def __post_init__(self):
        check_fields(self)
        check(self.outer_loop >= 1, f"outer_loop must be >= 1, got {self.outer_loop}")
        check(self.inner_loop >= 0, f"inner_loop must be >= 0, got {self.inner_loop}")

    @property
    def loops(self) -> tuple[int, int]:
        return (1, 0) if self.one_step else (self.outer_loop, self.inner_loop)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def real_class_gradients(params, graph: Graph, y, mask, num_classes: int, model: nn.Module):
    """Per class c, the gradient of the mean cross-entropy over training nodes of class c, from one
    forward pass over the whole subgraph; a params pytree with a leading [C] axis."""
    labels = jnp.where(mask, y, 0)
    losses, vjp = jax.vjp(lambda p: _cross_entropy(model.apply(p, graph), labels), params)
    member = (labels[None, :] == jnp.arange(num_classes)[:, None]) & mask[None, :]
    weights = member / jnp.maximum(jnp.sum(member, axis=1, keepdims=True), 1)
    return jax.vmap(lambda w: vjp(w.astype(losses.dtype))[0])(weights)


def _syn_loss(params, syn_c, label, model: nn.Module) -> jax.Array:
    logits = model.apply(params, isolated_nodes(syn_c))
    return jnp.mean(_cross_entropy(logits, jnp.full(syn_c.shape[:1], label)))


def _match(syn, nets, graph, y, mask, class_mask, *, config, model) -> jax.Array:
    """Sum over present classes of the gradient distance, averaged over the stacked networks."""
    num_classes = syn.shape[0]

    def one_net(params):
        g_real = jax.lax.stop_gradient(
            real_class_gradients(params, graph, y, mask, num_classes, model)
        )

        def one_class(syn_c, g_real_c, label):
            g_syn = jax.grad(_syn_loss)(params, syn_c, label, model)
            return gradient_distance(g_real_c, g_syn, config.distance)

        d = map_classes(one_class, config, syn, g_real, jnp.arange(num_classes))
        return jnp.sum(jnp.where(class_mask, d, 0.0))

    return jnp.mean(jax.vmap(one_net)(nets))


def _train_on_synthetic(nets, syn, class_mask, *, config, model):
    """inner_loop full-batch Adam steps of every network on all synthetic nodes (isolated)."""
    num_classes, ipc = syn.shape[:2]
    x = syn.reshape(num_classes * ipc, -1)
    labels = jnp.repeat(jnp.arange(num_classes), ipc)
    weights = jnp.repeat(class_mask, ipc).astype(x.dtype)
    optimizer = optax.adam(config.lr_net)

    def loss(params):
        ce = _cross_entropy(model.apply(params, isolated_nodes(x)), labels)
        return jnp.sum(weights * ce) / jnp.maximum(jnp.sum(weights), 1.0)

    def one_net(params):
        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=config.loops[1]
        )
        return params

    return jax.vmap(one_net)(nets)


def _graph_iteration(syn, opt_state, graph, y, mask, class_mask, key, *, config, model, params):
    """One fresh set of networks: outer_loop matching steps (Adam on the features), with
    inner_loop training steps of the networks between them."""
    outer, _ = config.loops
    optimizer = optax.adam(config.lr_feat)
    nets = init_nets(key, model, isolated_nodes(graph.x[:1]), config.num_nets, params)

    def outer_step(carry, i):
        syn, opt_state, nets = carry
        nets = jax.lax.cond(
            i > 0,
            lambda n: _train_on_synthetic(n, syn, class_mask, config=config, model=model),
            lambda n: n,
            nets,
        )
        loss, grads = jax.value_and_grad(_match)(
            syn, nets, graph, y, mask, class_mask, config=config, model=model
        )
        updates, opt_state = optimizer.update(grads, opt_state, syn)
        return (optax.apply_updates(syn, updates), opt_state, nets), loss

    (syn, opt_state, _), losses = jax.lax.scan(
        outer_step, (syn, opt_state, nets), jnp.arange(outer)
    )
    return syn, opt_state, jnp.mean(losses)


def condense_graph(
    graph: Graph,
    y: jax.Array,
    train_mask: jax.Array,
    key: jax.Array,
    *,
    config: GraphCondenseConfig,
    model: nn.Module,
    params=None,
) -> tuple[jax.Array, jax.Array]:
    """Condenses a padded client subgraph (graph, labels y [N], train_mask [N]) into
    syn_x [C, ipc, F] (C = model.num_classes) and class_mask [C] bool (False for classes without
    a training node: zero features). Pure and jittable (config and model static); vmap it over a
    leading clients axis. With `params`, every iteration also matches that network.
    """
    num_classes = model.num_classes
    mask = train_mask & graph.node_mask
    k_init, k_iter = jax.random.split(key)
    syn, class_mask = init_synthetic(k_init, graph.x, y, mask, num_classes, config.ipc, config.init)
    opt_state = optax.adam(config.lr_feat).init(syn)
    step = lambda syn, opt_state, k: _graph_iteration(
        syn, opt_state, graph, y, mask, class_mask, k, config=config, model=model, params=params
    )
    return run_iterations(step, syn, opt_state, k_iter, config.iterations), class_mask


def graph_matching_loss(
    syn: jax.Array,
    graph: Graph,
    y: jax.Array,
    train_mask: jax.Array,
    key: jax.Array,
    *,
    config: GraphCondenseConfig,
    model: nn.Module,
    params=None,
) -> jax.Array:
    """The matching loss of syn [C, ipc, F] at networks initialised from `key` (no update)."""
    mask = train_mask & graph.node_mask
    class_mask = class_counts(y, mask, model.num_classes) > 0
    nets = init_nets(key, model, isolated_nodes(graph.x[:1]), config.num_nets, params)
    return _match(syn, nets, graph, y, mask, class_mask, config=config, model=model)
