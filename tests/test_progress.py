"""`--mode=plan`: where a sweep stands, read from its grid, ledger and checkpoint folder without
running, claiming or writing anything."""

import fcntl
import json
import pathlib
import subprocess
import sys

from experiments.configs import digits_table
from fedjax_syn.runs import progress, sweep
from fedjax_syn.runs.config import run_id
from fedjax_syn.runs.grid import grid_configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def _sweep():
    """digits_table's grid narrowed to 2 algorithms x 2 alphas x 2 seeds, one program per run."""
    config = digits_table.get_config()
    config.grid = {"algorithm": ["fedavg", "fedprox"], "alpha": [0.1, 1.0], "seed": [0, 1]}
    points = grid_configs(config)
    return config, points, sweep.plan(points, batch_runs=False)


def _record(point, wall, cpu=None):
    return {"run_id": run_id(point), "config": point.to_dict(), "wall_time_s": wall} | (
        {} if cpu is None else {"cpu_time_s": cpu}
    )


def test_newest_step_counts_complete_steps_only(tmp_path):
    assert progress.newest_step(tmp_path / "absent") is None
    for name in ("10", "20", "30.orbax-checkpoint-tmp-1733", "integrity"):
        (tmp_path / name).mkdir()
    assert progress.newest_step(tmp_path) == 20


def test_lock_table_lines_give_the_files_held_not_those_waited_for(tmp_path):
    table = tmp_path / "locks"
    table.write_text(
        "1: FLOCK  ADVISORY  WRITE 8966 08:01:1234567 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 9001 08:01:1234567 0 EOF\n"
        "2: POSIX  ADVISORY  WRITE 77 00:1f:42 0 EOF\n"
        "3: FLOCK  ADVISORY  WRITE 9009 fd:0a:99 0 EOF\n"
    )
    assert progress.held_flocks(str(table)) == {(8, 1, 1234567), (253, 10, 99)}
    assert progress.held_flocks(str(tmp_path / "no_such_table")) is None


def test_states_follow_the_ledger_the_checkpoints_and_a_held_claim(tmp_path):
    _, _, jobs = _sweep()
    done, started, running = jobs[0], jobs[1], jobs[2]
    (tmp_path / started.name / "30").mkdir(parents=True)
    (tmp_path / running.name / "10").mkdir(parents=True)
    lock = tmp_path / f"{running.name}.lock"
    (tmp_path / f"{started.name}.lock").touch()  # left by a killed process: nobody holds it
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a sweep's claim takes
        held = progress.held_flocks()
        states = progress.job_progress(jobs, set(done.run_ids), tmp_path, held)
    if sys.platform.startswith("linux"):  # where the lock table is
        assert states[2] == progress.JobProgress(running, "running", 10)
    assert states[0] == progress.JobProgress(done, "done")
    assert states[1] == progress.JobProgress(started, "started", 30)
    assert [s.state for s in states[3:]] == ["pending"] * (len(jobs) - 3)
    # Reading the states took no claim: a sweep process could claim every program meanwhile.
    with open(tmp_path / f"{started.name}.lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_report_counts_each_group_and_estimates_from_finished_runs_of_the_same_settings(
    tmp_path,
):
    config, points, jobs = _sweep()
    by_key = {(p.algorithm, p.alpha, p.seed): p for p in points}
    records = [
        _record(by_key["fedavg", 0.1, 0], 100.0),
        _record(by_key["fedavg", 1.0, 0], 50.0),
        _record(by_key["fedavg", 1.0, 1], 70.0),
        _record(by_key["fedprox", 1.0, 0], 3480.0 * 3, cpu=3480.0),  # paused for 2 h
    ]
    (tmp_path / _job_of(jobs, by_key["fedprox", 1.0, 1]).name / "40").mkdir(parents=True)
    done = {r["run_id"] for r in records}
    states = progress.job_progress(jobs, done, tmp_path)
    lines = progress.report(config, states, records).splitlines()
    # A row per value of every axis but seed and algorithm. alpha 0.1: fedavg seed 1 estimated
    # from seed 0 (100 s); neither fedprox run has a finished run of its settings.
    assert lines[0] == (
        "alpha=0.1: 1/4 done, 3 pending; 0.0 h spent, about 0.0 h left for 1 run, "
        "no estimate for 2 (no finished run shares their settings)"
    )
    # alpha 1.0: fedprox seed 1 started, estimated from seed 0's CPU time (about 1 h, where its
    # wall time was 2.9 h); fedavg's 120 s and fedprox's 2.9 h spent.
    assert lines[1] == (
        "alpha=1.0: 3/4 done, 1 started (checkpointed at 40); 2.9 h spent, about 1.0 h left for "
        "1 run"
    )
    assert lines[2] == (
        "total: 4/8 done, 1 started (checkpointed at 40), 3 pending; 3.0 h spent, about 1.0 h "
        "left for 2 runs, no estimate for 2 (no finished run shares their settings)"
    )


def _job_of(jobs, point):
    return next(job for job in jobs if job.run_ids == (run_id(point),))


def test_plan_mode_prints_the_standing_and_writes_nothing(tmp_path):
    _, points, _ = _sweep()
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(_record(points[0], 7200.0)) + "\n")
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.main",
            "--mode=plan",
            "--config=experiments/configs/digits_table.py",
            "--grid=algorithm=fedavg,fedprox;alpha=0.1,1.0;seed=0,1",
            f"--ledger={ledger}",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("total: 1/8 done, 7 pending; 2.0 h spent")
    assert sorted(tmp_path.rglob("*")) == before
