"""A real multi-process run: two CPU processes on localhost joined by `jax.distributed`, the
clients axis split over both, stopped after a checkpoint and resumed, against one process.

Each process runs `python -m experiments.main --distributed --config.shard=True` (through
tests/multiprocess_worker.py, which reports what the process saw) with 2 emulated CPU devices, so
the mesh holds 4 devices on 2 processes and cross-process reductions go through gloo, JAX's CPU
collectives. The config is two seeds of FedAvg on digits, one batched program of 2 runs, 3
clients padded to 4 slots, 3 rounds, checkpointed after rounds 1, 2 and 3.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np

from fedjax_syn.runs import sweep
from fedjax_syn.runs.grid import grid_configs
from fedjax_syn.runs.ledger import read_ledger
from tests.multiprocess_worker import STOPPED
from tests.test_sweep import _load

REPO = pathlib.Path(__file__).resolve().parents[1]
PROCESSES = 2
DEVICES_PER_PROCESS = 2
# The server's sums over clients become all-reduces across devices and processes, which add in
# another order than one device's reduction: float32 rounding, ~1e-7 on the training loss
# (accuracies came out identical). 1e-5 absolute leaves room and still catches any real change,
# e.g. a client counted twice or dropped, which moves accuracies by 1e-2 or more.
ATOL = 1e-5
TIMEOUT_S = 120  # per command: a hung collective fails the test instead of blocking CI

_CONFIG = textwrap.dedent(
    """
    from fedjax_syn.runs.config import default_config

    def get_config():
        config = default_config()
        config.num_clients = 3
        config.hidden = (16,)
        config.batch_size = 32
        config.rounds = 3
        config.grid = {"seed": (0, 1)}
        config.table = {"rows": ("dataset", "algorithm")}
        return config
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """A worker's environment: DEVICES_PER_PROCESS emulated CPU devices, gloo collectives."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",  # jax 0.10's default, stated
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
        ),
    }


def _flags(config: pathlib.Path, tmp: pathlib.Path) -> list[str]:
    return [
        f"--config={config}",
        f"--ledger={tmp / 'ledger.jsonl'}",
        f"--checkpoint_dir={tmp / 'checkpoints'}",
        "--checkpoint_every=2",  # after rounds 1, 2 and 3
        "--noprogress",
        f"--compilation_cache_dir={tmp / 'jax_cache'}",  # the resume loads the first compile
    ]


def _run_processes(tmp: pathlib.Path, name: str, flags: list[str], stop_after: int = 0):
    """Starts both processes, waits for both; returns (exit codes, reports, logs). If one fails
    or the time runs out, the other is killed (it would wait on its peer forever)."""
    port = _free_port()
    procs, logs = [], []
    for i in range(PROCESSES):
        log = tmp / f"{name}-{i}.log"
        command = [
            sys.executable,
            "-m",
            "tests.multiprocess_worker",
            str(tmp / f"{name}-{i}.json"),
            str(stop_after),
            *flags,
            "--config.shard=True",
            "--distributed",
            f"--coordinator_address=localhost:{port}",
            f"--num_processes={PROCESSES}",
            f"--process_id={i}",
        ]
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs):
            failed = any(p.returncode not in (None, 0, STOPPED) for p in procs)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    texts = [log.read_text() for log in logs]
    codes = [p.returncode for p in procs]
    reports = [
        json.loads(path.read_text()) if path.exists() else None
        for path in (tmp / f"{name}-{i}.json" for i in range(PROCESSES))
    ]
    return codes, reports, texts


def _describe(codes, texts) -> str:
    return "\n".join(
        f"process {i} exited {c}:\n{t[-3000:]}" for i, (c, t) in enumerate(zip(codes, texts))
    )


def test_two_processes_stopped_and_resumed_equal_one_process(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(_CONFIG)
    (job,) = sweep.plan(grid_configs(_load(config)))  # both seeds in one program
    checkpoints = tmp_path / "checkpoints" / job.name

    # The reference: the sweep the command runs, in this process (one device, no sharding,
    # never checkpointed).
    sweep.run_sweep(
        _load(config),
        ledger=str(tmp_path / "reference.jsonl"),
        checkpoint_dir=None,
        progress=False,
        log=lambda line: None,
    )
    expected = {r["run_id"]: r for r in read_ledger(tmp_path / "reference.jsonl")}
    assert expected.keys() == set(job.run_ids)

    # 1. Two processes, stopped once round 2's checkpoint is on disk.
    flags = _flags(config, tmp_path)
    codes, reports, texts = _run_processes(tmp_path, "stopped", flags, stop_after=2)
    assert codes == [STOPPED, STOPPED], _describe(codes, texts)
    for i, report in enumerate(reports):
        assert report["process_index"] == i and report["process_count"] == PROCESSES
        assert report["local_device_count"] == DEVICES_PER_PROCESS
        assert report["device_count"] == PROCESSES * DEVICES_PER_PROCESS
        assert report["collectives"] == "gloo"
        # 3 clients padded to 4 slots, split over the 4 devices: 2 slots on each process.
        assert report["placed"] == [{"devices": 4, "client_slots": 4, "local_client_slots": 2}]
        assert report["saved_rounds"] == [1, 2]
        assert report["appended"] == 0
    assert not (tmp_path / "ledger.jsonl").exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "2"]
    # The processes share one compilation cache, locked around every entry read or written.
    assert (tmp_path / "jax_cache" / ".lockfile").exists()

    # 2. The same command resumes from round 2 and finishes; process 0 alone writes the ledger.
    codes, reports, texts = _run_processes(tmp_path, "resumed", flags)
    assert codes == [0, 0], _describe(codes, texts)
    assert f"resumed {job.name} from round 2" in texts[0]
    assert [r["saved_rounds"] for r in reports] == [[3], [3]]
    assert [r["appended"] for r in reports] == [len(job.run_ids), 0]
    assert not checkpoints.exists()  # process 0 cleaned up after the records were in

    records = read_ledger(tmp_path / "ledger.jsonl")
    assert sorted(r["run_id"] for r in records) == sorted(job.run_ids)  # one record per run
    for record in records:
        want = expected[record["run_id"]]
        for field in ("eval_rounds", "protocol", "settings"):
            assert record[field] == want[field], field
        assert record["config"] == {**want["config"], "shard": True}
        assert record["curves"].keys() == want["curves"].keys()
        for name, curve in record["curves"].items():
            got, ref = (np.array(c, dtype=float) for c in (curve, want["curves"][name]))
            np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0, err_msg=name)
