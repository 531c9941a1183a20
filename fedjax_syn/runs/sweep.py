"""Resumable sweeps: a config's grid expanded into runs, run as few compiled programs as shapes
allow, checkpointed every few rounds, and skipped when the ledger already holds them.

Runs that differ only in their data (seed, heterogeneity; `config.DATA_FIELDS`) share one
program, unless they run clients in chunks or in a measured layout (any non-zero `client_chunk`,
-1 included), which batching would undo; every other run is a program of its own. The grouping
depends on the grid alone, so a rerun forms the same programs.

Resuming: each program checkpoints its whole state with `RunCheckpointer` (server and client
states, base PRNG keys, round counter, curves, wall and CPU time spent) after its first round, every
`checkpoint_every` rounds and after its last round, into `checkpoint_dir/<program id>`. Killed
at any moment, the same command restores the newest intact step and continues with the same
compiled program, the same inputs and round keys `fold_in(key, r)`, so the final metrics are
bit-identical to an uninterrupted run. A condensation run checkpoints its synthetic images and
their optimiser state every `checkpoint_every` iterations the same way and continues after the
newest. A program's checkpoints are deleted once its records are in the ledger; a program whose
runs are all in the ledger is skipped (by `run_id`).

Several processes (one per core, say) can run the same sweep with the same ledger and checkpoint
folder: each program is claimed with an exclusive lock on `checkpoint_dir/<program id>.lock`
before it starts, and a process skips a program another one holds, or one whose runs reached the
ledger since it planned. The operating system releases a lock when its process dies, so a killed
process's program is taken over (from its checkpoints) by the next one that reaches it. Finished
programs' checkpoint folders may be removed by two processes at once, so a folder already gone is
no error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import pathlib
import shutil
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from fedjax_syn.core.errors import UserError
from fedjax_syn.runs import condense, program
from fedjax_syn.runs.checkpoint import (
    RunCheckpointer,
    clock,
    restore_state,
    save_state,
    time_spent,
)
from fedjax_syn.runs.config import describe, group_runs, run_id
from fedjax_syn.runs.grid import grid_configs
from fedjax_syn.runs.ledger import append_new_records, check_appendable, read_ledger

# ---------------------------------------------------------------------------------------------
# Planning: runs -> programs.


@dataclasses.dataclass(frozen=True)
class Job:
    """One compiled program and the runs it holds."""

    configs: tuple[ml_collections.ConfigDict, ...]
    run_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        """Checkpoint folder name: the run id, or a digest of the run ids of several."""
        if len(self.run_ids) == 1:
            return self.run_ids[0]
        digest = hashlib.sha256(",".join(self.run_ids).encode()).hexdigest()[:16]
        return f"batch-{digest}"

    @property
    def is_condensation(self) -> bool:
        return self.configs[0].get("track") == "condense"

    @property
    def steps(self) -> int:
        """Rounds of a federated program; iterations of a condensation run."""
        cfg = self.configs[0]
        return cfg.iterations if self.is_condensation else cfg.rounds


def _batchable(cfg: ml_collections.ConfigDict) -> bool:
    """Federated runs batch, except those that run clients in chunks (`client_chunk` k) or in a
    measured layout (-1): vmapped over runs, each chunk's local epoch would run as many steps as
    the busiest run's, on graphs padded to the largest run's (Computers K = 10, 3 seeds: 1.8x the
    time of the runs one by one), and a measured layout is measured per program."""
    return cfg.get("track") in ("vision", "graph") and not cfg.get("client_chunk")


def _check_distinct(points: Sequence[ml_collections.ConfigDict], ids: Sequence[str]) -> None:
    """Each run once: points of one run id would run, and be recorded, twice."""
    first: dict[str, int] = {}
    for i, rid in enumerate(ids):
        j = first.setdefault(rid, i)
        if j == i:
            continue
        a, b = points[j].to_dict(), points[i].to_dict()
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        what = " ".join(
            str(b.get(k)) for k in ("dataset", "algorithm", "method") if b.get(k) is not None
        )
        why = (
            f"its points differ only in {', '.join(differ)}, which the run id leaves out"
            if differ
            else "remove duplicate values"
        )
        raise UserError(f"the grid yields run {rid} ({what} seed={b.get('seed')}) twice; {why}")


def plan(
    points: Sequence[ml_collections.ConfigDict], batch_runs: bool = True, max_batch: int = 0
) -> list[Job]:
    """The programs that run `points`: groups of runs that can share one (when asked), else one
    program per run."""
    ids = [run_id(p) for p in points]
    _check_distinct(points, ids)
    batchable = [i for i, p in enumerate(points) if batch_runs and _batchable(p)]
    groups = [
        [batchable[i] for i in g] for g in group_runs([points[i] for i in batchable], max_batch)
    ]
    grouped = set(batchable)
    groups += [[i] for i in range(len(points)) if i not in grouped]
    jobs = [Job(tuple(points[i] for i in g), tuple(ids[i] for i in g)) for g in groups]
    order = {rid: k for k, rid in enumerate(ids)}
    return sorted(jobs, key=lambda job: order[job.run_ids[0]])


# ---------------------------------------------------------------------------------------------
# Running.


def _checkpoint_rounds(rounds: int, every: int) -> list[int]:
    """Rounds after which to checkpoint: the first, every `every`-th and the last (none when
    every = 0, or no round after a setup round 0). The first round follows compilation and any
    setup round (FedLoG's pretraining takes most of a run), so a run killed before round `every`
    keeps them."""
    if every <= 0 or rounds < 1:
        return []
    return sorted({1, *range(every, rounds + 1, every), rounds})


def run_job(
    job: Job,
    *,
    ledger: str | None,
    checkpoint_dir: str | pathlib.Path | None,
    checkpoint_every: int = 10,
    on_round: Callable[[int, list[dict]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Runs (or resumes) one program to its last round; appends its records not yet in the
    ledger; deletes its checkpoints; returns its records. A condensation run checkpoints every
    `checkpoint_every` iterations instead."""
    directory = pathlib.Path(checkpoint_dir) / job.name if checkpoint_dir else None
    if job.is_condensation:
        step = (lambda i, loss: on_round(i + 1, [])) if on_round else None
        record = condense.run(
            job.configs[0],
            on_iteration=step,
            checkpoint_dir=directory,
            checkpoint_every=checkpoint_every,
        )
        if record["resumed_after"] is not None:
            log(f"resumed {job.name} after iteration {record['resumed_after']} ({directory})")
        if ledger and jax.process_index() == 0:
            append_new_records(ledger, [record])
        if directory is not None and directory.exists() and jax.process_index() == 0:
            shutil.rmtree(directory, ignore_errors=True)
        return [record]
    start = clock()

    def spent(state: program.State) -> tuple[float, float | None]:
        """Wall and CPU seconds spent on the runs, earlier processes' included."""
        return time_spent(start, state.elapsed_s, state.cpu_s)

    compiled = program.compile_program(job.configs)
    # With checkpoint_every = 0 nothing is saved, but a checkpoint already there still resumes.
    ckpt = (
        RunCheckpointer(directory)
        if directory and (checkpoint_every > 0 or directory.exists())
        else None
    )
    try:
        # Restored into the states' shapes: a resumed run never recomputes its initial states.
        template = program.initial_state(compiled, abstract=True)
        state = restore_state(ckpt, template) if ckpt else None
        if state is not None:
            log(f"resumed {job.name} from round {state.round} ({directory})")
        else:
            state = program.initial_state(compiled)
        last = compiled.last_round
        for stop in _checkpoint_rounds(last, checkpoint_every) or [last]:
            if stop <= state.round:
                continue
            state = program.advance(compiled, state, stop, on_round)
            if ckpt is not None and checkpoint_every > 0:
                save_state(ckpt, state, *spent(state))
    finally:
        if ckpt is not None:
            ckpt.close()
    records = program.make_records(compiled, state, *spent(state))
    if ledger and jax.process_index() == 0:
        append_new_records(ledger, records)
    if directory is not None and directory.exists() and jax.process_index() == 0:
        shutil.rmtree(directory, ignore_errors=True)
    return records


@contextlib.contextmanager
def _claim(job: Job, checkpoint_dir: str | pathlib.Path | None):
    """Yields whether this process holds `job` (always, without a checkpoint folder or with
    several processes of one distributed run, which all run every program together). A held
    lock's file is removed when the block ends without an error (the program's runs are then in
    the ledger, where a process that opens the file later finds them); the lock itself is
    released when the file closes, or when the process dies."""
    if not checkpoint_dir or jax.process_count() > 1:
        yield True
        return
    path = pathlib.Path(checkpoint_dir) / f"{job.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        path.unlink(missing_ok=True)


def _ledger_ids(ledger: str | pathlib.Path) -> set[str]:
    if not pathlib.Path(ledger).exists():
        return set()
    return {r.get("run_id") for r in read_ledger(ledger)}


def summary_line(record: dict) -> str:
    """One line per finished run: what ran, its best-validation and last-round numbers."""
    cfg = record["config"]
    if record.get("track") == "condense":
        numbers = " ".join(
            f"{k}={v:.3f}" for k, v in record["metrics"].items() if isinstance(v, float)
        )
        return (
            f"{record['dataset']} {record['method']} ipc={record['ipc']} seed={record['seed']} | "
            f"{numbers} | {record['wall_time_s']:.1f}s"
        )
    what = [record["dataset"], record["algorithm"], f"seed={record['seed']}"]
    if record.get("track") == "vision":
        what.append(f"alpha={cfg.get('alpha')}")
    else:
        what += [f"K={cfg.get('num_clients')}", str(cfg.get("setting"))]
    if cfg.get("variant"):
        what.append(f"variant={cfg['variant']}")

    def numbers(row: dict) -> str:
        return " ".join(
            f"{k}={v:.3f}" for k, v in row.items() if k not in ("round", "val") and v is not None
        )

    best, last = record["best"], record["last"]
    return (
        f"{' '.join(what)} | best r{best['round']}: {numbers(best)} | "
        f"last r{last['round']}: {numbers(last)} | {record['wall_time_s']:.1f}s"
    )


def run_sweep(
    config: ml_collections.ConfigDict,
    *,
    ledger: str,
    checkpoint_dir: str | pathlib.Path | None = "runs/checkpoints",
    checkpoint_every: int = 10,
    batch_runs: bool = True,
    max_batch: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Runs every point of the config's grid not yet in `ledger` that no other process holds;
    returns the records of the points in the ledger (earlier ones read from it) in grid order,
    without those another process is still running."""
    log = log or (lambda line: tqdm.write(line))
    if jax.process_index() != 0:  # multi-process: every process computes, the first one reports
        progress, log = False, lambda line: None
    points = grid_configs(config)
    jobs = plan(points, batch_runs, max_batch)
    done = _ledger_ids(ledger)
    if jax.process_index() == 0:
        check_appendable(ledger)
    pending = [job for job in jobs if not set(job.run_ids) <= done]
    skipped = len(points) - sum(len(job.run_ids) for job in pending)
    if skipped:
        log(f"skipping {skipped} of {len(points)} runs already in {ledger}")
    if checkpoint_dir and jax.process_index() == 0:
        running = {job.name for job in pending}
        for job in jobs:  # killed after its records were appended, before its cleanup
            if job.name not in running:
                leftover = pathlib.Path(checkpoint_dir) / job.name
                shutil.rmtree(leftover, ignore_errors=True)
                leftover.with_name(f"{job.name}.lock").unlink(missing_ok=True)
    fresh: dict[str, dict] = {}
    with tqdm(
        total=len(points), initial=skipped, desc="runs", unit="run", disable=not progress
    ) as grid_bar:
        for job in pending:
            with _claim(job, checkpoint_dir) as mine:
                if not mine:
                    log(f"skipping {job.name}: another process is running it")
                    continue
                if set(job.run_ids) <= _ledger_ids(ledger):
                    log(f"skipping {job.name}: another process finished it")
                    continue
                fresh.update(
                    _run_claimed(job, ledger, checkpoint_dir, checkpoint_every, progress, log)
                )
            grid_bar.update(len(job.run_ids))
    missing = len(fresh) < len(points) and pathlib.Path(ledger).exists()
    stored = {r["run_id"]: r for r in read_ledger(ledger)} if missing else {}
    records = (fresh.get(rid) or stored.get(rid) for rid in map(run_id, points))
    return [record for record in records if record is not None]


def _run_claimed(
    job: Job,
    ledger: str,
    checkpoint_dir: str | pathlib.Path | None,
    checkpoint_every: int,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, dict]:
    """Runs one claimed program with its progress bar; its records by run id."""
    first = job.configs[0]
    label = f"{first.method} ipc={first.ipc}" if job.is_condensation else first.algorithm
    if len(job.configs) > 1:
        label += f" x{len(job.configs)} [{describe(job.configs)}]"
    unit = "iteration" if job.is_condensation else "round"
    with tqdm(total=job.steps, desc=label, unit=unit, leave=False, disable=not progress) as bar:

        def on_round(r: int, metrics: list[dict], bar=bar) -> None:
            bar.update(r - bar.n)
            val = [m["val"] for m in metrics if m["val"] == m["val"]]
            if val:
                bar.set_postfix(val=f"{np.mean(val):.3f}")

        records = run_job(
            job,
            ledger=ledger,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            on_round=on_round if progress else None,
            log=log,
        )
    for record in records:
        log(summary_line(record))
    return {record["run_id"]: record for record in records}
