"""The differential-privacy wrapper on uploads: the clip bound is exact, the noise has the
promised std, noise 0 with an unreachable clip is the wrapped algorithm bit for bit, the config's
`dp` group reaches the builder without touching other runs' ids, and the accountant's epsilon."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import rdp

from fedjax_syn.algorithms import dp, registry
from fedjax_syn.core.errors import UserError
from fedjax_syn.engine.round import make_init, make_round
from fedjax_syn.privacy import accounting
from fedjax_syn.runs import grid
from fedjax_syn.runs.config import default_config, run_id
from tests.engine_fixtures import SPEC, TASK, config, make_federation


def _tree(key, scale=1.0):
    a, b = jax.random.split(key)
    return {"w": scale * jax.random.normal(a, (7, 3)), "b": scale * jax.random.normal(b, (3,))}


def test_clipping_bounds_the_change_exactly_and_leaves_small_ones_alone():
    reference = _tree(jax.random.key(0))
    far = jax.tree.map(lambda r, d: r + d, reference, _tree(jax.random.key(1), 10.0))
    clipped = dp.clip_part(far, reference, 0.5)
    delta = jax.tree.map(jnp.subtract, clipped, reference)
    np.testing.assert_allclose(dp.global_norm(delta), 0.5, rtol=1e-5)
    near = jax.tree.map(lambda r, d: r + d, reference, _tree(jax.random.key(2), 1e-3))
    kept = dp.clip_part(near, reference, 0.5)
    jax.tree.map(np.testing.assert_array_equal, kept, near)


def test_model_and_data_parts_get_their_own_bounds_and_public_parts_pass():
    upload = {
        "params": _tree(jax.random.key(3), 5.0),
        "x_head": 5.0 * jnp.ones((4, 6)),
        "size": jnp.float32(12.0),
    }
    options = dp.DPOptions(clip_norm=2.0, data_clip_norm=3.0)
    out = dp.privatize(upload, {}, dp.PUBLIC, options, jax.random.key(0))
    np.testing.assert_allclose(dp.global_norm(out["params"]), 2.0, rtol=1e-5)
    np.testing.assert_allclose(dp.global_norm(out["x_head"]), 3.0, rtol=1e-5)
    assert out["size"] == upload["size"]
    assert dp.private_parts(upload) == ["params", "x_head"]
    with pytest.raises(UserError, match="not floating point"):
        dp.privatize({"count": jnp.int32(3)}, {}, (), options, jax.random.key(0))


def test_noise_std_is_noise_multiplier_times_the_parts_bound():
    upload = {"params": jnp.zeros((200, 100)), "syn": jnp.zeros((200, 100))}
    options = dp.DPOptions(clip_norm=0.5, data_clip_norm=2.0, noise_multiplier=2.0)
    out = dp.privatize(upload, {}, dp.PUBLIC, options, jax.random.key(5))
    np.testing.assert_allclose(np.std(out["params"]), 1.0, rtol=0.02)
    np.testing.assert_allclose(np.mean(out["params"]), 0.0, atol=0.02)
    np.testing.assert_allclose(np.std(out["syn"]), 4.0, rtol=0.02)


def _one_round(alg, fed):
    server, clients = make_init(alg)(fed, jax.random.key(0))[:2]
    return make_round(alg)(server, clients, fed, jax.random.key(1), evaluate=False)[0]


def test_no_noise_and_an_unreachable_clip_is_the_algorithm_bit_for_bit():
    fed = make_federation()
    cfg = config("fedprox")
    plain = _one_round(registry.build(cfg, TASK, SPEC), fed)
    wrapped_cfg = config("fedprox")
    wrapped_cfg["dp"] = {"clip_norm": 1e9, "noise_multiplier": 0.0}
    wrapped = registry.build(wrapped_cfg, TASK, SPEC)
    assert wrapped.name == "fedprox+dp"
    jax.tree.map(np.testing.assert_array_equal, _one_round(wrapped, fed), plain)


def test_the_dp_group_is_optional_and_checked():
    assert "dp" not in default_config()
    cfg = default_config()
    before = run_id(cfg)
    grid.set_field(cfg, "dp.noise_multiplier", 1.0)
    assert cfg.dp.noise_multiplier == 1.0 and run_id(cfg) != before
    (point,) = grid.grid_configs(cfg)
    assert point.dp.noise_multiplier == 1.0  # not dropped as another algorithm's options
    registry.check_options(point)
    grid.set_field(cfg, "dp.clip", 1.0)
    with pytest.raises(UserError, match="unknown dp option"):
        registry.check_options(cfg)
    bad = default_config()
    bad.algorithm = "ditto"
    grid.set_field(bad, "dp.noise_multiplier", 1.0)
    with pytest.raises(UserError, match="not defined for algorithm 'ditto'"):
        registry.check_options(bad)


def test_epsilon_falls_with_noise_and_is_dp_accountings():
    eps = [accounting.epsilon(z, 20, 1e-5) for z in (0.5, 1.0, 2.0, 4.0)]
    assert eps == sorted(eps, reverse=True) and len(set(eps)) == len(eps)
    assert accounting.epsilon(0.0, 20, 1e-5) == math.inf
    direct = rdp.RdpAccountant()
    direct.compose(dp_accounting.GaussianDpEvent(1.0), 20)  # multiplier 2 at sensitivity 2
    assert eps[2] == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)
    three_parts = rdp.RdpAccountant()
    three_parts.compose(dp_accounting.GaussianDpEvent(1.0), 60)
    assert accounting.epsilon(2.0, 20, 1e-5, parts=3) == pytest.approx(
        three_parts.get_epsilon(1e-5), rel=1e-12
    )
