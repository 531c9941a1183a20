"""Where a sweep stands: which of its runs are in the ledger, which have started (and how far
their checkpoints got), which a process is running now, and roughly how long the rest will take.

A sweep of many cells runs for days, interrupted and resumed; before restarting it, one wants
to know what is left and what it will cost without starting anything. Nothing here writes,
claims or computes: it reads the grid, the ledger and the checkpoint folder.

Estimates are medians of what finished runs took (the run's share of its program's time,
resumed time included) whose config equals a pending run's but for the seed, the data folder and
the option groups the grid sweeps (`fedlog.beta`, ...): their CPU time where the record measures
it, else their wall time. CPU time is what a run needs of a core to itself; wall time also counts
the pauses of a shared machine. A run without such a finished run is counted as unestimated,
never guessed from other settings: a run's cost moves by factors with the dataset, the number of
clients or the images per class. Time spent is wall time, what the runs took where they ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from fedjax_syn.runs.grid import grid_axes
from fedjax_syn.runs.sweep import Job

# Axes that distinguish runs inside a group (rows of the report are the other axes' values).
_WITHIN_GROUP = ("seed", "algorithm", "method", "variant")


@dataclasses.dataclass(frozen=True)
class JobProgress:
    """One program of the sweep: `state` is "done" (every run in the ledger), "running" (another
    process holds its claim), "started" (checkpointed, nobody running it) or "pending"; `step` the
    newest checkpointed round or iteration, if any."""

    job: Job
    state: str
    step: int | None = None


def newest_step(directory: pathlib.Path) -> int | None:
    """The newest complete checkpoint step under `directory` (orbax names steps by number and
    writes a step under a temporary name first), else None."""
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, default=None)


FileId = tuple[int, int, int]  # device major, device minor, inode


def held_flocks(locks_table: str = "/proc/locks") -> set[FileId] | None:
    """The files some process holds an `flock` on, from Linux's lock table; None where there is
    no such table. Reading it takes no lock: testing a claim by taking it could make a sweep
    process skip the program in that instant."""
    try:
        text = pathlib.Path(locks_table).read_text()
    except OSError:
        return None
    held = set()
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 8966 08:01:1234567 0 EOF"; waiters carry "->" and hold none.
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK":
            major, minor, inode = fields[5].split(":")
            held.add((int(major, 16), int(minor, 16), int(inode)))
    return held


def job_progress(
    jobs: Sequence[Job],
    done_ids: set[str],
    checkpoint_dir: str | os.PathLike | None,
    held: set[FileId] | None = None,
) -> list[JobProgress]:
    """Each job's state (see `JobProgress`); `held`: the files locked now (`held_flocks`)."""
    folder = pathlib.Path(checkpoint_dir) if checkpoint_dir else None
    out = []
    for job in jobs:
        if set(job.run_ids) <= done_ids:
            out.append(JobProgress(job, "done"))
            continue
        step = newest_step(folder / job.name) if folder else None
        lock = folder / f"{job.name}.lock" if folder else None
        running = held is not None and lock is not None and _file_id(lock) in held
        state = "running" if running else "started" if step is not None else "pending"
        out.append(JobProgress(job, state, step))
    return out


def _file_id(path: pathlib.Path) -> FileId | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino


def _values(config: Mapping[str, Any], names: Iterable[str]) -> tuple:
    return tuple(config.get(name) for name in names)


def _settings(config: Mapping[str, Any], ignored: set[str]) -> str:
    """What a run's cost depends on: its config without the `ignored` fields."""
    kept = {k: v for k, v in config.items() if k not in ignored}
    return json.dumps(kept, sort_keys=True, default=str)


def _medians(records: Iterable[dict], ignored: set[str]) -> dict[str, float]:
    taken: dict[str, list[float]] = {}
    for record in records:
        cpu, wall = record.get("cpu_time_s"), record.get("wall_time_s")
        seconds = cpu if isinstance(cpu, (int, float)) else wall
        if isinstance(seconds, (int, float)):
            taken.setdefault(_settings(record.get("config", {}), ignored), []).append(seconds)
    return {key: statistics.median(values) for key, values in taken.items()}


def report(
    config: ml_collections.ConfigDict,
    progress: Sequence[JobProgress],
    records: Sequence[dict],
) -> str:
    """The sweep's standing, one line per group of runs (the grid's values but seed, algorithm,
    method, variant and the dotted option axes) and a total: runs done, running, started,
    pending, the summed wall time of the finished ones and an estimate of the rest (see the
    module docstring)."""
    names = [name for name, _ in grid_axes(config)]
    rows = [name for name in names if "." not in name and name not in _WITHIN_GROUP]
    ignored = {"seed", "data_dir", *(name.split(".")[0] for name in names if "." in name)}
    medians = _medians(records, ignored)
    wall_of = {r.get("run_id"): r.get("wall_time_s") for r in records}

    # (point, run id, its program) by group, each program's newest step counted at its first run.
    groups: dict[tuple, list[tuple[ml_collections.ConfigDict, str, JobProgress]]] = {}
    for job in progress:
        for point, rid in zip(job.job.configs, job.job.run_ids):
            groups.setdefault(_values(point, rows), []).append((point, rid, job))
    lines, total = [], _Tally()
    for key, members in groups.items():
        tally = _Tally()
        for point, rid, job in members:
            # A run in the ledger is done even where the rest of its program is not.
            state = "done" if rid in wall_of else job.state
            tally.count(state)
            if job.step is not None and job.job.run_ids[0] == rid:
                tally.steps.append(job.step)
            if state == "done":
                tally.spent += wall_of.get(rid) or 0.0
                continue
            guess = medians.get(_settings(point.to_dict(), ignored))
            if guess is None:
                tally.unestimated += 1
            else:
                tally.left += guess
        total.add(tally)
        name = " ".join(f"{k}={v}" for k, v in zip(rows, key)) or "all runs"
        lines.append(f"{name}: {tally.describe()}")
    lines.append(f"total: {total.describe()}")
    return "\n".join(lines)


@dataclasses.dataclass
class _Tally:
    runs: int = 0
    done: int = 0
    running: int = 0
    started: int = 0
    steps: list[int] = dataclasses.field(default_factory=list)
    spent: float = 0.0
    left: float = 0.0
    unestimated: int = 0

    def count(self, state: str) -> None:
        self.runs += 1
        if state != "pending":
            setattr(self, state, getattr(self, state) + 1)

    def add(self, other: _Tally) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def describe(self) -> str:
        pending = self.runs - self.done - self.running - self.started
        parts = [f"{self.done}/{self.runs} done"]
        if self.running:
            parts.append(f"{self.running} running")
        if self.started:
            parts.append(f"{self.started} started")
        if self.steps:
            parts[-1] += f" (checkpointed at {', '.join(map(str, sorted(self.steps)))})"
        if pending:
            parts.append(f"{pending} pending")
        text = ", ".join(parts) + f"; {self.spent / 3600:.1f} h spent"
        estimated = self.runs - self.done - self.unestimated
        if estimated:
            runs = "run" if estimated == 1 else "runs"
            text += f", about {self.left / 3600:.1f} h left for {estimated} {runs}"
        if self.unestimated:
            text += f", no estimate for {self.unestimated} (no finished run shares their settings)"
        return text
