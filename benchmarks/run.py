"""Measures named workloads (benchmarks/workloads.py), each written to benchmarks/results/<name>.json.

A round workload is timed in every layout side by side (per-client loop, vmapped, chunked),
with its share of a matmul peak measured just before it in the same process; a run workload is
timed part by part (data, compilation, round 0, rounds, evaluation) with its peak memory.

    python -m benchmarks.run --workloads=W1,W2,convnet --quick
    taskset -c 1 python -m benchmarks.run --workloads=cora_fedlog --rounds=5
    python -m benchmarks.run --workloads=computers_fedavg      # 100 rounds
    python -m benchmarks.run --workloads=cora_fedlog --compilation_cache_dir=/tmp/cache  # first run
    python -m benchmarks.run --workloads=cora_fedlog --compilation_cache_dir=/tmp/cache \
        --name=cora_fedlog_cached                               # the same, programs from the cache
"""

from typing import Any

from absl import flags

from benchmarks import end_to_end, harness, rounds
from benchmarks.workloads import WORKLOADS
from experiments import cli
from fedjax_syn.engine import layout

_WORKLOADS = flags.DEFINE_list("workloads", [], f"Workloads: {', '.join(WORKLOADS)}.")
_QUICK = flags.DEFINE_bool("quick", False, "The workloads' quick variants, and 3 repeats.")
_REPEATS = flags.DEFINE_integer("repeats", 0, "Timed rounds per layout (0: 5, or 3 with --quick).")
_CHUNKS = flags.DEFINE_list(
    "chunks",
    [str(k) for k in layout.CHUNKS],
    "client_chunk values (those < clients run); the default is what a measured layout "
    "(client_chunk=-1) chooses from.",
)
_PEAK_N = flags.DEFINE_integer("peak_size", 2048, "Side of the peak's f32 matmul.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 0, "Run workloads: rounds (0: the workload's own).")
_EVAL_REPEATS = flags.DEFINE_integer("eval_repeats", 5, "Run workloads: timed evaluations.")
_NAME = flags.DEFINE_string(
    "name", "", "Results file name, with one workload (e.g. cora_fedlog_cached); empty: its name."
)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets folder; empty: FEDJAX_SYN_DATA_DIR.")


def measure_round(setup: rounds.RoundSetup, repeats: int) -> dict[str, Any]:
    peak = harness.matmul_peak(_PEAK_N.value)
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({_PEAK_N.value}^2 f32 matmul, median)", flush=True)
    chunks = tuple(int(c) for c in _CHUNKS.value)
    result = rounds.compare(setup, repeats=repeats, chunks=chunks, peak=peak)
    rounds.print_comparison(result)
    return {
        "kind": "rounds",
        "peak_gflops": peak / 1e9,
        "peak_size": _PEAK_N.value,
        "configs": [result],
    }


def measure_run(cfg) -> dict[str, Any]:
    cfg.data_dir = _DATA_DIR.value
    if _ROUNDS.value:
        cfg.rounds = _ROUNDS.value
    figures = end_to_end.measure(cfg, _EVAL_REPEATS.value)
    end_to_end.print_figures(figures)
    return {"kind": "run", **figures}


def main(argv: list[str]) -> None:
    del argv
    if not _WORKLOADS.value:
        cli.fail(f"name --workloads, from: {', '.join(WORKLOADS)}")
    for name in _WORKLOADS.value:
        if name not in WORKLOADS:
            cli.fail(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if _NAME.value and len(_WORKLOADS.value) != 1:
        cli.fail(f"--name={_NAME.value} needs exactly one workload, got {len(_WORKLOADS.value)}")
    if not all(c.isdigit() and int(c) > 0 for c in _CHUNKS.value):
        cli.fail(f"--chunks must be positive integers, got {','.join(_CHUNKS.value)!r}")
    repeats = _REPEATS.value or (3 if _QUICK.value else 5)
    for name in _WORKLOADS.value:
        workload = WORKLOADS[name](_QUICK.value)
        load_start = harness.load_average()
        print(f"== {name} (load average {load_start:.2f})", flush=True)
        if isinstance(workload, rounds.RoundSetup):
            payload = measure_round(workload, repeats)
        else:
            payload = measure_run(workload)
        payload |= {"workload": name, "quick": _QUICK.value, "load_start": load_start}
        path = harness.write_result(_NAME.value or name, payload)
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    cli.run(main)
