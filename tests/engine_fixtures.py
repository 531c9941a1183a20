"""Small synthetic federations for engine tests (no files, no downloads)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_syn.algorithms.registry import BUILDERS
from fedjax_syn.core.arrays import (
    ClientData,
    EvalGroup,
    Federation,
    pad_clients,
    stack_padded,
    to_device,
)
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.round import EngineConfig, init_step, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.vision import MLP

NUM_CLASSES = 3
FEATURES = 5


def client_examples(sizes, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(NUM_CLASSES, FEATURES)) * 2
    out = []
    for n in sizes:
        y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
        x = (centers[y] + rng.normal(size=(n, FEATURES))).astype(np.float32)
        out.append((x, y))
    return out


def make_federation(sizes=(7, 12, 3), pad_examples=0, pad_clients_to=None, seed=0) -> Federation:
    """Clients with the given numbers of examples; first half of each client trains, rest tests."""
    examples = client_examples(sizes, seed)
    length = max(sizes) + pad_examples
    x, real = stack_padded([e[0] for e in examples], length)
    y, _ = stack_padded([e[1] for e in examples], length)
    position = np.arange(length)[None, :]
    half = np.array([n // 2 + 1 for n in sizes])[:, None]
    train = real & (position < half)
    test = real & (position >= half)
    gx, gy = client_examples([11], seed + 1)[0]
    k = len(sizes)
    tree = {
        "train": ClientData(x, y, train, test),
        "local": {"val": test, "seen": test},
        "global": {"global": np.ones((k, len(gy)), bool)},
        "client_mask": np.ones(k, bool),
    }
    if pad_clients_to:
        tree = pad_clients(tree, pad_clients_to)
    tree = to_device(tree)
    groups = {
        "local": EvalGroup(tree["train"].inputs, tree["train"].labels, tree["local"]),
        "global": EvalGroup(*to_device((gx, gy)), tree["global"], shared=True),
    }
    return Federation(tree["train"], groups, tree["client_mask"], num_classes=NUM_CLASSES)


# What a builder may know of `make_federation()`'s data.
SPEC = DataSpec("vision", NUM_CLASSES, (FEATURES,), 3, 7, ("val", "seen", "global"))


class Cfg(dict):
    """Just enough of a ConfigDict for the registry's builders."""

    __getattr__ = dict.__getitem__


# The model every `algorithm()` trains: a one-hidden-layer MLP.
TASK = Task(MLP(NUM_CLASSES, (8,)), graph=False)


def config(name: str, steps: int | None = None, unroll: bool = False, **overrides) -> Cfg:
    """The registry config of `algorithm(name)`; `overrides` replace its fields."""
    cfg = Cfg(
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=4,
        local_epochs=2,
        local_steps=steps or 0,
        drop_last=False,
        weighted=True,
        finetune_epochs=2,
        prox_mu=0.1,
        algorithm=name,
        unroll=unroll,
    )
    unknown = set(overrides) - set(cfg)
    assert not unknown, f"unknown config fields {sorted(unknown)}"
    cfg.update(overrides)
    return cfg


def algorithm(name: str, steps: int | None = None, unroll: bool = False, **overrides):
    """The registry's `name` on TASK, for `make_federation()`'s data."""
    return BUILDERS[name](config(name, steps, unroll, **overrides), TASK, SPEC)


def sgd(lr=0.1):
    return optax.sgd(lr)


SCHEDULE = Schedule(batch_size=4, epochs=2)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


def trees_close(a, b, atol=1e-5) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.allclose(x, y, atol=atol, rtol=0) for x, y in pairs)


def loop_round(alg, server, clients, fed, round_key):
    """One round written as a Python loop over clients, one jitted client update at a time —
    the reference a vmapped round must equal. Returns (server, stacked client states)."""

    update_key, server_key, _ = jax.random.split(round_key, 3)
    keys = jax.random.split(update_key, fed.num_clients)
    update = jax.jit(alg.client_update)
    states, uploads = [], []
    for k in range(fed.num_clients):
        take = lambda tree, k=k: jax.tree.map(lambda leaf: leaf[k], tree)
        state, upload = update(server, take(clients), take(fed.train), keys[k])[:2]
        states.append(state)
        uploads.append(upload)
    stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    return alg.server_update(server, stack(uploads), fed.client_mask, server_key), stack(states)


@functools.cache
def programs(alg):
    """Jitted (init, round without evaluation): one compilation per algorithm."""
    engine = EngineConfig(donate=False)
    init = jax.jit(lambda fed, key: init_step(alg, fed, key, engine)[:2])
    round_fn = make_round(alg, engine)
    return init, lambda server, clients, fed, key: round_fn(
        server, clients, fed, key, evaluate=False
    )[:2]
