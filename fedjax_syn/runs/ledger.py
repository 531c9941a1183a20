"""Results ledger: one JSON record per finished run, appended to a JSON-lines file.

Tables and plots are regenerated from the ledger only (../shared/docs/DESIGN.md, "Results are
data"), so the ledger must survive crashes and several sweep workers writing at once.

Record schema (written by `runs.program.make_record`; accuracies are fractions in [0, 1]):

    {"run_id": str,              # run_id(identifying config): sweeps skip runs they hold
     "track": "vision" | "graph",
     "dataset": str, "algorithm": str, "seed": int,
     "protocol": {...},          # PROTOCOL.md parameters, e.g. "partition", "alpha",
                                 # "num_clients" (K), "unseen_frac", "missing_frac"
     "config": {...},            # the full run configuration, verbatim
     "options": {group: {...}},  # the algorithm's options as it ran them, defaults and presets
                                 # filled in (registry.resolved_options); absent from older records
     "settings": [str, ...],     # evaluated settings, in table order
     "eval_rounds": [int, ...],  # the round number of each curve entry
     "dropped": [[int, int], ...],  # [round, client] of each non-finite update left out
                                 # (config "on_nonfinite": "drop"); absent from older records
     "curves": {"val": [...], <setting>: [...], "local/val": [...], "train_loss": [...]},
                                 # one entry per evaluated round; null where a setting had no
                                 # examples (JSON has no NaN); "<mode>/" prefixes other modes
     "best": {"round": int, "val": float, <setting>: float, ...},  # best validation round
     "last": {"round": int, "val": float, <setting>: float, ...},  # final evaluated round
     "modes": {"local" | "global": {"best": {...}, "last": {...}}},  # other evaluation modes
     "wall_time_s": float,       # summed over the processes that ran it (resumed runs too)
     "cpu_time_s": float | null, # their CPU time, every thread; null when a checkpoint it
                                 # resumed from predates the field; absent from older records
     "compile_time_s": float,    # the initialisation and the round programs, compiled by the
                                 # process that finished the run (not summed over resumes)
     "runs_in_program": int,     # runs that shared one compiled program; the three times
                                 # above are this run's equal share of the program's
     "versions": versions(),     # libraries, platform, cpu, backend, devices
     "created": "2025-01-31T12:00:00+00:00"}                         # added by append_record

Vision settings: seen, global, missing_class, new_client. Graph settings: seen, unseen_node,
missing_class, new_client. Condensation runs write

    {"run_id", "track": "condense", "dataset", "method", "ipc", "seed",
     "metrics": {"syn_acc": float, "random_acc": float, ...}, "config", "versions", "created",
     "wall_time_s", "cpu_time_s", ...}  # times as above: summed over the processes that ran it;
                                         # condense_time_s, first_iteration_s and
                                         # seconds_per_iteration: the last process's only

where syn_acc is the test accuracy of a model trained on the condensed set and random_acc that of
the same model trained on as many randomly chosen real examples per class.

Appending: each record is one line written with a single O_APPEND write (looped over short writes)
under an exclusive `fcntl.flock`, then fsync'ed; sweeps append only run ids the ledger does not
hold, checked under that lock (`append_new_records`). Appending keeps each write O(record)
instead of rewriting an ever-growing file, and the lock serialises concurrent writers so lines never
interleave. A writer killed mid-write leaves at most a partial last line; readers skip it with a
warning, and the next append removes it before writing, so it never ends up mid-file. A write that
fails (full disk, read-only folder) is truncated away at once and raised as a one-line `UserError`.
POSIX only (`fcntl`; on Windows the module does not import).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedjax_syn.core.errors import UserError, check


def _to_json(obj: Any) -> Any:
    """`json` fallback for numpy/jax values that appear in configs and metrics."""
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in the results ledger: {obj!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_to_json)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Appends `record` as one line of the ledger at `path`, atomically and process-safely."""
    _append(pathlib.Path(path), [record], skip_present=False)


def append_new_records(path: str | os.PathLike, records: list[dict]) -> list[dict]:
    """Appends those of `records` whose run id the ledger does not hold, checked under the same
    lock as the write: two processes that finish the same run (plans that batch it into
    different programs) append it once. Returns the records appended."""
    return _append(pathlib.Path(path), records, skip_present=True)


def _append(path: pathlib.Path, records: list[dict], skip_present: bool) -> list[dict]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_tail(fd, path)
        start = os.fstat(fd).st_size
        if skip_present:
            held = _run_ids(os.pread(fd, start, 0))
            records = [r for r in records if r.get("run_id") not in held]
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        lines = "".join(_dumps({"created": now, **r}) + "\n" for r in records).encode()
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as e:  # e.g. a full disk: take back the part that was written
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise _write_error(path, e) from e
    finally:
        os.close(fd)  # also releases the lock
    return records


def _run_ids(data: bytes) -> set[str]:
    """The run ids of a ledger's lines (a line that does not parse holds none: `read_ledger`
    reports it)."""
    ids = set()
    for raw in data.split(b"\n"):
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
            ids.add(json.loads(raw).get("run_id"))
    return ids


def check_appendable(path: str | os.PathLike) -> None:
    """Raises a one-line `UserError` now if the ledger could not be appended to, so that a
    read-only or missing results folder is reported before the runs rather than after them.
    Creates the folder but not the ledger."""
    path = pathlib.Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise _write_error(path, e) from e


def _write_error(path: pathlib.Path, error: OSError) -> UserError:
    """A failed write (full disk, read-only folder, no permission) as one line naming the file."""
    return UserError(f"cannot write {path}: {error.strerror or error}")


def _repair_tail(fd: int, path: pathlib.Path) -> None:
    """Makes the file end in a newline: drops a partial last line left by a killed writer."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except (ValueError, UnicodeDecodeError):
        os.ftruncate(fd, start)
        warnings.warn(
            f"results ledger {path}: removed a partial last line of {size - start} bytes "
            "(an interrupted write) before appending",
            stacklevel=3,
        )
        return
    os.write(fd, b"\n")  # a complete record that only lacked its newline


def read_ledger(path: str | os.PathLike) -> list[dict]:
    """All records of the ledger, in file order.

    A final line that does not parse and lacks its newline is an interrupted write: it is skipped
    with a warning. A bad line anywhere else, or a bad last line ending in a newline (which the
    next append would leave mid-file), is corruption and raises a `UserError` naming the file and
    line.
    """
    path = pathlib.Path(path)
    check(path.is_file(), f"results ledger {path} does not exist")
    with open(path, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # never observe a line that is still being written
        data = f.read()
    numbered = [(i + 1, raw) for i, raw in enumerate(data.split(b"\n")) if raw.strip()]
    records = []
    for k, (lineno, raw) in enumerate(numbered):
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            if k == len(numbered) - 1 and not data.endswith(b"\n"):
                warnings.warn(
                    f"results ledger {path}: skipping truncated last line {lineno} ({e})",
                    stacklevel=2,
                )
                continue
            raise UserError(
                f"results ledger {path} line {lineno} is corrupt ({e}); repair or delete that line"
            ) from None
        check(
            isinstance(record, dict),
            f"results ledger {path} line {lineno} is a JSON {type(record).__name__}, not an object",
        )
        records.append(record)
    return records


def run_id(config: Mapping[str, Any]) -> str:
    """A stable 16-hex-digit id of a run's identifying config (key order does not matter).

    Accepts a mapping or an `ml_collections.ConfigDict`. Values are compared as JSON, so 1 and 1.0
    give different ids: keep config field types fixed.
    """
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return hashlib.sha256(_dumps(config).encode()).hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what `platform` knows): wall times are
    only comparable between runs on the same kind of machine."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def versions() -> dict:
    """Library versions, the machine and the accelerator backend, recorded with every run."""
    import jax  # deferred: readers of the ledger should not need to start a backend

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "python": platform.python_version(),
        **{d: version(d) for d in ("jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint")},
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
    }


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Writes a whole file so readers see the old or the new content, never a mix."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise


def _file_mode(path: pathlib.Path) -> int:
    """The replaced file's mode, or the default for a new file under the current umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without setting it (os.umask can only swap it, and a file
    another thread creates meanwhile would get the swapped-in value); where the kernel does not
    show it, the swap."""
    with contextlib.suppress(OSError, StopIteration, ValueError), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
