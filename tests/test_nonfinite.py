"""NaN or Inf inside a round: flagged per client in the jitted round, then either the run stops
(its last checkpoint kept) or that client's update is dropped for the round (`on_nonfinite`)."""

import functools
import pathlib
import shutil

import jax
import numpy as np
import pytest

from fedjax_syn.core.errors import NonFiniteError, UserError
from fedjax_syn.engine.round import EngineConfig, make_init, make_round
from fedjax_syn.runs import program, sweep
from fedjax_syn.runs.config import default_config, run_id
from tests.engine_fixtures import algorithm, assert_trees_close, make_federation

# ---------------------------------------------------------------------------------------------
# The engine: 3 real clients and a padded one; client 1's training inputs turn NaN.


def _poison(fed, client: int, run: int | None = None):
    """`fed` with client `client`'s training inputs NaN (in run `run` of a stacked federation)."""
    inputs = np.array(fed.train.inputs)
    inputs[(client,) if run is None else (run, client)] = np.nan
    return fed.replace(train=fed.train.replace(inputs=jax.numpy.asarray(inputs)))


def _mask_out(fed, client: int):
    """`fed` with client `client` left out of the server update (`client_mask` False)."""
    mask = np.array(fed.client_mask)
    mask[..., client] = False  # in every run of a stacked federation
    return fed.replace(client_mask=jax.numpy.asarray(mask))


@functools.cache
def _programs(mode: str):
    alg = algorithm("fedper")  # a client state (its head) and a server state (the body)
    config = EngineConfig(donate=False, on_nonfinite=mode)
    return make_init(alg, config), make_round(alg, config)


def _after_one_round(mode: str):
    """(federation, server, clients) after a healthy round 1."""
    fed = make_federation(pad_clients_to=4)
    init, round_fn = _programs(mode)
    key = jax.random.key(0)
    server, clients, _ = init(fed, key)
    server, clients, _ = round_fn(server, clients, fed, jax.random.fold_in(key, 1), evaluate=False)
    return fed, server, clients


def _client(tree, k: int):
    return jax.tree.map(lambda leaf: np.asarray(leaf[k]), tree)


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_healthy_rounds_are_the_same_whatever_the_mode():
    """Dropping is `where` on all-true flags: the numbers of "stop", which only reads. Up to float
    rounding: they are two programs, which XLA may fuse, and so round, differently."""
    fed, server, clients = _after_one_round("stop")
    key = jax.random.key(5)
    outputs = {
        mode: _programs(mode)[1](server, clients, fed, key, evaluate=True)
        for mode in ("stop", "drop")
    }
    assert_trees_close(outputs["stop"], outputs["drop"], atol=1e-7, rtol=1e-6)
    np.testing.assert_array_equal(outputs["stop"][2]["finite"], [True] * 4)


def test_stop_mode_flags_the_client_and_changes_nothing():
    fed, server, clients = _after_one_round("stop")
    _, round_fn = _programs("stop")
    _, new_clients, metrics = round_fn(server, clients, _poison(fed, 1), jax.random.key(5), False)
    np.testing.assert_array_equal(metrics["finite"], [True, False, True, True])
    assert np.isnan(jax.tree.leaves(_client(new_clients, 1))[0]).any()  # left as it came out


def test_drop_mode_equals_masking_the_client_out_and_keeps_its_state():
    fed, server, clients = _after_one_round("drop")
    _, round_fn = _programs("drop")
    key = jax.random.key(5)
    d_server, d_clients, dropped = round_fn(server, clients, _poison(fed, 1), key, evaluate=True)
    m_server, m_clients, masked = round_fn(server, clients, _mask_out(fed, 1), key, evaluate=True)
    np.testing.assert_array_equal(dropped["finite"], [True, False, True, True])
    np.testing.assert_array_equal(masked["finite"], [True] * 4)
    _assert_equal(d_server, m_server)
    _assert_equal(dropped["train"], masked["train"])
    for k in (0, 2):
        _assert_equal(_client(d_clients, k), _client(m_clients, k))
        _assert_equal(_client(dropped["counts"], k), _client(masked["counts"], k))
    _assert_equal(_client(d_clients, 1), _client(clients, 1))  # its state before the round
    assert all(int(c["count"][1]) == 0 for c in dropped["counts"]["local"].values())


def test_a_setup_round_is_flagged_too():
    alg = algorithm("fedavg")
    alg = alg._replace(setup_client=alg.client_update)
    init = make_init(alg, EngineConfig(donate=False))
    _, _, metrics = init(_poison(make_federation(), 1), jax.random.key(0))
    np.testing.assert_array_equal(metrics["finite"], [True, False, True])


# ---------------------------------------------------------------------------------------------
# Runs: two runs batched in one program; run 1's client 1 turns NaN in round 2.

POISONED_RUN, POISONED_CLIENT, POISONED_ROUND = 1, 1, 2


def _configs(mode: str) -> list:
    base = default_config()
    base.update(dict(num_clients=3, hidden=(16,), batch_size=32, rounds=3, on_nonfinite=mode))
    return [base.copy_and_resolve_references() for _ in range(2)]


def _job(mode: str) -> sweep.Job:
    configs = _configs(mode)
    configs[1].seed = 1
    (job,) = sweep.plan(configs)
    return job


def _round_on(compiled: program.Program, r: int, fed) -> None:
    """Makes the program's round `r` (told by its round keys, so also after a resume) run on
    `fed`."""
    step = compiled.compiled[True]
    round_keys = jax.random.key_data(program._fold_all(program._base_keys(compiled.cfgs), r))

    def on_fed(server, clients, program_fed, keys):
        is_r = np.array_equal(jax.random.key_data(keys), round_keys)
        return step(server, clients, fed if is_r else program_fed, keys)

    compiled.compiled[True] = on_fed


def _poison_programs(patch: pytest.MonkeyPatch) -> list:
    """Programs that `sweep.run_job` compiles from now on run round POISONED_ROUND on NaN data;
    returns the list of (program, its healthy round) they are added to."""
    made, compile_healthy = [], program.compile_program

    def compile_program(configs):
        compiled = compile_healthy(configs)
        made.append((compiled, compiled.compiled[True]))
        _round_on(compiled, POISONED_ROUND, _poison(compiled.fed, POISONED_CLIENT, POISONED_RUN))
        return compiled

    patch.setattr(sweep.program, "compile_program", compile_program)
    return made


def _steps(folder: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The stop-mode job's error, ledger and checkpoint folder."""
    folder = tmp_path_factory.mktemp("stopped")
    job, ledger = _job("stop"), folder / "ledger.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        made = _poison_programs(patch)
        with pytest.raises(NonFiniteError) as error:
            sweep.run_job(job, ledger=str(ledger), checkpoint_dir=folder, checkpoint_every=1)
    assert len(made) == 1
    return error.value, ledger, folder / job.name


def test_stop_mode_names_run_client_and_round_and_keeps_the_checkpoint_before(stopped):
    error, ledger, checkpoints = stopped
    bad = _job("stop").configs[POISONED_RUN]
    assert isinstance(error, UserError) and "\n" not in str(error)  # the CLI prints one line
    assert str(error).startswith(
        f"non-finite update in run {run_id(bad)} (digits/fedavg seed 1), "
        f"client {POISONED_CLIENT}, round {POISONED_ROUND};"
    )
    assert _steps(checkpoints) == [POISONED_ROUND - 1]  # nothing of the poisoned state saved
    assert not ledger.exists()


def test_drop_mode_resumes_the_stopped_run_and_drops_only_that_update(
    stopped, monkeypatch, tmp_path, caplog
):
    """Switched to "drop", the same runs (same ids) resume from the checkpoint "stop" kept; the
    dropped round equals one where the client is masked out, and the other run is untouched."""
    _, _, checkpoints = stopped
    job, poisoned = _job("drop"), _poison_programs(monkeypatch)
    assert job.name == checkpoints.name
    shutil.copytree(checkpoints, tmp_path / job.name)
    lines = []
    records = sweep.run_job(
        job, ledger=None, checkpoint_dir=tmp_path, checkpoint_every=1, log=lines.append
    )
    assert lines == [f"resumed {job.name} from round {POISONED_ROUND - 1} ({tmp_path / job.name})"]
    assert [r["dropped"] for r in records] == [[], [[POISONED_ROUND, POISONED_CLIENT]]]
    bad = job.configs[POISONED_RUN]
    assert [r.getMessage() for r in caplog.records if r.name == program.__name__] == [
        f"dropped a non-finite update in run {run_id(bad)} (digits/fedavg seed 1), "
        f"client {POISONED_CLIENT}, round {POISONED_ROUND}"
    ]

    ((compiled, healthy_round),) = poisoned
    compiled.compiled[True] = healthy_round
    healthy = _records(compiled)
    _round_on(compiled, POISONED_ROUND, _mask_out(compiled.fed, POISONED_CLIENT))  # every run
    masked = _records(compiled)
    assert records[0]["curves"] == healthy[0]["curves"]
    for name, curve in records[POISONED_RUN]["curves"].items():
        if not name.startswith("local/"):  # a dropped client has no local model that round
            assert curve == masked[POISONED_RUN]["curves"][name], name


def _records(compiled: program.Program) -> list[dict]:
    """The records of the program's runs from the start, uninterrupted."""
    state = program.advance(compiled, program.initial_state(compiled), compiled.last_round)
    return program.make_records(compiled, state, 0.0)


def test_an_unknown_choice_is_a_one_line_user_error():
    from fedjax_syn.runs.validate import validate_run

    cfg = default_config()
    cfg.on_nonfinite = "ignore"
    with pytest.raises(UserError, match="unknown on_nonfinite 'ignore'; allowed: drop, stop"):
        validate_run(cfg)
