"""Run checkpoints: exact roundtrip, atomic saves, and fallback past damaged steps."""

import gc
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_syn.core.errors import UserError
from fedjax_syn.runs.checkpoint import RunCheckpointer

# Orbax abandons its other pending shard reads once one fails; when those coroutines are collected
# Python reports them as "exception ignored", in whichever test of the module the collection
# happens to fall. The restores themselves fail and fall back as the tests assert.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

_LOGGER = "fedjax_syn.runs.checkpoint"


def make_state(seed: int):
    """A federated-style state: params, an adam state, typed and raw keys, a clients axis."""
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(64,)), jnp.float32),
    }
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = opt.update(grads, opt_state, params)  # non-trivial mu, nu and count
    return {
        "server": params,
        "opt": opt_state,
        "clients": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),  # [clients, ...]
        "key": jax.random.key(seed),
        "raw_key": jax.random.key_data(jax.random.key(seed + 100)),
        "round": np.int64(seed),
    }


def assert_states_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert x.dtype == y.dtype
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.asarray(x).dtype == np.asarray(y).dtype


def save_steps(directory, steps):
    with RunCheckpointer(directory) as ckpt:
        for step in steps:
            ckpt.save(step, make_state(step), {"round": step, "curves": {"val": [0.5] * step}})


def warnings_from_checkpointer(caplog):
    return [r for r in caplog.records if r.name == _LOGGER and r.levelno == logging.WARNING]


def largest_file(folder: pathlib.Path) -> pathlib.Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_roundtrip_keeps_values_structure_keys_and_meta(tmp_path):
    state = make_state(3)
    meta = {"round": 3, "curves": {"val": [0.25, 0.5], "seen": [0.1, 0.2]}}
    with RunCheckpointer(tmp_path / "ck") as ckpt:
        ckpt.save(3, state, meta)
    with RunCheckpointer(tmp_path / "ck") as fresh:  # a new process would start like this
        step, restored, restored_meta = fresh.restore_latest(state)
    assert step == 3
    assert restored_meta == meta
    assert isinstance(restored["opt"][0], optax.ScaleByAdamState)
    assert_states_equal(state, restored)
    # The restored typed key drives jax.random exactly like the original.
    np.testing.assert_array_equal(
        jax.random.normal(restored["key"], (3,)), jax.random.normal(state["key"], (3,))
    )


def test_restore_from_empty_directory_is_none(tmp_path):
    with RunCheckpointer(tmp_path / "empty") as ckpt:
        assert ckpt.restore_latest(make_state(0)) is None


def test_max_to_keep_keeps_newest_steps(tmp_path):
    save_steps(tmp_path, [1, 2, 3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3"]


def test_saves_are_published_by_rename_and_leftover_tmp_is_ignored(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # finished before returning
    # A save killed midway leaves only orbax's tmp folder: it must not count as a step.
    partial = tmp_path / "3.orbax-checkpoint-tmp"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")
    with RunCheckpointer(tmp_path) as ckpt:
        step, state, _ = ckpt.restore_latest(make_state(0))
    assert step == 2
    assert_states_equal(state, make_state(2))
    assert not warnings_from_checkpointer(caplog)


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        ("truncated state metadata", lambda step: _truncate(step / "state" / "_METADATA")),
        ("deleted meta", lambda step: (step / "meta" / "metadata").unlink()),
        ("truncated array data", lambda step: _truncate(largest_file(step / "state"))),
        ("flipped byte in array data", lambda step: _flip_byte(largest_file(step / "state"))),
    ],
    ids=lambda d: d[0],
)
def test_damaged_latest_step_falls_back_to_previous(tmp_path, caplog, damage):
    save_steps(tmp_path, [1, 2])
    damage[1](tmp_path / "2")
    caplog.set_level(logging.WARNING)
    with RunCheckpointer(tmp_path) as ckpt:
        step, state, meta = ckpt.restore_latest(make_state(0))
    assert step == 1
    assert meta == {"round": 1, "curves": {"val": [0.5]}}
    assert_states_equal(state, make_state(1))
    (record,) = warnings_from_checkpointer(caplog)
    message = record.getMessage()
    assert "checkpoint step 2" in message and "falling back" in message
    assert "\n" not in message
    gc.collect()  # abandoned reads are collected here, not in another module's test


def test_checksum_mismatch_is_named_as_the_reason(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    # Valid JSON, different content: only the checksum can tell.
    (tmp_path / "2" / "meta" / "metadata").write_text('{"round": 99, "curves": {"val": [0.5]}}')
    caplog.set_level(logging.WARNING)
    with RunCheckpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest(make_state(0))[0] == 1
    (record,) = warnings_from_checkpointer(caplog)
    assert "checksum mismatch" in record.getMessage()


def test_all_steps_damaged_gives_none(tmp_path, caplog):
    save_steps(tmp_path, [1, 2])
    for step in ("1", "2"):
        _truncate(tmp_path / step / "state" / "_METADATA")
    caplog.set_level(logging.WARNING)
    with RunCheckpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest(make_state(0)) is None
    messages = [r.getMessage() for r in warnings_from_checkpointer(caplog)]
    assert len(messages) == 2
    assert "step 2" in messages[0] and "step 1" in messages[1]


def test_saving_after_fallback_sets_damaged_step_aside(tmp_path):
    save_steps(tmp_path, [1, 2])
    (tmp_path / "2" / "meta" / "metadata").unlink()
    with RunCheckpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest(make_state(0))[0] == 1
        ckpt.save(2, make_state(20), {"round": 2})  # the resumed run reaches step 2 again
        step, state, meta = ckpt.restore_latest(make_state(0))
    assert (step, meta) == (2, {"round": 2})
    assert_states_equal(state, make_state(20))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("2.unusable-")]


def test_saving_at_or_below_latest_step_is_refused(tmp_path):
    save_steps(tmp_path, [5])
    with RunCheckpointer(tmp_path) as ckpt, pytest.raises(UserError, match="already holds step 5"):
        ckpt.save(5, make_state(0), {})
