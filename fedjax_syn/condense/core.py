"""Pieces shared by gradient and distribution matching: the configuration, per-class sampling of
real batches from a padded client, synthetic initialisation and the per-iteration networks.

Padded clients: a client's examples come as x [n, ...], y [n] and mask [n] (False on padding).
A padded example is never sampled; a class with no real example gets `class_mask` False, all-zero
synthetic images and no gradient.
"""

import dataclasses
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_syn.condense.augment import DSAConfig
from fedjax_syn.condense.distance import DISTANCES
from fedjax_syn.core.errors import check, check_choice

METHODS = ("gm", "dm")
INITS = ("real", "noise")
CLASS_BATCHING = ("vmap", "map", "loop")

# (outer_loop, inner_loop) per images-per-class, from the released code of Zhao et al. (ICLR 2021).
DEFAULT_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
DEFAULT_IMAGE_LR = {"gm": 0.1, "dm": 1.0}


@dataclasses.dataclass(frozen=True)
class CondenseConfig:
    """Everything that defines an image condensation run (frozen and hashable: a static jit arg).

    One iteration draws fresh networks. Gradient matching ("gm") then alternates, per network,
    `outer_loop` matching steps with `inner_loop` epochs of network training on the current
    synthetic set in between (none after the last match), exactly as the released code does.
    Distribution matching ("dm") makes one update per iteration and trains no network.
    """

    method: str = "gm"
    ipc: int = 10
    iterations: int = 1000
    outer_loop: int | None = None  # None: DEFAULT_LOOPS[ipc]
    inner_loop: int | None = None  # None: DEFAULT_LOOPS[ipc]
    lr_img: float | None = None  # None: 0.1 for gm, 1.0 for dm (the papers' values)
    momentum_img: float = 0.5
    lr_net: float = 0.01  # plain SGD for the inner network training
    batch_real: int = 256  # real images per class per matching step (capped at n)
    batch_train: int = 256  # synthetic images per inner training step
    num_nets: int = 1  # freshly initialised networks per iteration, vmapped; loss averaged
    dsa: bool = False
    dsa_config: DSAConfig = dataclasses.field(default_factory=DSAConfig)
    distance: str = "layerwise_cos"
    init: str = "real"  # "real": real images of the class; "noise": standard normal
    class_batching: str = "vmap"  # see map_classes

    def __post_init__(self):
        check_choice("condensation method", self.method, METHODS)
        check_fields(self)
        check(self.batch_real >= 1, f"batch_real must be >= 1, got {self.batch_real}")
        check(self.batch_train >= 1, f"batch_train must be >= 1, got {self.batch_train}")
        if self.method == "gm":
            _ = self.loops  # validates the loop counts at construction

    @property
    def loops(self) -> tuple[int, int]:
        """(outer_loop, inner_loop) of gradient matching."""
        outer, inner = DEFAULT_LOOPS.get(self.ipc, (None, None))
        outer = self.outer_loop if self.outer_loop is not None else outer
        inner = self.inner_loop if self.inner_loop is not None else inner
        check(
            outer is not None and inner is not None,
            f"no default outer/inner loop for ipc={self.ipc} (defaults exist for "
            f"{sorted(DEFAULT_LOOPS)}); set outer_loop and inner_loop",
        )
        check(outer >= 1 and inner >= 0, f"need outer_loop >= 1, inner_loop >= 0: {outer}, {inner}")
        return outer, inner

    @property
    def image_lr(self) -> float:
        return self.lr_img if self.lr_img is not None else DEFAULT_IMAGE_LR[self.method]


def check_fields(config) -> None:
    """The checks the image and the graph condensation configs share."""
    check_choice("synthetic init", config.init, INITS)
    check_choice("gradient distance", config.distance, DISTANCES)
    check_choice("class batching", config.class_batching, CLASS_BATCHING)
    check(config.ipc >= 1, f"ipc must be >= 1, got {config.ipc}")
    check(config.iterations >= 0, f"iterations must be >= 0, got {config.iterations}")
    check(config.num_nets >= 0, f"num_nets must be >= 0, got {config.num_nets}")


def run_iterations(step: Callable, syn: jax.Array, opt_state, key: jax.Array, iterations: int):
    """syn after `iterations` calls of step(syn, opt_state, fold_in(key, i)) -> (syn, opt_state,
    loss) in one compiled loop: pure and jittable, for vmapping over clients."""

    def body(i, carry):
        syn, opt_state, _ = step(*carry, jax.random.fold_in(key, i))
        return syn, opt_state

    return jax.lax.fori_loop(0, iterations, body, (syn, opt_state))[0]


def image_optimizer(config: CondenseConfig) -> optax.GradientTransformation:
    """SGD with momentum on the synthetic images; its state persists across iterations."""
    return optax.sgd(config.image_lr, momentum=config.momentum_img)


def class_counts(y: jax.Array, mask: jax.Array, num_classes: int) -> jax.Array:
    """Real (unpadded) examples per class, [C] int32."""
    member = (y[None, :] == jnp.arange(num_classes)[:, None]) & mask[None, :]
    return jnp.sum(member, axis=1, dtype=jnp.int32)


def sample_class_indices(
    key: jax.Array, y: jax.Array, mask: jax.Array, num_classes: int, size: int
) -> tuple[jax.Array, jax.Array]:
    """Per class, `size` example indices drawn WITHOUT replacement among unpadded examples of the
    class (uniform keys + top-k). A class with fewer than `size` examples gets all of them, then
    repeats them in the same order to fill the slots; `first` marks each example's first slot.

    Returns idx [C, size] int32 and first [C, size] bool (all False for an absent class).
    """
    n = y.shape[0]
    member = (y[None, :] == jnp.arange(num_classes)[:, None]) & mask[None, :]
    # One key per example (each belongs to one class): a draw over [n] is a prefix of the draw
    # at a larger padded n, so padding a client does not change which examples it samples.
    scores = jnp.where(member, jax.random.uniform(key, (n,))[None, :], -1.0)
    _, order = jax.lax.top_k(scores, min(size, n))  # members first, in random order
    counts = jnp.sum(member, axis=1)
    slots = jnp.arange(size)[None, :] % jnp.maximum(counts, 1)[:, None]
    idx = jnp.take_along_axis(order, slots, axis=1)
    return idx.astype(jnp.int32), jnp.arange(size)[None, :] < counts[:, None]


def real_batch(
    key: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array, num_classes: int, size: int
) -> tuple[jax.Array, jax.Array]:
    """A real batch per class: images [C, b, ...] and weights [C, b] (1 on each distinct example,
    0 on repeats), b = min(size, n). Weighting by first occurrence means a class with fewer than b
    examples contributes each of them exactly once."""
    idx, first = sample_class_indices(key, y, mask, num_classes, min(size, y.shape[0]))
    return x[idx], first.astype(x.dtype)


def init_synthetic(
    key: jax.Array,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    num_classes: int,
    ipc: int,
    init: str,
) -> tuple[jax.Array, jax.Array]:
    """Initial synthetic images [C, ipc, ...] and class_mask [C] bool.

    init "real": ipc distinct real images of the class (a class with fewer real images repeats
    them; repeated synthetic images stay identical under matching). init "noise": N(0, 1) pixels.
    Absent classes are all zeros either way.
    """
    class_mask = class_counts(y, mask, num_classes) > 0
    check_choice("synthetic init", init, INITS)
    if init == "real":
        idx, _ = sample_class_indices(key, y, mask, num_classes, ipc)
        syn = x[idx]
    else:
        syn = jax.random.normal(key, (num_classes, ipc, *x.shape[1:]), x.dtype)
    keep = class_mask.reshape((num_classes,) + (1,) * (syn.ndim - 1))
    return jnp.where(keep, syn, 0.0), class_mask


def init_nets(key: jax.Array, model: nn.Module, example: jax.Array, num_nets: int, params=None):
    """Stacked parameters [k, ...] of the networks of one iteration: `params` (when given, first)
    followed by `num_nets` freshly initialised ones."""
    stacks = []
    if params is not None:
        stacks.append(jax.tree.map(lambda p: p[None], params))
    if num_nets > 0:
        keys = jax.random.split(key, num_nets)
        stacks.append(jax.vmap(lambda k: model.init(k, example))(keys))
    check(bool(stacks), "need num_nets >= 1 when no network params are given")
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *stacks)


def weighted_cross_entropy(params, model: nn.Module, x, labels, weights) -> jax.Array:
    """Weighted mean cross-entropy of `model` on x; 0 when all weights are 0."""
    logits = model.apply(params, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1e-12)


def map_classes(fn: Callable, config: CondenseConfig, *args) -> jax.Array:
    """fn applied per class to args sliced along their leading class axis, stacked.

    "vmap": all classes at once (`jax.vmap`); "map": one class after the other in a compiled loop
    (`jax.lax.map`: the per-class program compiled once, a class's activations freed before the
    next); "loop": an unrolled Python loop (compiled once per class; for comparison).
    """
    if config.class_batching == "vmap":
        return jax.vmap(fn)(*args)
    if config.class_batching == "map":
        return jax.lax.map(lambda a: fn(*a), args)
    num_classes = jax.tree.leaves(args)[0].shape[0]
    return jnp.stack([fn(*jax.tree.map(lambda a, c=c: a[c], args)) for c in range(num_classes)])


def num_batches(n: int, batch: int) -> tuple[int, int]:
    """(batches per epoch, batch size) for n items in batches of at most `batch`."""
    size = min(batch, n)
    return math.ceil(n / size), size
