"""The two entry points of image condensation: `condense_client` (pure, jittable, vmappable over
clients, for federated rounds) and `condense` (standalone, on numpy arrays, with per-iteration
progress). Both run the same iteration function with the same keys, so they give the same
synthetic set for the same inputs.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.condense.core import CondenseConfig, image_optimizer, init_synthetic, run_iterations
from fedjax_syn.condense.distribution_matching import dm_iteration
from fedjax_syn.condense.gradient_matching import gm_iteration
from fedjax_syn.core.errors import check

_ITERATION = {"gm": gm_iteration, "dm": dm_iteration}


def _num_classes(model: nn.Module) -> int:
    check(hasattr(model, "num_classes"), f"model {type(model).__name__} has no num_classes field")
    return model.num_classes


def _check_networks(num_nets: int, params) -> None:
    check(
        num_nets >= 1 or params is not None, "need num_nets >= 1 when no network params are given"
    )


def _start(x, y, mask, key, config: CondenseConfig, model: nn.Module):
    k_init, k_iter = jax.random.split(key)
    syn, class_mask = init_synthetic(
        k_init, x, y, mask, _num_classes(model), config.ipc, config.init
    )
    return syn, image_optimizer(config).init(syn), class_mask, k_iter


def condense_client(
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    *,
    config: CondenseConfig,
    model: nn.Module,
    params=None,
) -> tuple[jax.Array, jax.Array]:
    """Condenses one padded client: x [n, ...], y [n] int, mask [n] bool (False = padding).

    Returns syn_x [C, ipc, ...] (C = model.num_classes) and class_mask [C] bool (False for classes
    without a real example; their images are zeros). Pure and jittable (config and model static);
    vmap it over a leading clients axis of x, y, mask, key. With `params` (e.g. the current global
    model), every iteration also matches against that network, next to `config.num_nets` fresh
    ones (num_nets=0: only against `params`).
    """
    _check_networks(config.num_nets, params)
    syn, opt_state, class_mask, k_iter = _start(x, y, mask, key, config, model)
    step = lambda syn, opt_state, k: _ITERATION[config.method](
        syn, opt_state, x, y, mask, class_mask, k, config=config, model=model, params=params
    )
    return run_iterations(step, syn, opt_state, k_iter, config.iterations), class_mask


def condense(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    method: str = "gm",
    ipc: int,
    key: jax.Array,
    model: nn.Module,
    iterations: int,
    dsa: bool = False,
    params=None,
    on_iteration: Callable[[int, float], None] | None = None,
    resume: Callable[[Any], tuple[int, Any] | None] | None = None,
    save: Callable[[int, Any], None] | None = None,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Condenses a whole dataset x [n, ...], y [n] into ipc images per class.

    `options` are further `CondenseConfig` fields (outer_loop, lr_img, num_nets, dsa_config, ...).
    `on_iteration(i, loss)` is called after every iteration (it waits for the result, so it also
    serves for timing). Returns syn_x [C' * ipc, ...] float32 and syn_y [C' * ipc] int32 for the
    C' classes present in y, class-major; equal to `condense_client` on the same arrays.

    Checkpointing, for runs of hours: `save(done, state)` gets the state (synthetic images and
    their optimiser state) after every iteration, `done` of them finished; `resume(template)`,
    given the starting state as a template, returns a saved (done, state) to continue from, or
    None. Iteration i draws its key from i alone, so a resumed run ends where an uninterrupted
    one does.
    """
    config = CondenseConfig(method=method, ipc=ipc, iterations=iterations, dsa=dsa, **options)
    check(
        _num_classes(model) == num_classes,
        f"model has {_num_classes(model)} classes but num_classes={num_classes}",
    )
    _check_networks(config.num_nets, params)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    mask = jnp.ones(y.shape, bool)
    start = jax.jit(functools.partial(_start, config=config, model=model))
    syn, opt_state, class_mask, k_iter = start(x, y, mask, key)
    done, (syn, opt_state) = (resume and resume((syn, opt_state))) or (0, (syn, opt_state))
    check(
        0 <= done <= config.iterations,
        f"resumed after {done} iterations, outside 0..{config.iterations}",
    )
    step = jax.jit(functools.partial(_ITERATION[config.method], config=config, model=model))
    for i in range(done, config.iterations):
        k = jax.random.fold_in(k_iter, i)
        syn, opt_state, loss = step(syn, opt_state, x, y, mask, class_mask, k, params=params)
        if on_iteration is not None:
            on_iteration(i, float(loss))
        if save is not None:
            save(i + 1, (syn, opt_state))
    present = np.asarray(class_mask)
    syn_x = np.asarray(syn)[present].reshape((-1, *syn.shape[2:]))
    syn_y = np.repeat(np.arange(num_classes, dtype=np.int32)[present], ipc)
    return syn_x, syn_y
