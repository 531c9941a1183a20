"""Helpers shared by the tests of the personalisation baselines (FedRep, FedBABU, APFL)."""

import jax
import numpy as np

from fedjax_syn.engine.round import EngineConfig, make_init, make_round
from tests.engine_fixtures import loop_round, make_federation


def client(tree, k: int):
    """Client k's slice of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[k], tree)


def assert_trees_close(a, b, atol: float = 1e-6) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def trees_close(a, b, atol: float = 1e-6) -> bool:
    return all(
        np.allclose(x, y, atol=atol, rtol=0)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def assert_round_equals_loop(alg) -> None:
    """One evaluated engine round (vmapped, a padded client included) equals the per-client loop,
    and it trained: the server or the client states moved."""
    fed = make_federation(pad_clients_to=4)
    assert fed.num_clients == 4 and not bool(fed.client_mask[-1])
    config = EngineConfig(donate=False)
    server, clients, _ = make_init(alg, config)(fed, jax.random.key(3))
    round_key = jax.random.key(7)
    vmapped = make_round(alg, config)(server, clients, fed, round_key, evaluate=True)[:2]
    assert_trees_close(vmapped, loop_round(alg, server, clients, fed, round_key), atol=1e-5)
    assert not trees_close((server, clients), vmapped)
