"""Seconds per FedAvg round and per full evaluation on real graphs, in several layouts.

For each dataset and number of clients K, the split and model are those of
`experiments/configs/cora.py` (Louvain, closeset, GraphSAGE 128-64, Adam, batches of 64 target
nodes, one local epoch), with the dataset and K swapped in. Modes:

  vmapped  `make_round(evaluate=False)`: every client's local epoch in one jitted program, each
           client running only its own minibatches (a while_loop over active steps); the
           evaluation is one jitted program too;
  scanned  the same program with `unroll=True`: every padded step runs, inactive ones masked;
  chunked  `client_chunk=1`: the clients one after another inside the program, so each runs only
           its own minibatches where vmapped clients all run as many as the busiest one;
  uncached the chunked program on graphs without their `neighbour_mean` cache, so the first
           layer gathers and scatters every edge at every step and evaluation;
  loop     the per-client jitted loop (`harness.loop_round`); evaluation one client at a time
           through the same jitted evaluation on a one-client view.

Each (dataset, K, mode) runs in its own process, so its peak resident memory is its own; the
data's share (after the split, before any compilation) is reported beside it. `steps` shows the
padded local epoch's steps, the steps of the busiest client (drop_last) and their sum over
clients, which is what the chunked mode runs.

    python -m benchmarks.graph
    python -m benchmarks.graph --datasets=cora --clients=3 --modes=vmapped,scanned
"""

import json
import sys
from typing import Any

import jax
import numpy as np
from absl import flags

from benchmarks import harness, tables
from benchmarks.rounds import evaluate_program, vmapped_round
from experiments import cli
from experiments.configs import cora
from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.core.interface import FederatedAlgorithm
from fedjax_syn.engine.round import EngineConfig, init_states
from fedjax_syn.runs.prepare import build_algorithm, prepare

MODES = ("vmapped", "scanned", "chunked", "uncached", "loop")

_DATASETS = flags.DEFINE_list("datasets", ["cora", "computers"], "Graph datasets.")
_CLIENTS = flags.DEFINE_list("clients", ["3", "10"], "Numbers of training clients K.")
_MODES = flags.DEFINE_list("modes", list(MODES), ", ".join(MODES) + ".")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.", lower_bound=1)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets folder; empty: FEDJAX_SYN_DATA_DIR.")
_NAME = flags.DEFINE_string("name", "graph", "Results file: benchmarks/results/<name>.json.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'dataset:K:mode' measured in this process.")


def client_view(fed: Federation, k: int) -> Federation:
    """Client k alone, keeping a clients axis of length 1 (shared inputs stay whole)."""
    take = lambda tree: jax.tree.map(lambda leaf: leaf[k : k + 1], tree)

    def group(g: EvalGroup) -> EvalGroup:
        return g.replace(masks=take(g.masks)) if g.shared else take(g)

    return fed.replace(
        train=take(fed.train),
        eval_groups={name: group(g) for name, g in fed.eval_groups.items()},
        client_mask=take(fed.client_mask),
    )


def time_vmapped(alg, fed, server, clients, key, chunk: int | None) -> dict[str, Any]:
    config = EngineConfig(client_chunk=chunk)
    step = vmapped_round(alg, fed, key, config)
    (server, clients), rounds = harness.time_calls(step, (server, clients), _REPEATS.value)
    evaluate = evaluate_program(alg, config)
    _, evals = harness.time_calls(
        lambda _: evaluate(server, clients, fed, key), None, _REPEATS.value
    )
    return {"round": rounds.summary(), "eval": evals.summary()}


def time_loop(alg: FederatedAlgorithm, fed, server, clients, key) -> dict[str, Any]:
    step = harness.loop_round(alg, fed, key)
    carry = harness.loop_carry(server, clients, fed.num_clients)
    (server, states), rounds = harness.time_calls(step, carry, _REPEATS.value)
    evaluate = evaluate_program(alg, EngineConfig())
    views = [client_view(fed, k) for k in range(fed.num_clients)]
    one = [jax.tree.map(lambda leaf: leaf[None], s) for s in states]
    eval_key = jax.random.split(key)[1]
    _, evals = harness.time_calls(
        lambda _: [evaluate(server, s, v, eval_key) for s, v in zip(one, views)],
        None,
        _REPEATS.value,
    )
    return {"round": rounds.summary(), "eval": evals.summary()}


def without_neighbour_mean(fed: Federation) -> Federation:
    """Every graph of `fed` with its first-layer cache dropped."""
    bare = lambda group: group.replace(inputs=group.inputs._replace(neighbour_mean=None))
    groups = {name: bare(group) for name, group in fed.eval_groups.items()}
    return fed.replace(train=bare(fed.train), eval_groups=groups)


def worker(spec: str) -> dict[str, Any]:
    dataset, k, mode = spec.split(":")
    cfg = cora.get_config()
    cfg.dataset, cfg.num_clients = dataset, int(k)
    cfg.data_dir = _DATA_DIR.value
    cfg.unroll = mode == "scanned"
    prepared = prepare(cfg)
    fed = prepared.fed if mode != "uncached" else without_neighbour_mean(prepared.fed)
    alg = build_algorithm(cfg, [prepared])
    data_rss = harness.peak_rss_mib()
    train = fed.train
    n_pad = int(train.labels.shape[1])
    per_client = np.asarray(train.mask).sum(axis=1) // cfg.batch_size
    server, clients = init_states(alg, fed, jax.random.key(0))
    key = jax.random.key(1)
    if mode == "loop":
        times = time_loop(alg, fed, server, clients, key)
    else:
        chunk = 1 if mode in ("chunked", "uncached") else None
        times = time_vmapped(alg, fed, server, clients, key, chunk)
    return {
        "dataset": dataset,
        "K": int(k),
        "mode": mode,
        "nodes_pad": n_pad,
        "edges_pad": int(train.inputs.senders.shape[1]),
        "new_nodes": int(fed.eval_groups["new"].labels.shape[0]),
        "scan_steps": -(-n_pad // cfg.batch_size),
        "active_steps": max(int(per_client.max()), 1),
        "client_steps": int(per_client.sum()),
        **times,
        "data_rss_mib": data_rss,
        "peak_rss_mib": harness.peak_rss_mib(),
    }


def spawn(spec: str) -> dict[str, Any]:
    """Measures one (dataset, K, mode) in a fresh process; its last output line is the row."""
    args = [f"--worker={spec}", f"--repeats={_REPEATS.value}", f"--data_dir={_DATA_DIR.value}"]
    return harness.run_worker("benchmarks.graph", args, spec)


def main(argv: list[str]) -> None:
    del argv
    if _WORKER.value:
        print(json.dumps(worker(_WORKER.value)))
        return
    for mode in _MODES.value:
        if mode not in MODES:
            cli.fail(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    load_start = harness.load_average()
    rows = []
    for dataset in _DATASETS.value:
        for k in _CLIENTS.value:
            for mode in _MODES.value:
                rows.append(spawn(f"{dataset}:{k}:{mode}"))
                round_s = rows[-1]["round"]["median_s"]
                print(f"{dataset}:{k}:{mode}: round {round_s:.3f} s", file=sys.stderr, flush=True)
    payload = {"kind": "graph", "repeats": _REPEATS.value, "load_start": load_start, "rows": rows}
    path = harness.write_result(_NAME.value, payload)
    print(f"{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
