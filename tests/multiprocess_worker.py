"""One process of tests/test_multiprocess.py: `python -m experiments.main` as a user runs it, plus
a report of what this process saw, and optionally a stop right after a checkpoint.

    python -m tests.multiprocess_worker REPORT.json STOP_AFTER [experiments.main flags ...]

REPORT.json gets this process's index and device counts, how each program's federation was
placed (devices, client slots in all and on this process) and how many ledger records this
process appended. STOP_AFTER > 0 ends the command (SystemExit, status 3) once the checkpoint of
that round is on disk, as a preempted job would stop; 0 runs to the end. A clean exit rather than
SIGKILL: killing both processes at the same round is racy when rounds take milliseconds, and a
clean exit lets `jax.distributed` shut down without the survivor waiting on a dead peer.
"""

import json
import sys
from typing import Any

import jax

from fedjax_syn.runs import program, sweep

STOPPED = 3  # exit status after a STOP_AFTER stop


def _instrument(report: dict, stop_after: int) -> None:
    """Wraps the library functions whose effects the test checks."""
    shard_stacked, save_state, append_new_records = (
        program.shard_stacked,
        sweep.save_state,
        sweep.append_new_records,
    )

    def placed(fed: Any, axes: Any, mesh: Any) -> Any:
        fed = shard_stacked(fed, axes, mesh)
        mask = fed.client_mask  # [clients] or [runs, clients], split along clients
        report["placed"].append(
            {
                "devices": len(mask.sharding.device_set),
                "client_slots": int(mask.shape[-1]),
                "local_client_slots": sum(s.data.shape[-1] for s in mask.addressable_shards),
            }
        )
        return fed

    def saved(ckpt: Any, state: Any, *spent: float | None) -> None:
        save_state(ckpt, state, *spent)
        report["saved_rounds"].append(state.round)
        if state.round == stop_after:
            raise SystemExit(STOPPED)

    def appended(path: Any, records: list[dict]) -> list[dict]:
        written = append_new_records(path, records)
        report["appended"] += len(written)
        return written

    program.shard_stacked, sweep.save_state, sweep.append_new_records = placed, saved, appended


def main() -> None:
    from experiments import cli  # here: the test imports STOPPED without defining the flags
    from experiments import main as entry

    out, stop_after, *flags = sys.argv[1:]
    report: dict = {"placed": [], "saved_rounds": [], "appended": 0}
    _instrument(report, int(stop_after))
    sys.argv = [sys.argv[0], *flags]
    try:
        cli.run(entry.main)
    finally:
        report |= {
            "process_index": jax.process_index(),
            "process_count": jax.process_count(),
            "device_count": jax.device_count(),
            "local_device_count": jax.local_device_count(),
            "collectives": jax.config.jax_cpu_collectives_implementation,
        }
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
