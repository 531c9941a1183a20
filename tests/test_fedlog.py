"""FedLoG on graphs: server blend, gate, scaling rule, generator pretraining pieces, the vmapped
round against a per-client loop, determinism, padding, and (real data) Missing Class accuracy."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.algorithms.fedlog import generators, local_epoch, pair_gradients, server, shared
from fedjax_syn.algorithms.fedlog import model as M
from fedjax_syn.algorithms.fedlog.algorithm import fedlog
from fedjax_syn.algorithms.fedlog.config import FedLoGConfig, from_dict, make_spec
from fedjax_syn.core.arrays import ClientData, EvalGroup, Federation, pad_clients, to_device
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.graph import Graph
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.round import EngineConfig, first_round, make_init, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN
from tests.engine_fixtures import loop_round

C, F = 3, 6
TINY = FedLoGConfig(
    syn_per_class=2,
    batch_size=4,
    pretrain_epochs=3,
    patience=2,
    gen_epochs=2,
    gen_networks=2,
    gen_hidden=(8, 8),
    gen_nodes=16,
)


# ---------------------------------------------------------------------------------------------
# A tiny padded graph federation (no files).


def _client(rng, n, e):
    y = rng.integers(0, C, size=n).astype(np.int32)
    centres = rng.normal(size=(C, F))
    x = (centres[y] + 0.5 * rng.normal(size=(n, F))).astype(np.float32)
    src = rng.integers(0, n, size=e)
    dst = rng.integers(0, n, size=e)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    role = rng.permutation(np.arange(n) % 3)  # 0 train, 1 val, 2 test
    return x, y, np.concatenate([src, dst]), np.concatenate([dst, src]), role


def tiny_federation(sizes=(14, 11, 9), pad_nodes=0, pad_edges=0, pad_clients_to=None, seed=0):
    rng = np.random.default_rng(seed)
    clients = [_client(rng, n, n) for n in sizes]
    n_pad = max(sizes) + pad_nodes
    e_pad = max(len(c[2]) for c in clients) + pad_edges

    def pad(a, length):
        return np.pad(a, [(0, length - len(a))] + [(0, 0)] * (a.ndim - 1))

    stack = lambda i, length: np.stack([pad(c[i], length) for c in clients])
    x, y = stack(0, n_pad), stack(1, n_pad)
    senders, receivers = stack(2, e_pad).astype(np.int32), stack(3, e_pad).astype(np.int32)
    edge_mask = np.stack([pad(np.ones(len(c[2]), bool), e_pad) for c in clients])
    node_mask = np.stack([pad(np.ones(len(c[1]), bool), n_pad) for c in clients])
    role = np.stack([pad(c[4], n_pad) for c in clients])
    train, val, test = (node_mask & (role == r) for r in range(3))
    nx, ny, ns, nr, _ = _client(rng, 10, 10)
    k = len(sizes)
    tree = {
        "graph": Graph(x, senders, receivers, edge_mask, node_mask),
        "y": y,
        "train": train,
        "val": val,
        "seen": test,
        "new": np.ones((k, 10), bool),
        "client_mask": np.ones(k, bool),
    }
    if pad_clients_to:
        tree = pad_clients(tree, pad_clients_to)
    t = to_device(tree)
    new_graph = to_device(
        Graph(
            nx, ns.astype(np.int32), nr.astype(np.int32), np.ones(len(ns), bool), np.ones(10, bool)
        )
    )
    groups = {
        "local": EvalGroup(t["graph"], t["y"], {"val": t["val"], "seen": t["seen"]}),
        "new": EvalGroup(new_graph, jnp.asarray(ny), {"new_client": t["new"]}, shared=True),
    }
    train_data = ClientData(t["graph"], t["y"], t["train"], t["val"])
    return Federation(train_data, groups, t["client_mask"], num_classes=C)


def tiny_task():
    return Task(GNN(C, "sage", (8, 4), 0.5), graph=True)


# Compiling is most of these tests' time. What they check is the programs' arithmetic (XLA's graph
# passes all run), not LLVM's code generation, so they compile without its optimisations (2.5x
# faster to compile). Cora's programs too: with the suite's elemental emitter (tests/conftest.py)
# level 0 costs that test 47 s of CPU where level 1, which runs them faster, costs 66.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


class Runner:
    """One algorithm on one federation, its init program (with the setup round 0, if any) and
    round program compiled once for every seed. A run takes the run program's keys."""

    def __init__(self, alg, fed, chunk=None, engine=None, options=FAST_COMPILE):
        self.alg, self.fed = alg, fed
        engine = engine or EngineConfig(client_chunk=chunk, donate=False)
        key = jax.random.key(0)
        lowered = make_init(alg, engine).lower(fed, key)
        self.init = lowered.compile(options)
        server, clients, _ = jax.tree.map(
            lambda info: jax.ShapeDtypeStruct(info.shape, info.dtype), lowered.out_info
        )
        round_fn = make_round(alg, engine)
        lowered = round_fn.lower(server, clients, fed, key, evaluate=True)
        self.round = lowered.compile(options)

    def run(self, rounds, seed=0):
        """Returns the states after initialisation (the setup round 0 included) and after the
        last round, and the metrics of every evaluated round: 0 (with a setup round) .. `rounds`."""
        key = jax.random.key(seed)
        server_state, clients, metrics = self.init(self.fed, jax.random.fold_in(key, 0))
        history = [evaluation.accuracies(metrics["counts"]["personalized"])] if metrics else []
        after_setup = (server_state, clients)
        for r in range(1, rounds + 1):
            server_state, clients, metrics = self.round(
                server_state, clients, self.fed, jax.random.fold_in(key, r)
            )
            history.append(evaluation.accuracies(metrics["counts"]["personalized"]))
        return after_setup, (server_state, clients), history


# ---------------------------------------------------------------------------------------------
# Server steps against hand computations.


def test_blend_matches_hand_computation():
    rng = np.random.default_rng(0)
    k, c, s, f = 3, 4, 3, 2
    # Class 3 is held by nobody -> uniform 1/K over the real clients; client 3 is padding.
    shares = np.array([[0.5, 0.0, 0.5, 0], [0.2, 0.8, 0.0, 0], [0.0, 0.3, 0.7, 0], [0.9, 0, 0, 0]])
    client_mask = np.array([True, True, True, False])
    x = rng.normal(size=(k + 1, c, s, f)).astype(np.float32)
    weights = np.asarray(shared.blend_weights(jnp.asarray(shares), jnp.asarray(client_mask)))

    expected_w = np.zeros((k + 1, c))
    for cls in range(c):
        held = shares[:k, cls]
        expected_w[:k, cls] = held / held.sum() if held.sum() > 0 else 1.0 / k
    np.testing.assert_allclose(weights, expected_w, rtol=1e-6)
    np.testing.assert_allclose(weights[:, 3], [1 / 3, 1 / 3, 1 / 3, 0], rtol=1e-6)

    perms = np.array([[2, 0, 1], [0, 1, 2], [1, 2, 0], [0, 2, 1]])
    blended = np.asarray(shared.blend_synthetic(jnp.asarray(x), weights, jnp.asarray(perms)))
    hand = np.zeros((c, s, f))
    for kk, cls, j in itertools.product(range(k + 1), range(c), range(s)):
        hand[cls, j] += expected_w[kk, cls] * x[kk, cls, perms[kk, j]]
    np.testing.assert_allclose(blended, hand, rtol=1e-5, atol=1e-6)

    uniform = np.asarray(
        shared.blend_weights(jnp.asarray(shares), jnp.asarray(client_mask), "uniform")
    )
    np.testing.assert_allclose(uniform, np.tile([[1 / 3], [1 / 3], [1 / 3], [0]], (1, c)))


def test_permutations_are_per_client_and_shared_across_classes():
    perms = np.asarray(shared.slot_permutations(jax.random.key(0), 5, 20))
    assert all(sorted(p) == list(range(20)) for p in perms)
    assert len({tuple(p) for p in perms}) == 5
    # One permutation per client, applied to every class: slot j of every class comes from the
    # same source slot.
    x = jnp.broadcast_to(jnp.arange(20.0)[None, None, :, None], (5, 3, 20, 1))
    onehot = jnp.zeros((5, 3)).at[2].set(1.0)
    out = np.asarray(shared.blend_synthetic(x, onehot, jnp.asarray(perms)))[..., 0]
    np.testing.assert_array_equal(out, np.tile(perms[2], (3, 1)))


def test_generator_blend_and_model_average():
    gens = {"w": jnp.arange(12.0).reshape(3, 2, 2), "b": jnp.array([1.0, 2.0, 4.0])}
    weights = jnp.array([[0.5, 0.0], [0.5, 0.25], [0.0, 0.75]])  # [K=3, C=2]
    out = server.blend_generators(gens, weights)
    np.testing.assert_allclose(out["b"], [1.5, 0.25 * 2 + 0.75 * 4])
    np.testing.assert_allclose(out["w"][1], 0.25 * gens["w"][1] + 0.75 * gens["w"][2])
    params = {"p": jnp.array([1.0, 3.0, 8.0, 100.0])}
    mask = jnp.array([True, True, True, False])
    sizes = jnp.array([1.0, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(shared.average_params(params, mask, sizes)["p"], 4.0)
    np.testing.assert_allclose(shared.average_params(params, mask, sizes, "weighted")["p"], 5.0)


def test_class_shares_ignore_padding_and_non_training_nodes():
    labels = jnp.array([0, 0, 1, 2, 2, 2])
    mask = jnp.array([True, True, True, False, True, False])
    np.testing.assert_allclose(shared.class_shares(labels, mask, 4), [0.5, 0.25, 0.25, 0.0])


# ---------------------------------------------------------------------------------------------
# Client model pieces.


def test_degree_gate_and_the_two_combinations():
    degree = jnp.array([0.0, 2.0, 4.0, 9.0])
    logit = M.gate_logit(degree, gamma=3.0)
    alpha = np.asarray(jax.nn.sigmoid(logit))
    np.testing.assert_allclose(alpha, 1 / (1 + np.exp(-(np.array([0, 2, 4, 9]) - 4))), rtol=1e-6)
    assert alpha[2] == pytest.approx(0.5) and alpha[0] < 0.02 and alpha[3] > 0.99

    rng = np.random.default_rng(1)
    lp_head = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 3))))
    lp_tail = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 3))))
    a = alpha[:, None]
    train = np.asarray(M.train_log_probs(lp_head, lp_tail, logit))
    np.testing.assert_allclose(train, a * lp_head + (1 - a) * lp_tail, rtol=1e-5)
    pred = np.asarray(M.predict_log_probs(lp_head, lp_tail, logit))
    mix = a * np.exp(lp_head) + (1 - a) * np.exp(lp_tail)
    np.testing.assert_allclose(pred, np.log(mix), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(pred).sum(1), 1.0, rtol=1e-5)


def test_distance_classifier_picks_the_nearest_prototype():
    protos = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    z = jnp.array([[2.9, 0.2], [0.1, -0.1], [0.3, 2.0]])
    lp = M.distance_log_probs(z, protos)
    np.testing.assert_array_equal(np.argmax(lp, 1), [1, 0, 2])
    sq = np.sum((np.asarray(z)[:, None] - np.asarray(protos)[None]) ** 2, -1)
    np.testing.assert_allclose(lp, jax.nn.log_softmax(-sq), rtol=1e-5)


def test_scale_update_rule_and_clipping():
    scales = jnp.array([0.0, 0.5, 1.0, 0.9995, 0.0005, 0.3])
    accuracy = jnp.array([0.9, 0.2, 0.95, 0.81, 0.5, 0.8])  # 0.8 is not above the threshold
    new = np.asarray(shared.update_scales(scales, accuracy, threshold=0.8, step=0.001))
    np.testing.assert_allclose(new, [0.001, 0.499, 1.0, 1.0, 0.0, 0.299], atol=1e-7)


def test_feature_scaling_moves_towards_the_global_mean():
    x = jnp.array([[0.0, 0.0], [2.0, 4.0], [4.0, 2.0], [6.0, 6.0]])
    labels = jnp.array([0, 0, 1, 1])
    scaled = np.asarray(shared.scale_features(x, labels, jnp.array([0.0, 0.5])))
    mean = np.array([3.0, 3.0])
    np.testing.assert_allclose(scaled[:2], x[:2])
    np.testing.assert_allclose(scaled[2:], np.asarray(x[2:]) + 0.5 * (mean - np.asarray(x[2:])))
    masked = shared.scale_features(x, labels, jnp.array([1.0, 1.0]), jnp.array([1, 1, 0, 0], bool))
    np.testing.assert_allclose(masked, np.tile([[1.0, 2.0]], (4, 1)))


def test_prompt_pairs_connect_each_node_to_its_prompt():
    g = M.prompt_pairs(jnp.zeros((3, 2)), jnp.ones((3, 2)))
    edges = set(zip(np.asarray(g.senders).tolist(), np.asarray(g.receivers).tolist()))
    assert edges == {(0, 3), (1, 4), (2, 5), (3, 0), (4, 1), (5, 2)}


@pytest.mark.parametrize("dropout", [False, True], ids=["deterministic", "prompt_dropout"])
def test_prompts_draw_a_fresh_dropout_mask_per_key_only_with_prompt_dropout(dropout):
    """The released code leaves its random generators in training mode: every step's prompts
    take a new dropout mask. Without `prompt_dropout` the prompts ignore the key, and a
    generator without dropout gives the deterministic prompts either way."""
    config = dataclasses.replace(TINY, prompt="random", prompt_dropout=dropout)
    spec = make_spec(tiny_task(), C, config)
    x = jax.random.normal(jax.random.key(1), (C * 2, F))
    labels = jnp.repeat(jnp.arange(C), 2)
    gens = jax.vmap(lambda k: generators.init_generator(k, F, config))(
        jax.random.split(jax.random.key(2), C)
    )
    glob = local_epoch.GlobalSet(x, labels, gens)
    scales = jnp.zeros((C,))

    def prompts(key, cfg=config):
        graph = local_epoch.customised_graph(
            dataclasses.replace(spec, config=cfg), glob, scales, key
        )
        np.testing.assert_array_equal(graph.x[: C * 2], x)  # the centres are the global nodes
        return np.asarray(graph.x[C * 2 :])

    a, b = prompts(jax.random.key(3)), prompts(jax.random.key(4))
    np.testing.assert_array_equal(a, prompts(jax.random.key(3)))
    assert not np.array_equal(a, b) if dropout else np.array_equal(a, b)
    no_dropout = dataclasses.replace(config, gen_dropout=0.0)
    deterministic = dataclasses.replace(config, prompt_dropout=False)
    np.testing.assert_allclose(
        prompts(jax.random.key(3), no_dropout), prompts(jax.random.key(5), deterministic), atol=1e-6
    )


def test_neighbour_mean_guards_isolated_nodes():
    x = jnp.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [7.0, 7.0]])
    graph = Graph(
        x,
        jnp.array([0, 1, 0, 3], jnp.int32),
        jnp.array([1, 0, 2, 3], jnp.int32),
        jnp.array([True, True, True, False]),  # the last edge is padding
        jnp.ones(4, bool),
    )
    means, has = generators.neighbour_mean(graph)
    np.testing.assert_allclose(means, [[0, 2], [1, 0], [1, 0], [0, 0]])
    np.testing.assert_array_equal(has, [True, True, True, False])
    assert np.all(np.isfinite(np.asarray(means)))


def test_pair_gradients_equal_real_gradients_when_prompts_are_the_true_neighbours():
    # A perfect matching 0-1, 2-3, 4-5: every node's 2-hop receptive field is its pair, so the
    # per-node graphs [x_v, x_partner(v)] reproduce the real graph and the matched gradients agree.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, F)).astype(np.float32))
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    mask = jnp.ones(6, bool)
    src, dst = jnp.array([0, 2, 4]), jnp.array([1, 3, 5])
    graph = Graph(
        x,
        jnp.concatenate([src, dst]).astype(jnp.int32),
        jnp.concatenate([dst, src]).astype(jnp.int32),
        jnp.ones(6, bool),
        mask,
    )
    gnn = tiny_task().model
    partner = jnp.array([1, 0, 3, 2, 5, 4])

    @jax.jit
    def mse(generated, key):
        nets = pair_gradients.init_networks(gnn, key, 2, F)
        bank = pair_gradients.pair_bank(
            nets, pair_gradients.real_gradients(gnn, nets, graph, labels, mask)
        )
        return pair_gradients.pair_matching_loss(bank, x, generated, labels, mask)

    key = jax.random.key(0)
    assert float(mse(x[partner], key)) < 1e-12
    assert float(mse(x[::-1], key)) > 1e-8


@pytest.mark.parametrize("hidden", [(8,), (8, 6), (8, 6, 4)])
def test_pair_matching_equals_the_generic_gnn_on_the_pair_graphs(hidden):
    # Loss and generator gradient (second order): the bank written for the pair graphs against
    # every network's generic gradient on prompt_pairs.
    rng = np.random.default_rng(1)
    n = 5
    x = jnp.asarray((rng.random((n, F)) < 0.3).astype(np.float32))  # sparse binary features
    labels = jnp.array([0, 1, 2, 1, 0])
    valid = jnp.array([True, True, False, True, True])  # one non-training row
    graph = Graph(
        x, jnp.array([0, 1], jnp.int32), jnp.array([1, 0], jnp.int32), jnp.ones(2, bool), valid
    )
    gnn = GNN(C, "sage", hidden, 0.5)
    nets = pair_gradients.init_networks(gnn, jax.random.key(2), 3, F)
    nets = jax.tree.map(lambda p: p + 0.1 * jnp.ones_like(p), nets)  # nonzero biases too
    real = pair_gradients.real_gradients(gnn, nets, graph, labels, valid)
    config = FedLoGConfig(gen_hidden=(7,))
    gen = generators.generator(config)
    gen_params = generators.init_generator(jax.random.key(3), F, config)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def loss(bank):
        return jax.value_and_grad(generators.generator_loss)(
            gen_params,
            jax.random.key(4),
            gen=gen,
            gnn=gnn,
            bank=bank,
            x=x,
            labels=labels,
            valid=valid,
            target=jnp.zeros_like(x),
            has_neighbour=jnp.ones(n, bool),
        )

    with jax.default_matmul_precision("highest"):
        got = loss(pair_gradients.pair_bank(nets, real))
        want = loss((nets, real))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-8)
    assert max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want[1])) > 1e-4


@pytest.mark.parametrize("fixed", [True, False])
def test_generator_pretraining_is_the_same_through_the_bank_and_the_generic_gnn(fixed):
    # The whole round-0 pretraining, with one bank for every epoch or a fresh draw per epoch:
    # same losses and trained generator either way, and the loss goes down.
    rng = np.random.default_rng(3)
    n = 8
    x = jnp.asarray((rng.random((n, F)) < 0.4).astype(np.float32))
    src = jnp.array([0, 1, 2, 3, 4, 5], jnp.int32)
    dst = jnp.array([1, 2, 3, 4, 5, 0], jnp.int32)
    graph = Graph(
        x,
        jnp.concatenate([src, dst]),
        jnp.concatenate([dst, src]),
        jnp.ones(12, bool),
        jnp.ones(n, bool),
    )
    labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
    mask = jnp.array([True] * 6 + [False] * 2)
    config = FedLoGConfig(gen_epochs=6, gen_networks=3, gen_hidden=(8,), gen_fixed_networks=fixed)
    gen0 = generators.init_generator(jax.random.key(0), F, config)

    @functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
    def pretrain(pair_gradient):
        return generators.pretrain_generator(
            gen0,
            tiny_task().model,
            graph,
            labels,
            mask,
            jax.random.key(1),
            jax.random.key(2),
            config,
            pair_gradient,
        )

    with jax.default_matmul_precision("highest"):
        (got, got_losses), (want, want_losses) = pretrain(True), pretrain(False)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-6)
    if fixed:  # a fresh bank per epoch makes the loss of one epoch not comparable to another's
        assert float(got_losses[-1]) < float(got_losses[0])


def test_random_networks_follow_the_gnn_initialisation():
    gnn = GNN(C, "sage", (64, 32), 0.5)
    nets = jax.jit(lambda k: pair_gradients.init_networks(gnn, k, 4, 200))(jax.random.key(0))
    reference = gnn.init(jax.random.key(1), M.synthetic_graph(jnp.zeros((1, 200)), "isolated"))
    assert jax.tree.structure(nets) == jax.tree.structure(reference)
    for net, ref in zip(jax.tree.leaves(nets), jax.tree.leaves(reference)):
        assert net.shape == (4, *ref.shape)
        if ref.ndim == 1:
            np.testing.assert_array_equal(net, 0.0)
            np.testing.assert_array_equal(ref, 0.0)
        else:
            assert np.std(np.asarray(net)) == pytest.approx(np.std(np.asarray(ref)), rel=0.15)
    kernels = [leaf for leaf in jax.tree.leaves(nets) if leaf.ndim == 3]
    assert not np.allclose(kernels[0][0], kernels[0][1])  # the networks differ


def test_unknown_or_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown fedlog option"):
        from_dict({"promt": "random"})
    with pytest.raises(UserError, match="prompt"):
        from_dict({"prompt": "learned"})
    with pytest.raises(UserError, match="global_synthetic"):
        from_dict({"global_synthetic": "all"})


def test_released_preset_sets_the_released_choices_and_refuses_contradictions():
    released = from_dict({"preset": "released", "beta": 0.1})
    assert (
        released.prompt,
        released.prompt_dropout,
        released.synthetic_graph,
        released.restore_best,
    ) == ("random", True, "self_loop", False)
    assert released.beta == 0.1
    faithful = from_dict({})
    assert (
        faithful.preset,
        faithful.prompt,
        faithful.prompt_dropout,
        faithful.synthetic_graph,
    ) == (
        "faithful",
        "trained",
        False,
        "isolated",
    )
    with pytest.raises(UserError, match="preset 'released' sets prompt='random'"):
        from_dict({"preset": "released", "prompt": "trained"})
    with pytest.raises(UserError, match="unknown fedlog preset 'paper'"):
        from_dict({"preset": "paper"})


# ---------------------------------------------------------------------------------------------
# The algorithm on the engine.


@pytest.fixture(scope="module")
def tiny_runs():
    """The setup round 0 and rounds 1-3 (with L_cd): seed 0 twice and seed 1, one compilation
    for all."""
    runner = Runner(fedlog(tiny_task(), C, TINY), tiny_federation())
    return runner, {name: runner.run(3, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_same_seed_same_metrics_and_different_seed_differs(tiny_runs):
    _, runs = tiny_runs
    a, b, c = (runs[k][2] for k in "abc")
    assert a == b
    assert a != c
    for metrics in a:
        assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_server_is_built_from_uploads_and_states_stay_valid(tiny_runs):
    runner, runs = tiny_runs
    (server_one, clients_one), (server_state, clients), _ = runs["a"]
    assert server_state["x_global"].shape == (C * TINY.syn_per_class, F)
    # The setup round's server average is the mean of the round-0 models.
    mean = jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), clients_one["params"])
    for a, b in zip(jax.tree.leaves(server_one["params"]), jax.tree.leaves(mean)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Trained generators: the per-class blend differs from the common initialisation.
    one_client = jax.tree.map(lambda leaf: leaf[0], runner.fed.train)
    server_key = jax.random.split(jax.random.fold_in(jax.random.key(0), 0))[0]  # the run's
    init_server = jax.jit(runner.alg.init_server, compiler_options=FAST_COMPILE)(
        server_key, one_client
    )
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(server_one["gens"]), jax.tree.leaves(init_server["gens"]))
    ]
    assert max(moved) > 0
    assert np.all(np.isfinite(np.asarray(clients["x_head"])))
    assert np.all((np.asarray(clients["scales"]) >= 0) & (np.asarray(clients["scales"]) <= 1))


def test_vmapped_round_equals_per_client_loop(tiny_runs):
    runner, runs = tiny_runs
    alg, fed = runner.alg, runner.fed
    (server_state, clients), _, _ = runs["a"]
    round_key = jax.random.key(7)
    v_server, v_clients, _ = runner.round(server_state, clients, fed, round_key)

    l_server, l_states = loop_round(alg, server_state, clients, fed, round_key)
    for a, b in zip(jax.tree.leaves(v_server), jax.tree.leaves(l_server), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(v_clients), jax.tree.leaves(l_states), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_padding_and_clients_one_at_a_time_never_change_the_run(tiny_runs):
    """Padded nodes, edges and clients, run with `client_chunk=1` (what the graph tables run on
    the CPU: round 0 and the rounds through `lax.map`, each client with its own early stopping
    and minibatch count), give the vmapped run on the unpadded federation. One program checks
    both: either change alone would break the equality."""
    _, runs = tiny_runs
    padded = tiny_federation(pad_nodes=5, pad_edges=7, pad_clients_to=5)
    _, (server_state, _), history = Runner(fedlog(tiny_task(), C, TINY), padded, chunk=1).run(
        3, seed=0
    )
    (vmapped_server, _), plain = runs["a"][1], runs["a"][2]
    for a, b in zip(jax.tree.leaves(server_state), jax.tree.leaves(vmapped_server), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for chunked, vmapped in zip(history, plain, strict=True):
        assert chunked.keys() == vmapped.keys()
        for setting, value in vmapped.items():
            assert chunked[setting] == pytest.approx(value, abs=1e-6), setting


# ---------------------------------------------------------------------------------------------
# Real data: Cora, K = 3.


def test_fedlog_beats_local_on_missing_classes_on_cora(data_dir):
    """Local training never sees a client's missing classes; FedLoG's global synthetic nodes
    carry them over from the other clients, so its missing-class accuracy must be higher. The
    runs are the run program's (same programs and keys), compiled as the tiny runs are."""
    from experiments.configs import fedlog_cora
    from fedjax_syn.runs.config import engine_config
    from fedjax_syn.runs.prepare import build_algorithm, prepare
    from fedjax_syn.runs.records import summarize_curves

    cfg = fedlog_cora.get_config("released")  # untrained prompts: no generator pretraining
    cfg.data_dir = str(data_dir)
    cfg.rounds = 4
    cfg.fedlog.pretrain_epochs = 20
    local_cfg = cfg.copy_and_resolve_references()
    local_cfg.algorithm = "local"
    prepared = prepare(cfg)

    def curves(cfg):
        alg = build_algorithm(cfg, [prepared])
        engine = dataclasses.replace(engine_config(cfg), donate=False)
        runner = Runner(alg, prepared.fed, engine=engine)
        _, _, history = runner.run(cfg.rounds - 1 + first_round(alg))
        return {name: [metrics[name] for metrics in history] for name in history[0]}

    fed, local = curves(cfg), curves(local_cfg)
    assert len(fed["val"]) == len(local["val"]) == cfg.rounds
    fed_missing, local_missing = np.mean(fed["missing_class"]), np.mean(local["missing_class"])
    assert fed_missing > local_missing + 0.005, (fed_missing, local_missing)
    best, _ = summarize_curves(fed)
    assert best["seen"] > 0.6


def test_generator_node_cap_is_resolved_from_the_largest_training_client():
    from types import SimpleNamespace

    import ml_collections

    from fedjax_syn.algorithms.fedlog.algorithm import options
    from fedjax_syn.core.interface import DataSpec

    def fed(*counts):
        mask = np.zeros((len(counts), 12), bool)
        for k, n in enumerate(counts):
            mask[k, :n] = True
        graph = SimpleNamespace(x=np.zeros((len(counts), 12, F)))
        train = SimpleNamespace(mask=mask, inputs=graph)
        return SimpleNamespace(train=train, num_classes=C, num_clients=len(counts))

    spec = DataSpec.of("graph", [fed(3, 7), fed(9, 2)], ("seen",))  # runs batched in a program
    assert (spec.max_train_examples, spec.feature_shape, spec.num_clients) == (9, (F,), 2)
    cfg = ml_collections.ConfigDict({"algorithm": "fedlog", "fedlog": {"beta": 0.1}})
    assert options(cfg, spec).gen_nodes == 9
    assert cfg.fedlog.to_dict() == {"beta": 0.1}  # the caller's config is left alone
    cfg.fedlog.gen_nodes = 4
    assert options(cfg, spec).gen_nodes == 4  # an explicit cap is kept


def test_real_gradients_memory_does_not_grow_with_the_bank():
    # The real-graph gradients run one network at a time: a vmapped bank held every network's
    # per-edge messages at once, the round-0 program's peak memory on large subgraphs.
    rng = np.random.default_rng(5)
    n, e = 64, 2048
    x = jnp.asarray(rng.normal(size=(n, 32)).astype(np.float32))
    senders = jnp.asarray(rng.integers(0, n, e), jnp.int32)
    receivers = jnp.asarray(rng.integers(0, n, e), jnp.int32)
    graph = Graph(x, senders, receivers, jnp.ones(e, bool), jnp.ones(n, bool))
    labels = jnp.asarray(rng.integers(0, C, n), jnp.int32)
    gnn = GNN(C, "sage", (64, 32), 0.5)

    def temp_bytes(num_networks):
        nets = pair_gradients.init_networks(gnn, jax.random.key(0), num_networks, 32)
        fn = jax.jit(
            lambda nets: pair_gradients.real_gradients(gnn, nets, graph, labels, graph.node_mask)
        )
        return fn.lower(nets).compile().memory_analysis().temp_size_in_bytes

    one_edge_message = e * 64 * 4
    assert temp_bytes(16) - temp_bytes(2) < 2 * one_edge_message
