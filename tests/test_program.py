"""Runs batched on a leading runs axis: padding and sharing of federations, grouping, and a
batched run matching the single runs it stands for."""

import jax
import numpy as np
import pytest

import fedjax_syn.runs.ledger as ledger_lib
from fedjax_syn.algorithms import registry
from fedjax_syn.core.errors import UserError
from fedjax_syn.runs import program
from fedjax_syn.runs.config import default_config, group_runs, run_id
from tests.engine_fixtures import make_federation


def test_stacking_pads_every_run_to_common_shapes_and_shares_equal_leaves():
    small = make_federation(sizes=(7, 12, 3), seed=0)
    large = make_federation(sizes=(20, 5, 9), seed=3)
    stacked, axes = program.stack_federations([small, large])
    assert stacked.train.inputs.shape == (2, 3, 20, small.train.inputs.shape[-1])
    assert axes.train.inputs == 0 and axes.client_mask is None  # every client is real in both
    # Run 0 is padded from 12 to 20 examples; the padding is zero and masked out.
    np.testing.assert_array_equal(stacked.train.inputs[0, :, :12], small.train.inputs)
    assert not np.asarray(stacked.train.mask[0, :, 12:]).any()
    assert not np.asarray(stacked.train.inputs[0, :, 12:]).any()
    for i, fed in enumerate((small, large)):
        assert int(stacked.train.mask[i].sum()) == int(fed.train.mask.sum())


def test_identical_data_is_passed_once():
    fed = make_federation(seed=1)
    stacked, axes = program.stack_federations([fed, fed, fed])
    assert all(axis is None for axis in jax.tree.leaves(axes, is_leaf=lambda x: x is None))
    assert stacked.train.inputs.shape == fed.train.inputs.shape


def _config(**overrides):
    cfg = default_config()
    cfg.update(dict(num_clients=3, hidden=(16,), batch_size=32, rounds=3))
    cfg.update(overrides)
    return cfg


def test_runs_group_when_only_their_data_differ():
    configs = [
        _config(seed=0, alpha=0.1),
        _config(seed=1, alpha=1.0),
        _config(seed=0, lr=0.1),
        _config(seed=2, alpha=0.3),
        _config(seed=1, lr=0.1),
    ]
    assert group_runs(configs) == [[0, 1, 3], [2, 4]]
    assert group_runs(configs, max_runs=2) == [[0, 1], [3], [2, 4]]


def test_runs_that_differ_in_their_program_are_refused_in_one_line():
    with pytest.raises(UserError, match="algorithm") as error:
        program.compile_program([_config(algorithm="fedavg"), _config(algorithm="local")])
    assert "\n" not in str(error.value)


CONFIGS = (dict(seed=0, alpha=0.1), dict(seed=1, alpha=1.0))  # different client sizes: padded


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The two runs of CONFIGS as one program, with the ledger it wrote."""
    ledger = tmp_path_factory.mktemp("batch") / "ledger.jsonl"
    return program.run([_config(**c) for c in CONFIGS], ledger=str(ledger)), ledger


def _assert_same_curves(got, expected):
    for name, curve in expected["curves"].items():
        want = np.asarray(curve, dtype=float)  # None (no examples) -> NaN
        np.testing.assert_allclose(np.asarray(got["curves"][name], float), want, atol=1e-6)


def test_batched_two_seed_run_equals_the_two_single_runs(batch):
    together, ledger = batch
    assert [r["seed"] for r in together] == [0, 1]
    for overrides, got in zip(CONFIGS, together):
        cfg = _config(**overrides)
        single = program.run([cfg])[0]
        assert got["run_id"] == single["run_id"] == run_id(cfg)
        assert set(got) == set(single)
        assert got["eval_rounds"] == single["eval_rounds"] == [1, 2, 3]
        assert got["runs_in_program"] == 2 and single["runs_in_program"] == 1
        assert got["options"] == single["options"] == registry.resolved_options(cfg)
        assert got["options"]["fedavg"]["keep_optimizer_state"] is False  # a default, recorded
        _assert_same_curves(got, single)
        assert got["best"]["round"] == single["best"]["round"]
    stored = ledger_lib.read_ledger(ledger)
    assert [r["run_id"] for r in stored] == [r["run_id"] for r in together]


def test_batched_runs_with_clients_sharded_over_8_devices_match_one_device(batch, multi_device):
    """3 clients on 8 emulated devices: the clients axis is padded to 8 and split after the runs
    axis; the numbers do not change."""
    result = multi_device["batched"]
    assert result["devices"] == [8] and result["client_slots"] == [8]
    assert len(result["curves"]) == len(batch[0]) == 2
    for curves, expected in zip(result["curves"], batch[0], strict=True):
        _assert_same_curves({"curves": curves}, expected)


def test_batched_fedlog_vision_takes_the_local_steps_of_its_single_runs():
    """FedLoG on images has a setup round 0 and no round flag: batched, every round runs each
    client's steps once (a `cond` on a flag would become a `select` and train twice), and a
    run's curves are its single run's. The padded run (the first: its clients are smaller) is
    the one compared; test_batched_two_seed_run_equals_the_two_single_runs checks both."""
    options = dict(algorithm="fedlog_vision", fedlog={"condense_iterations": 1}, rounds=2)
    together = program.run([_config(**c, **options) for c in CONFIGS])
    single = program.run([_config(**CONFIGS[0], **options)])[0]
    got = together[0]
    assert got["eval_rounds"] == single["eval_rounds"] == [0, 1]
    assert got["curves"]["train_steps"] == single["curves"]["train_steps"]
    assert min(single["curves"]["train_steps"]) >= 1
    _assert_same_curves(got, single)
