"""FedRep: each round the head trains first with the encoder frozen, then the encoder with the new
head frozen; only the encoder is uploaded."""

import functools

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedrep import fedrep
from fedjax_syn.algorithms.parts import join, split, train_part
from fedjax_syn.engine.local import Schedule
from tests.engine_fixtures import TASK, algorithm, make_federation
from tests.personal_fixtures import (
    assert_round_equals_loop,
    assert_trees_close,
    client,
    trees_close,
)

FED = make_federation()
DATA = client(FED.train, 1)  # 7 training examples
LR = 0.1
FULL_BATCH = 12  # >= a client's padded length: every epoch is one step on all its examples
HEAD_EPOCHS, BODY_EPOCHS = 3, 2


def full_batch_loss(params):
    n = DATA.mask.shape[0]
    return TASK.loss(params, DATA.inputs, DATA.labels, jnp.arange(n), DATA.mask)


@functools.partial(jax.jit, static_argnums=(1, 2))
def descend(params, part: str, steps: int):
    """`steps` full-batch gradient-descent steps on `params`' `part` alone."""
    for _ in range(steps):
        grad = jax.grad(full_batch_loss)(params)["params"][part]
        moved = jax.tree.map(lambda p, g: p - LR * g, params["params"][part], grad)
        params = {"params": {**params["params"], part: moved}}
    return params


def test_head_phase_leaves_the_encoder_bitwise_unchanged_even_with_momentum_and_weight_decay():
    params = TASK.init(jax.random.key(0), DATA.inputs)
    optimizer = common.make_optimizer("sgd", LR, momentum=0.9, weight_decay=0.1)
    schedule = Schedule(4, epochs=2)
    trained, _ = jax.jit(
        lambda p: train_part(TASK, p, "head", DATA, jax.random.key(1), optimizer, schedule)
    )(params)
    assert_trees_close(split(trained)[0], split(params)[0], atol=0)
    assert not trees_close(split(trained)[1], split(params)[1])


def test_head_trains_first_then_the_encoder_with_the_new_head():
    server = TASK.init(jax.random.key(0), DATA.inputs)
    encoder0 = split(server)[0]
    head0 = jax.tree.map(lambda x: x + 0.3, split(server)[1])  # the client's own head
    alg = fedrep(
        TASK,
        common.make_optimizer("sgd", LR),
        Schedule(FULL_BATCH, epochs=BODY_EPOCHS),
        Schedule(FULL_BATCH, epochs=HEAD_EPOCHS),
    )
    head, upload, metrics, model = jax.jit(alg.client_update)(
        server, head0, DATA, jax.random.key(1)
    )

    # The same round sequenced by hand: gradient steps on the head, then on the encoder.
    start = join(encoder0, head0)
    hand_encoder, hand_head = split(
        descend(descend(start, "head", HEAD_EPOCHS), "encoder", BODY_EPOCHS)
    )
    assert_trees_close(head, hand_head, atol=1e-5)
    assert_trees_close(upload["encoder"], hand_encoder, atol=1e-5)
    old_head_encoder = split(descend(start, "encoder", BODY_EPOCHS))[0]
    assert not trees_close(hand_encoder, old_head_encoder, atol=1e-4)  # the order matters
    assert not trees_close(upload["encoder"], encoder0)  # the uploaded encoder moved
    assert set(upload) == {"encoder", "size"}  # the head stays on the client
    assert_trees_close(model, join(upload["encoder"], head), atol=0)
    assert float(metrics["steps"]) == BODY_EPOCHS


def test_fedrep_personalises_with_the_global_encoder_and_the_own_head():
    alg = algorithm("fedrep")
    server = TASK.init(jax.random.key(0), DATA.inputs)
    head = jax.tree.map(lambda x: x + 1.0, split(server)[1])
    assert_trees_close(
        alg.personalize(server, head, DATA, jax.random.key(2)), join(split(server)[0], head), atol=0
    )
    assert alg.global_model is None


def test_vmapped_round_equals_per_client_loop():
    assert_round_equals_loop(algorithm("fedrep"))
