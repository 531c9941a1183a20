"""Tests of image condensation: distances, DSA, sampling, gradient and distribution matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.condense import (
    CondenseConfig,
    DSAConfig,
    augment,
    condense,
    condense_client,
    evaluate_synthetic,
    gradient_distance,
    random_subset,
)
from fedjax_syn.condense.augment import sample_params
from fedjax_syn.condense.core import init_nets, init_synthetic, sample_class_indices
from fedjax_syn.condense.gradient_matching import class_distances
from fedjax_syn.core.errors import UserError
from fedjax_syn.data.vision import load_vision
from fedjax_syn.models.vision import MLP, ConvNet

MODEL = MLP(10, hidden=(64,))
CONVNET = ConvNet(10, width=16, depth=1)
GM = CondenseConfig(method="gm", ipc=10, iterations=20)
SMALL_GM = CondenseConfig(ipc=2, iterations=2, outer_loop=2, inner_loop=2, batch_real=32)

_condense = jax.jit(condense_client, static_argnames=("config", "model"))
_init = jax.jit(init_synthetic, static_argnames=("num_classes", "ipc", "init"))


def _numpy_one_minus_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6)


def _random_tree(seed: int):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.normal(size=(3, 3, 2, 4)), "bias": rng.normal(size=4)},
        "dense": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=3)},
    }


# --- distances -----------------------------------------------------------------------------------


def test_layerwise_cos_is_zero_for_identical_gradients():
    tree = jax.tree.map(jnp.asarray, _random_tree(0))
    assert float(gradient_distance(tree, tree)) == pytest.approx(0.0, abs=1e-5)


def test_layerwise_cos_ignores_positive_rescaling_of_output_units():
    real = jax.tree.map(jnp.asarray, _random_tree(0))
    syn = jax.tree.map(jnp.asarray, _random_tree(1))
    rng = np.random.default_rng(2)
    # A positive factor per output unit (last axis in flax layout) leaves every row's cosine.
    rescaled = jax.tree.map(lambda g: g * rng.uniform(0.1, 10.0, size=g.shape[-1]), syn)
    assert float(gradient_distance(real, rescaled)) == pytest.approx(
        float(gradient_distance(real, syn)), rel=1e-5
    )
    # Rescaling a whole input slice instead is not an invariance: the test could fail.
    skewed = jax.tree.map(lambda g: g.at[..., 0, :].multiply(10.0) if g.ndim > 1 else g, syn)
    assert abs(float(gradient_distance(real, skewed)) - float(gradient_distance(real, syn))) > 1e-3


def test_layerwise_cos_ignores_rank_one_tensors():
    real = jax.tree.map(jnp.asarray, _random_tree(0))
    syn = jax.tree.map(jnp.asarray, _random_tree(1))
    other_biases = {k: {**v, "bias": -v["bias"] * 3.0} for k, v in syn.items()}
    assert float(gradient_distance(real, other_biases)) == pytest.approx(
        float(gradient_distance(real, syn)), rel=1e-6
    )
    only_biases = {"b": jnp.ones(3)}
    assert float(gradient_distance(only_biases, {"b": -jnp.ones(3)})) == 0.0


@pytest.mark.parametrize("name", ["dense", "conv"])
def test_layerwise_cos_matches_hand_computation(name):
    real, syn = _random_tree(0)[name]["kernel"], _random_tree(1)[name]["kernel"]
    # Independent reference: one row per output unit o = the kernel slice [..., o], flattened.
    expected = sum(
        _numpy_one_minus_cos(real[..., o].ravel(), syn[..., o].ravel())
        for o in range(real.shape[-1])
    )
    got = float(gradient_distance({"k": jnp.asarray(real)}, {"k": jnp.asarray(syn)}))
    assert got == pytest.approx(expected, rel=1e-5)
    # Taking rows along the first axis (PyTorch's layout) gives another value.
    wrong = sum(_numpy_one_minus_cos(real[i].ravel(), syn[i].ravel()) for i in range(real.shape[0]))
    assert abs(wrong - expected) > 1e-3


def test_mse_and_cos_match_hand_computation():
    real, syn = _random_tree(0), _random_tree(1)
    flat_real = np.concatenate([np.ravel(v) for v in jax.tree.leaves(real)])
    flat_syn = np.concatenate([np.ravel(v) for v in jax.tree.leaves(syn)])
    real_j, syn_j = jax.tree.map(jnp.asarray, real), jax.tree.map(jnp.asarray, syn)
    assert float(gradient_distance(real_j, syn_j, "mse")) == pytest.approx(
        np.sum((flat_real - flat_syn) ** 2), rel=1e-5
    )
    assert float(gradient_distance(real_j, syn_j, "cos")) == pytest.approx(
        _numpy_one_minus_cos(flat_real, flat_syn), rel=1e-5
    )
    with pytest.raises(UserError, match="gradient distance"):
        gradient_distance(real_j, syn_j, "l1")


def test_distance_gradient_is_finite_when_a_unit_is_dead():
    real = jnp.asarray(_random_tree(0)["dense"]["kernel"])
    syn = jnp.asarray(_random_tree(1)["dense"]["kernel"]).at[:, 1].set(0.0)
    grad = jax.grad(lambda s: gradient_distance({"k": real}, {"k": s}))(syn)
    assert bool(jnp.all(jnp.isfinite(grad)))


# --- sampling, initialisation, DSA ------------------------------------------------------------------


def test_sampling_skips_padding_and_repeats_only_when_a_class_is_short():
    y = jnp.array([0, 0, 0, 0, 0, 1, 1, 2, 0, 1])
    mask = jnp.array([True] * 8 + [False, False])  # the last two are padding
    sample = jax.jit(sample_class_indices, static_argnums=(3, 4))
    idx, first = sample(jax.random.key(0), y, mask, 4, 3)
    idx, first = np.asarray(idx), np.asarray(first)
    assert set(idx[0]) <= {0, 1, 2, 3, 4} and len(set(idx[0])) == 3  # no repeats, no padding
    assert sorted(idx[1][first[1]]) == [5, 6] and idx[1][2] in (5, 6)  # short class: repeats
    assert list(first[2]) == [True, False, False] and idx[2][0] == 7
    assert not first[3].any()  # absent class: nothing counts


@jax.jit
def _both_inits(key, x, y, mask):
    return {init: init_synthetic(key, x, y, mask, 3, 2, init) for init in ("real", "noise")}


def test_init_zeroes_absent_classes():
    x = jnp.ones((6, 4, 4, 1))
    y = jnp.array([0, 0, 1, 1, 2, 2])
    mask = jnp.array([True, True, True, True, False, False])
    for syn, class_mask in _both_inits(jax.random.key(0), x, y, mask).values():
        assert syn.shape == (3, 2, 4, 4, 1)
        assert list(np.asarray(class_mask)) == [True, True, False]
        assert float(jnp.abs(syn[2]).max()) == 0.0 and float(jnp.abs(syn[:2]).min()) > 0.0


CROP = DSAConfig(strategy=("crop",))


@pytest.fixture(scope="module")
def dsa_outputs():
    """All DSA probes in one compiled function (compiling is the slow part on CPU)."""

    @jax.jit
    def probe(key, x):
        every = DSAConfig(mode="all")
        return {
            "whole": augment(key, x, every),
            "parts": jnp.concatenate([augment(key, x[:3], every), augment(key, x[3:], every)]),
            "grad": jax.grad(lambda v: jnp.sum(augment(key, v, every) ** 2))(x),
            "crop": augment(key, x, CROP),
            "shift": sample_params(key, x.shape[1], x.shape[2], CROP).shift,
        }

    x = jax.random.normal(jax.random.key(0), (6, 16, 16, 3))
    return x, probe(jax.random.key(3), x)


def test_dsa_is_siamese_and_differentiable(dsa_outputs):
    x, out = dsa_outputs
    np.testing.assert_allclose(out["whole"], out["parts"], atol=1e-6)  # one draw for the batch
    assert float(jnp.abs(out["whole"] - x).mean()) > 0.1
    assert bool(jnp.all(jnp.isfinite(out["grad"]))) and float(jnp.abs(out["grad"]).sum()) > 0.0


def test_dsa_crop_is_an_integer_shift_with_zero_fill(dsa_outputs):
    x, out = dsa_outputs
    x = np.asarray(x)
    dr, dc = (int(v) for v in out["shift"])
    assert (dr, dc) != (0, 0) and max(abs(dr), abs(dc)) <= 2
    expected = np.zeros_like(x)
    rows, cols = slice(max(0, -dr), min(16, 16 - dr)), slice(max(0, -dc), min(16, 16 - dc))
    src_rows = slice(rows.start + dr, rows.stop + dr)
    src_cols = slice(cols.start + dc, cols.stop + dc)
    expected[:, rows, cols] = x[:, src_rows, src_cols]
    np.testing.assert_allclose(out["crop"], expected, atol=1e-5)


def test_class_batchings_give_the_same_distances():
    x = jax.random.normal(jax.random.key(0), (10, 3, 8, 8, 1))
    real = jax.random.normal(jax.random.key(1), (10, 5, 8, 8, 1))
    weights = jnp.ones((10, 5)).at[4, 2:].set(0.0)

    @jax.jit
    def distances(key):
        params = jax.tree.map(lambda p: p[0], init_nets(key, MODEL, x[0], 1))
        return [
            class_distances(
                params, x, real, weights, key, config=CondenseConfig(class_batching=b), model=MODEL
            )
            for b in ("vmap", "map", "loop")
        ]

    vmapped, mapped, looped = distances(jax.random.key(2))
    assert vmapped.shape == (10,) and float(vmapped.min()) > 0.0
    np.testing.assert_allclose(mapped, vmapped, rtol=1e-5)
    np.testing.assert_allclose(looped, vmapped, rtol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(UserError, match="condensation method"):
        CondenseConfig(method="kip")
    with pytest.raises(UserError, match="outer_loop"):
        CondenseConfig(ipc=7)
    CondenseConfig(ipc=7, outer_loop=5, inner_loop=5)
    CondenseConfig(method="dm", ipc=7)  # distribution matching has no loops
    with pytest.raises(UserError, match="DSA transform"):
        DSAConfig(strategy=("shear",))


# --- gradient matching on real digits --------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    ds = load_vision("digits")
    return ds, jnp.asarray(ds.train_x), jnp.asarray(ds.train_y), jnp.ones(len(ds.train_y), bool)


def _start(x, y, mask, key, config):
    """The synthetic set condense_client(..., key) starts from."""
    return _init(jax.random.split(key)[0], x, y, mask, 10, config.ipc, config.init)[0]


def _losses(ds, **kwargs) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """condense() on digits; every iteration's loss is measured on networks and real batches
    drawn fresh for it, before its update: a held-out measurement."""
    losses = []
    syn_x, syn_y = condense(
        ds.train_x,
        ds.train_y,
        10,
        key=jax.random.key(0),
        on_iteration=lambda i, loss: losses.append(loss),
        **kwargs,
    )
    return syn_x, syn_y, losses


def test_gradient_matching_reduces_loss_on_fresh_networks(digits):
    syn_x, syn_y, losses = _losses(digits[0], method="gm", ipc=1, iterations=20, model=CONVNET)
    assert syn_x.shape == (10, 8, 8, 1) and list(syn_y) == list(range(10))
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_resuming_from_a_saved_state_ends_where_an_uninterrupted_run_does(digits):
    """condense()'s checkpoint hooks: the state saved after two of four iterations, handed back
    by `resume`, gives the same synthetic set as four iterations in one go (images and momentum:
    a run resumed without its optimiser state ends elsewhere)."""
    ds = digits[0]
    common = dict(method="dm", ipc=2, iterations=4, model=MLP(10, (16,)), key=jax.random.key(3))
    saved = {}
    whole, _ = condense(ds.train_x, ds.train_y, 10, save=saved.__setitem__, **common)
    assert sorted(saved) == [1, 2, 3, 4]
    resumed, _ = condense(ds.train_x, ds.train_y, 10, resume=lambda _: (2, saved[2]), **common)
    np.testing.assert_array_equal(resumed, whole)
    images, _ = saved[2]
    fresh_momentum = lambda start: (2, (images, start[1]))
    elsewhere, _ = condense(ds.train_x, ds.train_y, 10, resume=fresh_momentum, **common)
    assert not np.array_equal(elsewhere, whole)
    with pytest.raises(UserError, match=r"resumed after 5 iterations, outside 0\.\.4"):
        condense(ds.train_x, ds.train_y, 10, resume=lambda _: (5, saved[4]), **common)


def test_condensed_set_beats_random_real_subsets(digits):
    ds, x, y, mask = digits
    key = jax.random.key(0)
    syn, _ = _condense(x, y, mask, key, config=GM, model=MODEL)
    start = _start(x, y, mask, key, GM)
    labels = np.repeat(np.arange(10), 10)

    def accuracy(train_x, train_y):
        acc = evaluate_synthetic(
            jax.random.key(1), MODEL, train_x, train_y, ds.test_x, ds.test_y, num_nets=6, epochs=100
        )
        return float(acc.mean())

    condensed = accuracy(np.asarray(syn).reshape(100, 8, 8, 1), labels)
    own_start = accuracy(np.asarray(start).reshape(100, 8, 8, 1), labels)
    rng = np.random.default_rng(0)
    others = [accuracy(*random_subset(rng, ds.train_x, ds.train_y, 10, 10)) for _ in range(2)]
    random_mean = float(np.mean([own_start, *others]))
    assert condensed > own_start + 0.01
    assert condensed > random_mean + 0.015


def _clients(ds):
    """Three padded clients cut from digits; client 1 lacks classes 3 and 7."""
    x, y = ds.train_x, ds.train_y
    parts = [np.arange(0, 150), np.flatnonzero((y != 3) & (y != 7))[150:250], np.arange(400, 460)]
    n = max(len(p) for p in parts)
    xs = np.zeros((3, n, *x.shape[1:]), np.float32)
    ys = np.zeros((3, n), np.int32)
    masks = np.zeros((3, n), bool)
    for k, p in enumerate(parts):
        xs[k, : len(p)], ys[k, : len(p)], masks[k, : len(p)] = x[p], y[p], True
        ys[k, len(p) :] = 3  # padding carries a label of a class client 1 lacks
    return jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(masks)


def test_vmapped_clients_equal_separate_runs_and_mask_missing_classes(digits):
    """Clients condense against one shared network (e.g. the global model) plus a fresh one."""
    xs, ys, masks = _clients(digits[0])
    keys = jax.random.split(jax.random.key(5), 3)
    params = MODEL.init(jax.random.key(7), xs[0, :1])
    batched = jax.jit(
        jax.vmap(
            lambda x, y, m, k, p: condense_client(
                x, y, m, k, config=SMALL_GM, model=MODEL, params=p
            ),
            in_axes=(0, 0, 0, 0, None),
        )
    )
    syn, class_mask = batched(xs, ys, masks, keys, params)
    assert syn.shape == (3, 10, 2, 8, 8, 1) and class_mask.shape == (3, 10)
    for k in range(3):
        one, one_mask = _condense(
            xs[k], ys[k], masks[k], keys[k], config=SMALL_GM, model=MODEL, params=params
        )
        np.testing.assert_allclose(syn[k], one, atol=1e-5)
        np.testing.assert_array_equal(class_mask[k], one_mask)
    missing = ~np.asarray(class_mask[1])
    assert list(np.flatnonzero(missing)) == [3, 7]
    assert float(jnp.abs(syn[1][missing]).max()) == 0.0
    assert float(jnp.abs(syn[1][~missing]).min()) > 0.0
    with pytest.raises(UserError, match="num_nets"):
        condense_client(
            xs[0], ys[0], masks[0], keys[0], config=CondenseConfig(ipc=1, num_nets=0), model=MODEL
        )


# --- distribution matching ---------------------------------------------------------------------------


def test_distribution_matching_with_dsa_reduces_loss_on_fresh_networks(digits):
    syn_x, syn_y, losses = _losses(
        digits[0], method="dm", ipc=5, iterations=30, model=MODEL, dsa=True, batch_real=64
    )
    assert syn_x.shape == (50, 8, 8, 1) and list(syn_y) == list(np.repeat(np.arange(10), 5))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
