"""The allocator setting (`--keep_freed_memory`, fedjax_syn/runs/allocator.py) on and off, for the
round workloads: each setting runs in its own process (the setting is process-wide), the two
processes one after the other in one command, and the table gives each layout's median under both
and the speed-up.

    taskset -c 0 python -m benchmarks.allocator --workloads=W1,W2,convnet --quick
"""

import json
from typing import Any

from absl import flags

from benchmarks import harness, rounds, tables
from benchmarks.workloads import WORKLOADS
from experiments import cli

SETTINGS = ("off", "on")

_WORKLOADS = flags.DEFINE_list("workloads", ["W1", "W2", "convnet"], "Round workloads.")
_QUICK = flags.DEFINE_bool("quick", False, "The workloads' quick variants.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed rounds per layout.", lower_bound=1)
_CHUNKS = flags.DEFINE_list("chunks", ["4", "10"], "client_chunk values timed beside the loop.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: WORKLOAD, measured in this process.")
_NAME = flags.DEFINE_string("name", "allocator", "Results file name.")


def worker(name: str) -> dict[str, Any]:
    setup = WORKLOADS[name](_QUICK.value)
    peak = harness.matmul_peak(2048)
    chunks = tuple(int(c) for c in _CHUNKS.value)
    result = rounds.compare(setup, repeats=_REPEATS.value, chunks=chunks, peak=peak)
    return {"peak_gflops": peak / 1e9, **result}


def spawn(name: str, setting: str) -> dict[str, Any]:
    """One workload measured in a fresh process with the setting on or off."""
    args = [f"--worker={name}", f"--keep_freed_memory={setting == 'on'}"]
    args += [f"--quick={_QUICK.value}", f"--repeats={_REPEATS.value}"]
    args += [f"--chunks={','.join(_CHUNKS.value)}"]
    return harness.run_worker("benchmarks.allocator", args, f"{name} ({setting})")


def main(argv: list[str]) -> None:
    del argv
    if _WORKER.value:
        print(json.dumps(worker(_WORKER.value)))
        return
    for name in _WORKLOADS.value:
        if name not in WORKLOADS or not isinstance(WORKLOADS[name](True), rounds.RoundSetup):
            cli.fail(f"{name!r} is not a round workload; choose from W1, W2, convnet")
    load_start = harness.load_average()
    rows = []
    for name in _WORKLOADS.value:
        measured = {setting: spawn(name, setting) for setting in SETTINGS}
        rows.append({"workload": name, **measured})
        for layout, on in measured["on"]["modes"].items():
            off = measured["off"]["modes"][layout]["median_s"]
            print(f"{name} {layout}: {off * 1e3:.1f} -> {on['median_s'] * 1e3:.1f} ms", flush=True)
    payload = {"kind": "allocator", "quick": _QUICK.value, "load_start": load_start, "rows": rows}
    path = harness.write_result(_NAME.value, payload)
    print(f"{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
