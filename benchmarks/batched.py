"""Wall time of a seeds x alphas sweep: batched into one program vs one run after another.

Both modes run the same configs (seeds x alphas on digits, one per seed on a graph) in this
process: "sequential" runs each as a program of its own (a compilation and a pass per run, as
a sweep without batching does); "batched" runs them as one program (`runs.program.run`).
Also recorded: the largest difference between the two modes' metric curves (float rounding
only). A graph dataset runs seeds only, with `experiments/configs/graph_seen.py`'s recipe;
`--client_chunk=1` shows why that config's sweeps do not batch seeds.

    python -m benchmarks.batched                  # digits: 3 seeds x 5 alphas, MLP, 10 rounds
    python -m benchmarks.batched --rounds=30 --algorithm=fedavg_ft --name=batched_ft
    python -m benchmarks.batched --dataset=computers --num_clients=10 --algorithm=local \\
        --client_chunk=1 --rounds=4
"""

import numpy as np
from absl import flags

from benchmarks import harness, tables
from experiments import cli
from experiments.configs import graph_seen
from fedjax_syn.data.graphs import GRAPH_DATASETS
from fedjax_syn.runs import program
from fedjax_syn.runs.config import default_config

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_ALPHAS = flags.DEFINE_list("alphas", ["0.05", "0.1", "0.3", "1.0", "10.0"], "Dirichlet alphas.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Rounds per run.")
_ALGORITHM = flags.DEFINE_string("algorithm", "fedavg", "Algorithm.")
_NUM_CLIENTS = flags.DEFINE_integer("num_clients", 10, "Training clients.")
_DATASET = flags.DEFINE_string("dataset", "digits", "digits, or a graph dataset (seeds only).")
_CLIENT_CHUNK = flags.DEFINE_integer("client_chunk", 0, "Clients at a time (0: all vmapped).")
_NAME = flags.DEFINE_string("name", "batched", "Results file: benchmarks/results/<name>.json.")


def configs() -> list:
    graph = _DATASET.value in GRAPH_DATASETS
    out = []
    for seed in _SEEDS.value:
        for alpha in [None] if graph else _ALPHAS.value:
            cfg = graph_seen.graph_base() if graph else default_config()
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
            out.append(cfg)
    return out


def max_curve_gap(a: list[dict], b: list[dict]) -> float:
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
        runs = configs()
    except ValueError as e:
        cli.fail(str(e))
    load_start = harness.load_average()
    together, batched_s = harness.time_once(program.run, runs)
    one_by_one, sequential_s = harness.time_once(lambda: [program.run([c])[0] for c in runs])
    payload = {
        "kind": "batched",
        "runs": len(runs),
        "dataset": _DATASET.value,
        "rounds": _ROUNDS.value,
        "algorithm": _ALGORITHM.value,
        "client_chunk": _CLIENT_CHUNK.value,
        "sequential_s": sequential_s,
        "sequential_compile_s": sum(r["compile_time_s"] for r in one_by_one),
        "batched_s": batched_s,
        "batched_compile_s": sum(r["compile_time_s"] for r in together),
        "speedup": sequential_s / batched_s,
        "max_curve_difference": max_curve_gap(one_by_one, together),
        "load_start": load_start,
    }
    path = harness.write_result(_NAME.value, payload)
    print(f"{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
