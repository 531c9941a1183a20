"""FedTAD: class-wise knowledge reliability against a hand computation, FedAvg when nothing is
distilled, a KD loss that distillation lowers, and one engine round vmapped == per-client loop
with a padded client."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_syn.algorithms import registry
from fedjax_syn.algorithms.fedtad import (
    FedTADOptions,
    Generator,
    class_reliability,
    distill,
    generator_objective,
    kd_loss,
    knn_graph,
    options,
    pseudo_classes,
    reliability_weights,
)
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN
from tests.engine_fixtures import loop_round
from tests.test_fedgta import path_graph
from tests.test_graph_engine import (
    CLASSES,
    assert_trees_close,
    graph_algorithm,
    synthetic_federation,
)

# A tiny server: 8 pseudo nodes, a one-layer generator, one epoch of 1 generator + 2 student steps.
TINY = {
    "num_gen": 8,
    "noise_dim": 4,
    "generator_hidden": (8,),
    "topk": 2,
    "server_epochs": 1,
    "gen_steps": 1,
    "distill_steps": 2,
}


def test_class_reliability_and_its_weights_follow_the_formula():
    graph, adj = path_graph()
    x = np.array([[1, 0], [1, 1], [0, 1], [-1, 0.5], [2, 2], [7, 7]], np.float32)
    graph = graph._replace(x=jnp.asarray(x))
    labels = np.array([0, 1, 1, 2, 2, 0])
    train = np.array([True, True, True, False, True, True])  # node 5 is padding
    ckr = class_reliability(graph, jnp.asarray(labels), jnp.asarray(train), 3, walk_length=1)

    # By hand: embedding [X, (X + A X) / (deg + 1)]; reliability (1 + sum cos) / (deg + 1).
    deg = adj.sum(1)
    emb = np.concatenate([x[:5], (x[:5] + adj @ x[:5]) / (deg + 1)[:, None]], axis=1)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    node = np.maximum((1 + (adj * (unit @ unit.T)).sum(1)) / (deg + 1), 0)
    # Node 3 (class 2) does not train; the isolated node 4 (class 2) counts 1.
    assert node[4] == 1.0
    np.testing.assert_allclose(ckr, [node[0], node[1] + node[2], node[4]], rtol=1e-5)

    # Normalised over the real clients per class: client 0 lacks class 1, only client 0 holds
    # class 2, client 2 holds nothing, and the padded client 3 has weight 0 everywhere.
    table = jnp.array([[2.0, 0.0, 1.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    weights = reliability_weights(table, jnp.array([True, True, True, False]))
    expected = [[2 / 3, 0.0, 1.0], [1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_without_distillation_the_server_model_is_fedavg():
    fed = synthetic_federation(num_clients=3, slots=4)[1]
    tad = graph_algorithm("fedtad", num_clients=4, fedtad={**TINY, "distill_steps": 0})
    avg = graph_algorithm("fedavg", num_clients=4)
    key, round_key = jax.random.key(5), jax.random.key(6)
    servers = {}
    for alg in (tad, avg):
        server, clients = init_states(alg, fed, key)
        round_fn = make_round(alg, EngineConfig(donate=False))
        servers[alg.name] = (server, round_fn(server, clients, fed, round_key, evaluate=False)[0])
    (tad0, tad1), (avg0, avg1) = servers["fedtad"], servers["fedavg"]
    for tad_model, avg_model in ((tad0["model"], avg0), (tad1["model"], avg1)):
        jax.tree.map(np.testing.assert_array_equal, tad_model, avg_model)
    # The generator still trained against the (undistilled) student.
    assert not np.allclose(
        jax.tree.leaves(tad1["generator"])[-1], jax.tree.leaves(tad0["generator"])[-1]
    )


def test_distillation_lowers_the_kd_loss_on_generated_data():
    task = Task(GNN(CLASSES, kind="sage", hidden=(16, 8), dropout=0.0), graph=True)
    classes = pseudo_classes(8, CLASSES)
    np.testing.assert_array_equal(classes, [0, 0, 1, 1, 2, 2, 3, 3])
    gen = Generator(CLASSES, 12, (8,))
    z = jax.random.normal(jax.random.key(0), (8, 4))
    gen_params = gen.init(jax.random.key(1), z, classes)
    graph = knn_graph(gen.apply(gen_params, z, classes), 2)
    adj = np.asarray(graph.edge_mask).reshape(8, 8)
    assert (adj == adj.T).all() and not adj.diagonal().any() and (adj.sum(1) >= 2).all()

    init = lambda seed: task.init(jax.random.key(seed), graph)
    teachers = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(s) for s in (2, 3, 4)])
    teacher_logits = jax.vmap(lambda p: task.logits(p, graph))(teachers)
    weights = reliability_weights(jnp.ones((3, CLASSES)), jnp.array([True, True, False]))
    student = init(5)
    student_logits = task.logits(student, graph)

    # The loss by hand: per class, mean |student - teacher| over its nodes, weighted; the padded
    # third teacher counts for nothing, whatever it predicts.
    distance = np.abs(np.asarray(student_logits)[None] - np.asarray(teacher_logits)).mean(-1)
    per_class = distance.reshape(3, CLASSES, 2).mean(-1)
    before = kd_loss(student_logits, teacher_logits, weights, classes)
    np.testing.assert_allclose(before, np.sum(np.asarray(weights) * per_class), rtol=1e-5)
    noisy = teacher_logits.at[2].add(100.0)
    np.testing.assert_allclose(kd_loss(student_logits, noisy, weights, classes), before, rtol=1e-6)

    optimizer = optax.adam(1e-2)
    student, _, losses = jax.jit(distill, static_argnums=(0, 1, 8))(
        task,
        optimizer,
        student,
        optimizer.init(student),
        teacher_logits,
        weights,
        graph,
        classes,
        3,
    )
    after = kd_loss(task.logits(student, graph), teacher_logits, weights, classes)
    np.testing.assert_allclose(losses[0], before, rtol=1e-5)
    assert losses[1] < losses[0] and losses[2] < losses[1] and after < losses[2]


def test_generator_objective_is_the_papers():
    """lam_sem * sum w CE(teachers) - sum w L1(student, teachers) + lam_div * K * diversity, by
    hand, with distinct weights for the terms: a flipped sign (the student must disagree with
    the teachers, which makes the samples hard), a dropped reliability weight or a missing term
    fails it."""
    task = Task(GNN(CLASSES, kind="sage", hidden=(16, 8), dropout=0.0), graph=True)
    classes = pseudo_classes(8, CLASSES)
    gen = Generator(CLASSES, 12, (8,))
    z = jax.random.normal(jax.random.key(0), (8, 4))
    gen_params = gen.init(jax.random.key(1), z, classes)
    graph = knn_graph(gen.apply(gen_params, z, classes), 2)
    init = lambda seed: task.init(jax.random.key(seed), graph)
    teachers = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[init(s) for s in (2, 3, 4)])
    ckr = jnp.array([[1.0, 2.0, 0.0, 1.0], [3.0, 1.0, 1.0, 1.0], [9.0, 9.0, 9.0, 9.0]])
    weights = reliability_weights(ckr, jnp.array([True, True, False]))
    student = init(5)
    opts = FedTADOptions(lam_sem=0.5, lam_div=2.0)
    got = generator_objective(task, graph, z, classes, student, teachers, weights, 2.0, opts)

    t = np.asarray(jax.vmap(lambda p: task.logits(p, graph))(teachers), np.float64)  # [3, 8, C]
    s = np.asarray(task.logits(student, graph), np.float64)
    y = np.asarray(classes)
    ce = np.log(np.exp(t).sum(-1)) - np.take_along_axis(t, y[None, :, None], -1)[..., 0]
    by_class = lambda v: v.reshape(3, CLASSES, 2).mean(-1)  # two pseudo nodes per class
    w = np.asarray(weights)
    semantic = np.sum(w * by_class(ce))
    divergence = np.sum(w * by_class(np.abs(s[None] - t).mean(-1)))
    zz, x = np.asarray(z, np.float64), np.asarray(graph.x, np.float64)
    noise = ((zz[:, None] - zz[None]) ** 2).mean(-1)
    features = np.abs(x[:, None] - x[None]).mean(-1)
    diversity = 2.0 * np.exp(-(noise * features).mean())
    np.testing.assert_allclose(got, 0.5 * semantic - divergence + 2.0 * diversity, rtol=1e-5)


def test_vmapped_round_equals_per_client_loop_with_a_padded_client():
    alg = graph_algorithm("fedtad", num_clients=4, fedtad=TINY)
    _, fed = synthetic_federation(num_clients=3, slots=4)
    server, clients = init_states(alg, fed, jax.random.key(3))
    key = jax.random.key(7)
    v_server, v_clients, _ = make_round(alg, EngineConfig(donate=False))(
        server, clients, fed, key, evaluate=False
    )
    l_server, l_clients = loop_round(alg, server, clients, fed, key)
    assert_trees_close(v_server, l_server)
    assert_trees_close(v_clients, l_clients)
    assert not np.allclose(
        jax.tree.leaves(v_server["model"])[0], jax.tree.leaves(server["model"])[0]
    )


def test_the_student_keeps_its_adam_moments_and_distils_at_a_tenth_of_the_clients_lr():
    """As released, distillation continues the student's optimiser from the last round (its step
    count and moments; keep_student_state=False restarts it every round), and by default at a
    tenth of the clients' learning rate (graph_algorithm's clients train at 1e-2)."""
    _, fed = synthetic_federation(num_clients=3, slots=4)
    steps = TINY["server_epochs"] * TINY["distill_steps"]
    models = {}  # (keep, lr_distill, round) -> server model
    for keep, lr in ((True, None), (True, 1e-3), (True, 1e-2), (False, None)):
        opts = {**TINY, "keep_student_state": keep, "lr_distill": lr}
        alg = graph_algorithm("fedtad", num_clients=4, fedtad=opts)
        server, clients = init_states(alg, fed, jax.random.key(3))
        round_fn = make_round(alg, EngineConfig(donate=False))
        for r in range(2):
            key = jax.random.fold_in(jax.random.key(11), r)
            server, clients, _ = round_fn(server, clients, fed, key, evaluate=False)
            count = optax.tree_utils.tree_get(server["student_opt"], "count")
            assert int(count) == (r + 1 if keep else 1) * steps
            models[keep, lr, r] = server["model"]

    def same(a, b):
        return all(np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    assert same(models[True, None, 1], models[True, 1e-3, 1])
    assert not same(models[True, None, 1], models[True, 1e-2, 1])
    # Restarting the moments: the first round is the same (both start afresh), the second not.
    assert same(models[True, None, 0], models[False, None, 0])
    assert not same(models[True, None, 1], models[False, None, 1])


def test_options_are_checked_and_the_method_is_graph_only():
    assert options({"generator_hidden": [4, 4]}) == FedTADOptions(generator_hidden=(4, 4))
    with pytest.raises(UserError, match="topk must be < num_gen"):
        options({"num_gen": 5, "topk": 5})
    with pytest.raises(UserError, match="num_gen must be >= the number of classes"):
        graph_algorithm("fedtad", fedtad={**TINY, "num_gen": CLASSES - 1, "topk": 1})
    with pytest.raises(UserError, match="vision track"):
        registry.check_track("fedtad", "vision")
