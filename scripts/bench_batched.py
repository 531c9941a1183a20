"""Wall time of a seeds x alphas sweep: batched into one program vs one run after another.

Usage:
  python scripts/bench_batched.py                       # digits: 3 seeds x 5 alphas, MLP, 10 rounds
  python scripts/bench_batched.py --rounds=30 --algorithm=fedavg_ft --out=bench.json
  python scripts/bench_batched.py --dataset=computers --num_clients=10 --algorithm=local \
      --client_chunk=1 --rounds=4                       # graph: 3 seeds, the graph tables' recipe

Both modes run the same configs (15 on digits, one per seed on a graph) in this process:
"sequential" calls `experiment.run` for each (a compilation and a pass per run, as a sweep without
batching does); "batched" runs them as one vmapped program (`batched.run_batch`). The script prints
both wall times, their ratio, and the largest difference between the two modes' metric curves (float
rounding only). A graph dataset runs seeds only, with `experiments/configs/graph_seen.py`'s recipe;
`--client_chunk=1` shows why that config's sweeps do not batch seeds.
"""

import json
import sys
import time

import numpy as np
from absl import app, flags

from experiments.configs import graph_seen
from fedjax_syn import batched, experiment
from fedjax_syn.core.errors import UserError
from fedjax_syn.data.graphs import GRAPH_DATASETS
from fedjax_syn.runs.ledger import write_atomic

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_ALPHAS = flags.DEFINE_list("alphas", ["0.05", "0.1", "0.3", "1.0", "10.0"], "Dirichlet alphas.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Rounds per run.")
_ALGORITHM = flags.DEFINE_string("algorithm", "fedavg", "Algorithm.")
_NUM_CLIENTS = flags.DEFINE_integer("num_clients", 10, "Training clients.")
_DATASET = flags.DEFINE_string("dataset", "digits", "digits, or a graph dataset (seeds only).")
_CLIENT_CHUNK = flags.DEFINE_integer("client_chunk", 0, "Clients at a time (0: all vmapped).")
_OUT = flags.DEFINE_string("out", None, "Also write the figures as JSON here.")


def _configs() -> list:
    graph = _DATASET.value in GRAPH_DATASETS
    configs = []
    for seed in _SEEDS.value:
        for alpha in [None] if graph else _ALPHAS.value:
            cfg = graph_seen.graph_base() if graph else experiment.default_config()
            cfg.update(
                dict(
                    dataset=_DATASET.value,
                    algorithm=_ALGORITHM.value,
                    num_clients=_NUM_CLIENTS.value,
                    rounds=_ROUNDS.value,
                    seed=int(seed),
                    client_chunk=_CLIENT_CHUNK.value,
                )
            )
            if not graph:
                cfg.update(dict(model="mlp", alpha=float(alpha)))
            configs.append(cfg)
    return configs


def _max_curve_gap(a: list[dict], b: list[dict]) -> float:
    """Largest |difference| between matching curve entries (None, i.e. no examples, skipped)."""
    gaps = [0.0]
    for x, y in zip(a, b):
        for name, curve in x["curves"].items():
            u = np.asarray(curve, float)
            v = np.asarray(y["curves"][name], float)
            both = np.isfinite(u) & np.isfinite(v)
            gaps += list(np.abs(u - v)[both])
    return float(max(gaps))


def main(argv: list[str]) -> None:
    del argv
    try:
        configs = _configs()
        start = time.perf_counter()
        together = batched.run_batch(configs)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        one_by_one = [experiment.run(cfg) for cfg in configs]
        sequential_s = time.perf_counter() - start
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    figures = {
        "runs": len(configs),
        "rounds": _ROUNDS.value,
        "algorithm": _ALGORITHM.value,
        "sequential_s": sequential_s,
        "sequential_compile_s": sum(r["compile_time_s"] for r in one_by_one),
        "batched_s": batched_s,
        "batched_compile_s": sum(r["compile_time_s"] for r in together),
        "speedup": sequential_s / batched_s,
        "max_curve_difference": _max_curve_gap(one_by_one, together),
    }
    print(
        f"{len(configs)} {_DATASET.value} runs, {_ALGORITHM.value}, {_ROUNDS.value} rounds, "
        f"client_chunk={_CLIENT_CHUNK.value}"
    )
    print(f"{'mode':<12}{'wall s':>10}{'compile s':>12}{'s / run':>10}{'rest s / round':>16}")
    for mode in ("sequential", "batched"):
        wall, compile_s = figures[f"{mode}_s"], figures[f"{mode}_compile_s"]
        rest = (wall - compile_s) / _ROUNDS.value
        print(f"{mode:<12}{wall:>10.1f}{compile_s:>12.1f}{wall / len(configs):>10.2f}{rest:>16.2f}")
    print(f"speedup (sequential / batched): {figures['speedup']:.1f}x")
    print(
        f"largest difference between the modes' metric curves: "
        f"{figures['max_curve_difference']:.2e}"
    )
    if _OUT.value:
        write_atomic(_OUT.value, json.dumps(figures, indent=1) + "\n")
        print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
