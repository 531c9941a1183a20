"""Faults: kill -9 in the middle of a checkpoint write, a full disk and a read-only results folder.

Covered elsewhere, not repeated here: concurrent appends from several processes
(tests/test_ledger.py, 4 processes x 40 records of 100 kB under `fcntl.flock`), and determinism
(tests/test_sweep.py: a run killed twice with kill -9 and resumed gives exactly, bit for bit, the
curves and metrics of an uninterrupted run with the same seeds in another process).
"""

import errno
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fedjax_syn.runs.ledger as ledger_lib
from fedjax_syn.core.errors import UserError
from fedjax_syn.runs.checkpoint import RunCheckpointer

REPO = pathlib.Path(__file__).resolve().parents[1]
_ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def _state(step: int) -> dict:
    return {"w": np.full(256, float(step)), "b": np.arange(8) + step}


# A child that saves steps 1, 2, ... of `_state` and touches the ready file after step 1, or with
# "hang" when step 2 reaches orbax's commit (arrays written into the tmp folder, not renamed), where
# it then blocks.
_SAVER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from orbax.checkpoint._src.path import atomicity
    from fedjax_syn.runs.checkpoint import RunCheckpointer

    directory, ready, mode = sys.argv[1:]
    ckpt = RunCheckpointer(directory, max_to_keep=2)
    state = lambda step: {"w": np.full(256, float(step)), "b": np.arange(8) + step}
    ckpt.save(1, state(1), {"round": 1})
    if mode == "hang":
        async def hang(self, *args, **kwargs):
            open(ready, "w").close()
            time.sleep(600)
        atomicity.AtomicRenameTemporaryPath.finalize = hang
    else:
        open(ready, "w").close()
    step = 2
    while True:
        ckpt.save(step, state(step), {"round": step})
        step += 1
    """
)


def _kill_saver(directory: pathlib.Path, mode: str, delay: float) -> None:
    ready = directory.parent / f"{mode}.ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(directory), str(ready), mode], env=_ENV, cwd=REPO
    )
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["hang", "random"])
def test_kill_9_during_a_checkpoint_write_keeps_the_previous_step_and_resumes(tmp_path, mode):
    """hang: killed while step 2 is written but not committed (deterministic); random: killed
    at a random moment of a loop of saves (whatever step it was writing)."""
    directory = tmp_path / "ckpt"
    delay = 0.0 if mode == "hang" else random.uniform(0.0, 1.0)
    _kill_saver(directory, mode, delay)
    if mode == "hang":
        assert (directory / "2.orbax-checkpoint-tmp").is_dir()  # the write was under way
    with RunCheckpointer(directory, max_to_keep=2) as ckpt:
        step, state, meta = ckpt.restore_latest(_state(0))
        assert step >= 1 and meta == {"round": step}
        for key, value in _state(step).items():  # the newest complete step, intact
            np.testing.assert_array_equal(state[key], value)
        if mode == "hang":
            assert step == 1
        ckpt.save(step + 1, _state(step + 1), {"round": step + 1})  # the run carries on
        assert ckpt.restore_latest(_state(0))[0] == step + 1


def _enospc_after(monkeypatch, nbytes: int) -> None:
    """The disk fills up after `nbytes` more bytes: a short write, then ENOSPC."""
    real_write, budget = os.write, [nbytes]

    def write(fd: int, data) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= written
        return written

    monkeypatch.setattr(ledger_lib.os, "write", write)


def test_full_disk_during_an_append_leaves_no_partial_line(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger.jsonl"
    ledger_lib.append_record(ledger, {"run_id": "a"})
    before = ledger.read_bytes()
    _enospc_after(monkeypatch, 10)
    with pytest.raises(UserError) as info:
        ledger_lib.append_record(ledger, {"run_id": "b", "pad": "x" * 1000})
    assert str(info.value) == f"cannot write {ledger}: No space left on device"
    assert ledger.read_bytes() == before  # the 10 bytes that made it were taken back
    monkeypatch.undo()
    ledger_lib.append_record(ledger, {"run_id": "c"})
    assert [r["run_id"] for r in ledger_lib.read_ledger(ledger)] == ["a", "c"]


def test_full_disk_while_writing_a_table_keeps_the_old_file(tmp_path, monkeypatch):
    table = tmp_path / "table.md"
    table.write_text("old")
    monkeypatch.setattr(
        ledger_lib.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(UserError, match=f"cannot write {table}: full"):
        ledger_lib.write_atomic(table, "new")
    assert table.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]


# Runs the command line with every open of a file in the results folder refused, as a read-only
# mount refuses it. chmod cannot stand in: the suite may run as root, whom no mode stops.
_READ_ONLY_MAIN = textwrap.dedent(
    """
    import errno, os, runpy, sys
    results, real_open = sys.argv[1], os.open
    def read_only(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
        if os.fspath(path).startswith(results) and flags & writes:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)
    os.open = read_only
    sys.argv = ["experiments.main", *sys.argv[2:]]
    runpy.run_module("experiments.main", run_name="__main__", alter_sys=True)
    """
)


def test_read_only_results_folder_is_refused_before_a_new_ledger_is_made(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(ledger_lib.os, "open", read_only)  # also what tempfile calls
    with pytest.raises(UserError, match=r"^cannot write .*ledger\.jsonl: Read-only file system$"):
        ledger_lib.check_appendable(tmp_path / "ledger.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_read_only_results_folder_is_one_error_line_before_any_run(tmp_path):
    results = tmp_path / "results"
    ledger = results / "ledger.jsonl"
    ledger_lib.append_record(ledger, {"run_id": "old"})
    before = ledger.read_bytes()
    flags = [f"--ledger={ledger}", f"--checkpoint_dir={tmp_path / 'ckpt'}", "--noprogress"]
    flags += ["--compilation_cache_dir=", "--grid=algorithm=fedavg;alpha=0.1;seed=0"]
    done = subprocess.run(
        [sys.executable, "-c", _READ_ONLY_MAIN, str(results), *flags],
        cwd=REPO,
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {ledger}: Read-only file system"
    )
    assert "Traceback" not in done.stderr and ledger.read_bytes() == before
    assert not (tmp_path / "ckpt").exists()  # refused before the first run started
