"""Sweeps: grid expansion, planning runs into programs, skipping finished runs, and resuming
after `kill -9` with bit-identical final metrics."""

import fcntl
import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import pytest

import fedjax_syn.runs.ledger as ledger_lib
from fedjax_syn.algorithms import registry
from fedjax_syn.core.errors import UserError
from fedjax_syn.report.specs import table_spec
from fedjax_syn.runs import program, sweep
from fedjax_syn.runs.checkpoint import RunCheckpointer, save_state
from fedjax_syn.runs.config import default_config, run_id
from fedjax_syn.runs.grid import grid_configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**grid):
    config = default_config()
    config.grid = grid
    config.table = {"rows": ["dataset", "algorithm"]}
    return config


def test_grid_is_the_product_of_its_axes_without_sweep_fields():
    points = grid_configs(_config(algorithm=("fedavg", "local"), seed=(0, 1, 2)))
    assert [(p.algorithm, p.seed) for p in points] == [
        (a, s) for a in ("fedavg", "local") for s in (0, 1, 2)
    ]
    assert all("grid" not in p and "table" not in p for p in points)
    assert len({run_id(p) for p in points}) == 6


def test_run_id_ignores_how_a_run_executes_but_not_what_it_computes():
    config = default_config()
    plain = run_id(config)
    before = {k: v for k, v in config.to_dict().items() if k != "on_nonfinite"}  # added later
    assert plain == ledger_lib.run_id(before)  # ledgers written before stay valid
    for field, value in [
        ("client_chunk", 1),
        ("eval_example_chunk", 64),
        ("unroll", True),
        ("shard", True),
        ("on_nonfinite", "drop"),
    ]:
        changed = default_config()
        changed[field] = value
        assert run_id(changed) == plain, field
    changed = default_config()
    changed.lr = 0.5
    assert run_id(changed) != plain


def test_grid_reaches_nested_options_and_applies_variants():
    config = _config(variant=("full", "no_cd"), fedlog={"beta": (0.1,)}, algorithm=("fedlog",))
    config.variants = {"full": {}, "no_cd": {"fedlog": {"cd_weight": 0.0}, "lr": 0.5}}
    full, no_cd = grid_configs(config)
    assert full.variant == "full" and dict(full.fedlog) == {"beta": 0.1}
    assert no_cd.variant == "no_cd" and no_cd.lr == 0.5
    assert dict(no_cd.fedlog) == {"beta": 0.1, "cd_weight": 0.0}
    assert "variants" not in no_cd


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ({"alpah": (0.1,)}, r"'alpah' is not a config field; did you mean alpha\?"),
        ({"seed": {"x": (1,)}}, "seed"),
        ({"variant": ("nope",)}, "nope"),
        ({"seed": ()}, "non-empty"),
    ],
)
def test_bad_grid_is_a_one_line_user_error(grid, fragment):
    with pytest.raises(UserError, match=fragment) as error:
        grid_configs(_config(**grid))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("field", ["client_chunk", "unroll", "on_nonfinite"])
def test_a_field_left_out_of_the_run_id_is_not_a_grid_axis(field):
    """Its points would be one run: the grid refuses it and says how to set it instead."""
    values = {"client_chunk": (0, 4), "unroll": (False, True), "on_nonfinite": ("stop", "drop")}
    with pytest.raises(UserError, match=rf"grid axis '{field}' .* --config\.{field}=VALUE"):
        grid_configs(_config(**{field: values[field]}))


def test_plan_names_a_run_given_twice_and_what_tells_its_points_apart():
    first = default_config()
    second = default_config()
    second.client_chunk = 4
    with pytest.raises(
        UserError,
        match=rf"run {run_id(first)} \(digits fedavg seed=0\) twice; its points differ only in "
        r"client_chunk,",
    ):
        sweep.plan([first, second])


def test_plan_batches_runs_that_differ_only_in_data():
    points = grid_configs(_config(algorithm=("fedavg", "local"), alpha=(0.1, 1.0), seed=(0, 1)))
    jobs = sweep.plan(points)
    assert [len(j.configs) for j in jobs] == [4, 4]
    assert all(len(j.configs) > 1 and len({c.algorithm for c in j.configs}) == 1 for j in jobs)
    assert sorted(i for j in jobs for i in j.run_ids) == sorted(run_id(p) for p in points)
    singles = sweep.plan(points, batch_runs=False)
    assert [len(j.configs) for j in singles] == [1] * 8
    capped = sweep.plan(points, max_batch=3)
    assert [len(j.configs) for j in capped] == [3, 1] * 2


def test_plan_runs_one_client_at_a_time_programs_one_run_each():
    config = _config(algorithm=("fedavg",), seed=(0, 1, 2))
    config.client_chunk = 1
    jobs = sweep.plan(grid_configs(config))
    assert [len(j.configs) for j in jobs] == [1] * 3


def test_checkpoints_follow_the_first_round_every_nth_and_the_last():
    # The first round carries compilation and FedLoG's round-0 pretraining: never recomputed.
    assert sweep._checkpoint_rounds(25, 10) == [1, 10, 20, 25]
    assert sweep._checkpoint_rounds(1, 10) == [1]
    assert sweep._checkpoint_rounds(25, 0) == []


def test_table_spec_defaults_to_the_track_settings_and_grid_seeds():
    spec = table_spec(_config(seed=(0, 1, 2)), "digits")
    assert spec.name == "digits" and spec.seeds == (0, 1, 2)
    assert spec.rows == ("dataset", "algorithm")
    assert [c.path for c in spec.columns][:2] == ["best.seen", "last.seen"]


# ---------------------------------------------------------------------------------------------
# kill -9 and resume, through the script, as a user would run it.

_TINY = textwrap.dedent(
    """
    from fedjax_syn.runs.config import default_config

    def get_config():
        config = default_config()
        config.num_clients = 3
        config.hidden = (16,)
        config.batch_size = 32
        config.rounds = 40
        config.grid = {"seed": (0, 1, 2)}
        config.table = {"rows": ("dataset", "algorithm")}
        return config
    """
)


def _command(config, ledger, checkpoints, every=5):
    return [
        sys.executable,
        "-m",
        "experiments.main",
        f"--config={config}",
        f"--ledger={ledger}",
        f"--checkpoint_dir={checkpoints}",
        f"--checkpoint_every={every}",
        "--max_batch=2",  # seeds 0, 1 batched; seed 2 alone: both program kinds resume
        "--noprogress",
    ]


def _has_step(folder: pathlib.Path) -> bool:
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def _kill_when(command, env, log, ready, timeout=240.0):
    """Starts the command, sends SIGKILL as soon as `ready()` holds; returns the log text."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
    text = pathlib.Path(log).read_text()
    assert code == -signal.SIGKILL, f"the run ended before it could be killed:\n{text}"
    return text


def _run(command, env):
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_kill_9_then_rerun_resumes_with_bit_identical_metrics(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(_TINY)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        # Later processes load the programs the first one compiled: the test stays fast.
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    reference = tmp_path / "reference.jsonl"
    _run(_command(config, reference, tmp_path / "unused", every=0), env)  # never checkpoints
    expected = {r["run_id"]: r for r in ledger_lib.read_ledger(reference)}
    assert len(expected) == 3

    ledger, checkpoints = tmp_path / "ledger.jsonl", tmp_path / "checkpoints"
    command = _command(config, ledger, checkpoints)
    points = grid_configs(_load(config))
    batch_job, single_job = sweep.plan(points, max_batch=2)
    assert len(batch_job.run_ids) == 2 and len(single_job.run_ids) == 1

    # 1. Killed inside the batched program, after its first checkpoint.
    _kill_when(command, env, tmp_path / "1.log", lambda: _has_step(checkpoints / batch_job.name))
    assert not ledger.exists()
    # 2. Resumed, then killed inside the single-run program.
    text = _kill_when(
        command, env, tmp_path / "2.log", lambda: _has_step(checkpoints / single_job.name)
    )
    assert f"resumed {batch_job.name} from round " in text
    assert len(ledger_lib.read_ledger(ledger)) == 2
    # 3. Resumed to the end.
    text = _run(command, env)
    assert f"resumed {single_job.name} from round " in text
    assert "skipping 2 of 3 runs" in text

    got = {r["run_id"]: r for r in ledger_lib.read_ledger(ledger)}
    assert got.keys() == expected.keys()
    for rid, record in got.items():
        for field in ("curves", "best", "last", "eval_rounds", "protocol", "config"):
            assert record[field] == expected[rid][field], (rid, field)
    assert not any(checkpoints.iterdir())  # finished programs leave no checkpoints

    # 4. Everything is in the ledger: nothing runs, nothing is appended (the sweep the command
    # runs, called in this process: a fifth process would only repeat the startup).
    lines = []
    records = sweep.run_sweep(
        _load(config),
        ledger=str(ledger),
        checkpoint_dir=checkpoints,
        max_batch=2,
        progress=False,
        log=lines.append,
    )
    assert lines == [f"skipping 3 of 3 runs already in {ledger}"]
    assert [r["run_id"] for r in records] == [r["run_id"] for r in got.values()]
    assert len(ledger_lib.read_ledger(ledger)) == 3


def _load(path: pathlib.Path) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("tiny_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


# ---------------------------------------------------------------------------------------------
# The initial states (FedLoG: all of round 0) are computed once per run, and never on resume.


@pytest.fixture
def counted_inits(monkeypatch):
    """Registers `counting`: fedavg whose `init_client` appends to the list each time the program
    that holds it runs (once for all the vmapped clients and runs)."""
    calls = []

    def build(cfg, task, spec):
        alg = registry.build(
            ml_collections.ConfigDict({**cfg.to_dict(), "algorithm": "fedavg"}), task, spec
        )

        def init_client(server, data, key):
            jax.debug.callback(lambda: calls.append(1))
            return alg.init_client(server, data, key)

        return alg._replace(init_client=init_client)

    monkeypatch.setitem(registry.BUILDERS, "counting", build)
    monkeypatch.setitem(registry.TRACKS, "counting", ("vision",))
    return calls


def _counting_config(seed=0):
    cfg = default_config()
    cfg.update(dict(algorithm="counting", num_clients=3, hidden=(16,), batch_size=32, rounds=3))
    cfg.seed = seed
    return cfg


def test_a_run_computes_its_initial_states_once(counted_inits):
    program.run([_counting_config()])
    assert len(counted_inits) == 1  # vmapped: one callback per execution of the init program
    counted_inits.clear()
    program.run([_counting_config(0), _counting_config(1)])
    assert len(counted_inits) == 1


@pytest.mark.parametrize(
    "seeds, cpu_before, every",
    [((0,), 1000.0, 10), ((0, 1), None, 0)],
    ids=["single", "batched-checkpoint-without-cpu-time-and-saving-off"],
)
def test_a_resumed_run_restores_without_computing_its_initial_states(
    tmp_path, counted_inits, seeds, cpu_before, every
):
    """With saving off (--checkpoint_every=0) a checkpoint an earlier process left still
    resumes, never thrown away with its progress."""
    points = [_counting_config(s) for s in seeds]
    (job,) = sweep.plan(points)
    compiled = program.compile_program(job.configs)
    state = program.advance(compiled, program.initial_state(compiled), 1, None)
    ckpt = RunCheckpointer(tmp_path / job.name)
    save_state(ckpt, state, 7.0, cpu_before)
    ckpt.close()
    # What the run gives without the interruption: the same program, carried on to the end.
    finished = program.advance(compiled, state, compiled.last_round, None)
    expected = program.make_records(compiled, finished, 0.0)
    assert len(expected) == len(seeds) and all(r["eval_rounds"] == [1, 2, 3] for r in expected)
    counted_inits.clear()
    lines = []
    cpu_start = time.process_time()
    got = sweep.run_job(
        job, ledger=None, checkpoint_dir=tmp_path, checkpoint_every=every, log=lines.append
    )
    cpu_now = time.process_time() - cpu_start
    assert lines == [f"resumed {job.name} from round 1 ({tmp_path / job.name})"]
    assert counted_inits == []
    assert [r["curves"] for r in got] == [r["curves"] for r in expected]
    # Time spent is the earlier process's (from its checkpoint) plus this one's, shared equally;
    # CPU time is unknown when the checkpoint did not measure it.
    n = len(seeds)
    assert all(r["wall_time_s"] > 7.0 / n for r in got)
    for r in got:
        if cpu_before is None:
            assert r["cpu_time_s"] is None
        else:
            assert cpu_before / n < r["cpu_time_s"] <= (cpu_before + cpu_now) / n


# ---------------------------------------------------------------------------------------------
# Several processes on one sweep.


def test_a_program_another_process_holds_is_skipped_then_run_once_released(tmp_path):
    """Sweeps sharing a ledger and a checkpoint folder never run one program twice: a program
    whose lock is held (here by this test, as another process would hold it) is skipped, and
    the next sweep runs it once the lock is free."""
    config = default_config()
    config.update(dict(num_clients=3, hidden=(16,), batch_size=32, rounds=2))
    config.grid = {"algorithm": ("fedavg", "local")}
    held, other = sweep.plan(grid_configs(config))
    ledger, checkpoints = tmp_path / "ledger.jsonl", tmp_path / "checkpoints"
    checkpoints.mkdir()
    lines = []
    with open(checkpoints / f"{held.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        records = sweep.run_sweep(
            config, ledger=str(ledger), checkpoint_dir=checkpoints, progress=False, log=lines.append
        )
    assert f"skipping {held.name}: another process is running it" in lines
    assert [r["run_id"] for r in records] == list(other.run_ids)
    assert [r["run_id"] for r in ledger_lib.read_ledger(ledger)] == list(other.run_ids)

    lines.clear()
    records = sweep.run_sweep(
        config, ledger=str(ledger), checkpoint_dir=checkpoints, progress=False, log=lines.append
    )
    assert lines[0] == f"skipping 1 of 2 runs already in {ledger}"
    assert [r["run_id"] for r in records] == [*held.run_ids, *other.run_ids]  # grid order
    assert len(ledger_lib.read_ledger(ledger)) == 2
    assert not any(checkpoints.iterdir())  # neither checkpoints nor lock files are left


@pytest.fixture(scope="module")
def finished_fedavg():
    """(config, its one program, that program's records): a tiny sweep, run once per module."""
    config = default_config()
    config.update(dict(num_clients=3, hidden=(16,), batch_size=32, rounds=2))
    config.grid = {"algorithm": ("fedavg",)}
    (job,) = sweep.plan(grid_configs(config))
    return config, job, sweep.run_job(job, ledger=None, checkpoint_dir=None)


def test_a_program_finished_before_its_cleanup_leaves_no_checkpoint_or_lock_behind(
    tmp_path, finished_fedavg
):
    """Killed after its records were appended but before removing its checkpoints and lock file:
    the next sweep skips the program and removes both."""
    config, job, records = finished_fedavg
    ledger, checkpoints = tmp_path / "ledger.jsonl", tmp_path / "checkpoints"
    ledger_lib.append_new_records(ledger, records)
    (checkpoints / job.name).mkdir(parents=True)
    (checkpoints / f"{job.name}.lock").touch()
    again = sweep.run_sweep(config, ledger=str(ledger), checkpoint_dir=checkpoints, progress=False)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in records]
    assert not any(checkpoints.iterdir())


def test_a_program_another_process_finished_meanwhile_is_skipped_not_rerun(
    tmp_path, monkeypatch, finished_fedavg
):
    """Another process appends the program's records after this sweep read the ledger but before
    it claims the program: the re-read after claiming skips it, and the ledger holds it once."""
    config, job, elsewhere = finished_fedavg
    ledger, checkpoints = tmp_path / "ledger.jsonl", tmp_path / "checkpoints"
    claim = sweep._claim

    def finished_by_another_process(job, checkpoint_dir):
        ledger_lib.append_new_records(ledger, elsewhere)
        return claim(job, checkpoint_dir)

    monkeypatch.setattr(sweep, "_claim", finished_by_another_process)
    monkeypatch.setattr(sweep, "run_job", lambda *a, **k: pytest.fail("ran a finished program"))
    lines = []
    records = sweep.run_sweep(
        config, ledger=str(ledger), checkpoint_dir=checkpoints, progress=False, log=lines.append
    )
    assert lines == [f"skipping {job.name}: another process finished it"]
    assert [r["run_id"] for r in records] == [r["run_id"] for r in elsewhere]
    assert len(ledger_lib.read_ledger(ledger)) == 1
