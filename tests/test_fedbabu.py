"""FedBABU: the head keeps its shared initialisation through every round while the body trains;
only personalisation (fine-tuning the whole global model) moves it."""

import functools

import jax

from fedjax_syn.algorithms.parts import split
from fedjax_syn.engine.round import EngineConfig, init_step, round_step
from tests.engine_fixtures import algorithm, make_federation
from tests.personal_fixtures import (
    assert_round_equals_loop,
    assert_trees_close,
    client,
    trees_close,
)

FED = make_federation()
K = FED.num_clients
# Momentum and weight decay would move a head that is frozen only by zeroing its gradients.
OPTIMIZER = {"momentum": 0.9, "weight_decay": 0.01}


@functools.cache
def two_rounds():
    """(initial server, server after each of two rounds, round 2's local models, personalised
    models after round 2)."""
    alg = algorithm("fedbabu", **OPTIMIZER)
    engine = EngineConfig(donate=False)
    step = functools.partial(round_step, alg, evaluate=False, config=engine)
    vmapped = lambda fn: jax.vmap(fn, in_axes=(None, 0, 0, 0))

    @jax.jit
    def run(fed):
        server0, clients, _ = init_step(alg, fed, jax.random.key(0), engine)
        server1, clients, _ = step(server0, clients, fed, jax.random.key(1))
        keys = jax.random.split(jax.random.key(2), K)
        local = vmapped(alg.client_update)(server1, clients, fed.train, keys)
        server2, clients, _ = step(server1, clients, fed, jax.random.key(2))
        models = vmapped(alg.personalize)(server2, clients, fed.train, keys)
        return server0, server1, server2, local.model, models

    return run(FED)


def test_head_never_changes_during_rounds_while_the_body_trains():
    server0, server1, server2, local_models, _ = two_rounds()
    head0 = split(server0)[1]
    for server in (server1, server2):
        assert_trees_close(split(server)[1], head0, atol=0)  # bitwise
    assert not trees_close(split(server1)[0], split(server0)[0])
    assert not trees_close(split(server2)[0], split(server1)[0])
    for k in range(K):
        encoder, head = split(client(local_models, k))
        assert_trees_close(head, head0, atol=0)
        assert not trees_close(encoder, split(server1)[0])


def test_personalisation_fine_tunes_the_head_too():
    _, _, server2, _, models = two_rounds()
    for k in range(K):
        encoder, head = split(client(models, k))
        assert not trees_close(head, split(server2)[1])
        assert not trees_close(encoder, split(server2)[0])


def test_global_model_is_the_server():
    alg = algorithm("fedbabu")
    server = two_rounds()[2]
    assert alg.global_model(server) is server


def test_vmapped_round_equals_per_client_loop():
    assert_round_equals_loop(algorithm("fedbabu"))
