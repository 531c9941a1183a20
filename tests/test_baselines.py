"""What each baseline does in a round, on a tiny MLP federation: FedProx's proximal pull, FedPer's
private heads, local training's silence, FedAvg-FT's fine-tuning of the current global model."""

import functools
import pathlib
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import pytest

from fedjax_syn.algorithms import common, registry
from fedjax_syn.algorithms.fedavg import local_loss, train_from
from fedjax_syn.core.errors import UserError
from fedjax_syn.core.interface import weighted_average
from fedjax_syn.engine import local
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.round import EngineConfig, init_step, round_step
from tests.engine_fixtures import (
    SPEC,
    TASK,
    Cfg,
    algorithm,
    config,
    make_federation,
    programs,
)

FED = make_federation()
K = FED.num_clients
INIT_KEY, ROUND_KEY, SECOND_KEY = jax.random.key(0), jax.random.key(1), jax.random.key(2)


class Round(NamedTuple):
    """Two engine rounds from the initial states, and what the clients sent in the first."""

    server0: Any  # the global model round 1 starts from
    clients0: Any
    server: Any  # after round 1
    clients: Any
    uploads: Any  # [clients, ...] as round 1's client updates produced them
    models: Any  # [clients, ...] personalised models after round 1
    server2: Any  # after round 2


@functools.cache
def baseline_run(name: str, **overrides) -> Round:
    """Compiled (as one program) and run once per (algorithm, overrides); tests share it."""
    alg = algorithm(name, **overrides)
    engine = EngineConfig(donate=False)

    @jax.jit
    def rounds(fed):
        server0, clients0, _ = init_step(alg, fed, INIT_KEY, engine)
        server, clients, _ = round_step(
            alg, server0, clients0, fed, ROUND_KEY, evaluate=False, config=engine
        )
        # The engine's keys: the round key splits into (update, server, personalise) keys.
        update_key, _, personal_key = jax.random.split(ROUND_KEY, 3)
        update = jax.vmap(alg.client_update, in_axes=(None, 0, 0, 0))
        uploads = update(server0, clients0, fed.train, jax.random.split(update_key, K)).upload
        personalize = jax.vmap(alg.personalize, in_axes=(None, 0, 0, 0))
        models = personalize(server, clients, fed.train, jax.random.split(personal_key, K))
        server2, _, _ = round_step(
            alg, server, clients, fed, SECOND_KEY, evaluate=False, config=engine
        )
        return Round(server0, clients0, server, clients, uploads, models, server2)

    return rounds(FED)


def client(tree, k: int):
    return jax.tree.map(lambda leaf: leaf[k], tree)


def assert_trees_equal(a, b, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def trees_close(a, b, atol=1e-6) -> bool:
    return all(
        np.allclose(x, y, atol=atol, rtol=0)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def distance(a, b) -> float:
    """Euclidean distance between two parameter trees."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return float(np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2) for x, y in pairs)))


# --- FedAvg and FedProx ------------------------------------------------------------------------


def test_fedavg_server_is_the_size_weighted_mean_of_its_clients_models():
    fedavg = baseline_run("fedavg")
    sizes = np.asarray(FED.train.mask).sum(axis=1)
    assert len(set(sizes.tolist())) == K  # unequal sizes: a plain mean would differ
    expected = weighted_average(fedavg.uploads["params"], sizes)
    assert_trees_equal(fedavg.server, expected, atol=1e-6)
    assert not trees_close(fedavg.server, client(fedavg.uploads["params"], 0))


def test_fedprox_with_mu_zero_equals_fedavg():
    fedavg, prox = baseline_run("fedavg"), baseline_run("fedprox", prox_mu=0.0)
    assert_trees_equal(prox.server0, fedavg.server0)
    assert_trees_equal(prox.server, fedavg.server, atol=1e-6)
    assert not trees_close(fedavg.server, fedavg.server0)  # the round trained


def test_fedprox_with_positive_mu_keeps_clients_closer_to_the_global_model():
    fedavg, prox = baseline_run("fedavg"), baseline_run("fedprox", prox_mu=4.0)
    assert_trees_equal(prox.server0, fedavg.server0)
    assert not trees_close(prox.server, fedavg.server)
    for k in range(K):
        pulled = distance(client(prox.uploads["params"], k), prox.server0)
        free = distance(client(fedavg.uploads["params"], k), fedavg.server0)
        assert 0.0 < pulled < 0.9 * free, (k, pulled, free)


def fedavg_rounds(optimizer: str, keep: bool, name: str = "fedavg"):
    """Two engine rounds of `name` with `optimizer` (lr 0.05), each client's optimiser state kept
    between rounds or not: (algorithm, [(server, clients) after init, round 1, round 2])."""
    cfg = config(name, optimizer=optimizer, lr=0.05)
    cfg["fedavg"] = {"keep_optimizer_state": keep}
    alg = registry.BUILDERS[name](cfg, TASK, SPEC)
    init, round_fn = programs(alg)
    states = [init(FED, INIT_KEY)]
    for key in (ROUND_KEY, SECOND_KEY):
        states.append(round_fn(*states[-1], FED, key))
    return alg, states


def test_kept_optimizer_state_carries_each_clients_adam_moments_into_the_next_round():
    alg, states = fedavg_rounds("adam", keep=True)
    (_, clients0), (server1, clients1), (server2, _) = states
    steps = np.asarray(jax.tree.leaves(clients1)[0])  # Adam's step count, one per client
    assert np.all(np.asarray(jax.tree.leaves(clients0)[0]) == 0) and np.all(steps > 0), steps
    # Round 2 of client k starts from its own round-1 moments, so its update is local.train's
    # from that state; with a fresh state it is not.
    update_key = jax.random.split(SECOND_KEY, 3)[0]
    keys = jax.random.split(update_key, K)
    for k in range(K):
        result = alg.client_update(server1, client(clients1, k), client(FED.train, k), keys[k])
        loss_fn = local_loss(TASK, client(FED.train, k))
        optimizer = common.optimizer(config("fedavg", optimizer="adam", lr=0.05))
        schedule = common.local_schedule(config("fedavg"))
        kept, _, _ = local.train(
            loss_fn,
            server1,
            optimizer,
            client(FED.train, k).mask,
            keys[k],
            schedule,
            client(clients1, k),
        )
        fresh, _, _ = local.train(
            loss_fn, server1, optimizer, client(FED.train, k).mask, keys[k], schedule
        )
        assert_trees_equal(result.upload["params"], kept, atol=1e-6)
        assert not trees_close(kept, fresh)
    _, fresh_states = fedavg_rounds("adam", keep=False)
    assert_trees_equal(fresh_states[1][0], server1, atol=1e-6)  # round 1: both states are fresh
    assert not trees_close(fresh_states[2][0], server2)


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_keeping_a_stateless_optimizers_state_changes_nothing(name):
    _, kept = fedavg_rounds("sgd", keep=True, name=name)
    _, fresh = fedavg_rounds("sgd", keep=False, name=name)
    assert_trees_equal(kept[2][0], fresh[2][0], atol=1e-6)


def test_fedavg_options_are_checked():
    with pytest.raises(UserError, match="unknown fedavg option"):
        registry.check_options(Cfg(algorithm="fedprox", fedavg={"keep_state": True}))


# --- FedPer --------------------------------------------------------------------------------------


def test_fedper_heads_differ_across_clients_after_a_round():
    fedper = baseline_run("fedper")
    for j in range(K):
        assert_trees_equal(client(fedper.clients0, j), fedper.server0["params"]["head"])
    for j in range(K):
        for k in range(j + 1, K):
            assert not trees_close(client(fedper.clients, j), client(fedper.clients, k)), (j, k)


def test_fedper_clients_share_the_servers_encoder_and_keep_their_own_heads():
    fedper = baseline_run("fedper")
    encoder = fedper.server["params"]["encoder"]
    assert not trees_close(encoder, fedper.server0["params"]["encoder"])  # averaged, moved
    for k in range(K):
        model = client(fedper.models, k)["params"]
        assert_trees_equal(model["encoder"], encoder)
        assert_trees_equal(model["head"], client(fedper.clients, k))


def test_fedper_upload_holds_no_head_and_the_server_never_learns_one():
    fedper = baseline_run("fedper")
    paths = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(fedper.uploads)
    ]
    assert paths and not [p for p in paths if "head" in p]
    head_sizes = {np.asarray(leaf).size for leaf in jax.tree.leaves(fedper.clients)}
    encoder_sizes = {np.asarray(leaf).size for leaf in jax.tree.leaves(fedper.uploads["encoder"])}
    assert head_sizes.isdisjoint(encoder_sizes)  # no head hides under another name
    assert_trees_equal(fedper.server["params"]["head"], fedper.server0["params"]["head"])


# --- local training only -------------------------------------------------------------------------


def test_local_never_communicates():
    local = baseline_run("local")
    assert jax.tree.leaves(local.uploads) == []
    assert_trees_equal(local.server, local.server0)
    assert_trees_equal(local.server2, local.server0)
    assert not trees_close(local.clients, local.clients0)  # the clients trained


def test_local_models_are_each_clients_own_training_from_the_common_start():
    local = baseline_run("local")
    cfg = config("local")
    update_key = jax.random.split(ROUND_KEY, 3)[0]
    keys = jax.random.split(update_key, K)
    train = jax.jit(
        lambda data, key: train_from(
            TASK, local.server0, data, key, common.optimizer(cfg), common.local_schedule(cfg)
        )[0]
    )
    for k in range(K):
        own = train(client(FED.train, k), keys[k])
        assert_trees_equal(client(local.clients, k), own, atol=1e-6)


# --- FedAvg-FT -----------------------------------------------------------------------------------


FINETUNE_EPOCHS = 3  # not the 2 local epochs: the test tells the two schedules apart


def test_fedavg_ft_personalises_by_fine_tuning_the_current_global_model():
    ft = baseline_run("fedavg_ft", finetune_epochs=FINETUNE_EPOCHS)
    cfg = config("fedavg_ft", finetune_epochs=FINETUNE_EPOCHS)
    personal_key = jax.random.split(ROUND_KEY, 3)[2]
    keys = jax.random.split(personal_key, K)
    finetune = Schedule(cfg.batch_size, epochs=FINETUNE_EPOCHS, drop_last=cfg.drop_last)
    tune = jax.jit(
        lambda data, key: train_from(TASK, ft.server, data, key, common.optimizer(cfg), finetune)[0]
    )
    assert not trees_close(ft.server, ft.server0)  # the global model of round 1, not the init
    for k in range(K):
        model = client(ft.models, k)
        assert_trees_equal(model, tune(client(FED.train, k), keys[k]), atol=1e-6)
        assert not trees_close(model, ft.server), k


def test_fedavg_ft_trains_the_global_model_like_fedavg():
    ft, fedavg = baseline_run("fedavg_ft", finetune_epochs=FINETUNE_EPOCHS), baseline_run("fedavg")
    assert_trees_equal(ft.server, fedavg.server, atol=1e-6)


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_global_model_algorithms_evaluate_the_global_model(name):
    run = baseline_run(name)
    for k in range(K):
        assert_trees_equal(client(run.models, k), run.server)


def test_readme_lists_every_algorithm_and_track_from_the_registry():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- algorithms:")
    section = readme[readme.index("\n", start) + 1 : readme.index("<!-- /algorithms -->")]
    assert section.strip() == registry.tracks_table()


def test_resolved_options_fill_in_defaults_and_presets():
    """A run's id names only the options its config gives; its record keeps what they meant."""
    config = ml_collections.ConfigDict({"algorithm": "fedlog_released", "fedlog": {"beta": 0.1}})
    fedlog = registry.resolved_options(config)["fedlog"]
    assert (fedlog["preset"], fedlog["prompt"], fedlog["prompt_dropout"], fedlog["beta"]) == (
        "released",
        "random",
        True,
        0.1,
    )
    assert registry.resolved_options(ml_collections.ConfigDict({"algorithm": "local"})) == {}
