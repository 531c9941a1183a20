"""Seconds per FedAvg round and per full evaluation on real graphs: vmapped engine vs a loop.

For each dataset and number of clients K, the split and model are those of
`experiments/configs/cora.py` (Louvain, closeset, GraphSAGE 128-64, Adam, batches of 64 target
nodes, one local epoch), with the dataset and K swapped in. Two ways to run the same work:

  vmapped  `make_round(evaluate=False)`: every client's local epoch in one jitted program; the
           evaluation is one jitted program too (personalise + every setting for every client);
           each client runs only its own minibatches (a while_loop over active steps);
  scanned  the same program with `unroll=True`: every padded step is run, inactive ones masked
           (the scan layout), to show what skipping padding steps saves;
  chunked  the vmapped program with `client_chunk=1`: `lax.map` runs the clients one after
           another inside the program, so each runs only its own minibatches, where vmapped clients
           all run as many as the busiest one (and the graph padding of all of them);
  uncached the chunked program on graphs without their `neighbour_mean` cache: the first layer
           gathers and scatters every edge at the hidden width at every step and evaluation, as
           it did before the cache, to show what caching mean(X) saves;
  loop     a Python loop calling a jitted per-client update, then a jitted server average (the
           FedJAX way); evaluation one client at a time through the same jitted evaluation on a
           one-client view. Per-client slices and keys are prepared outside the timed region.

Each (dataset, K, mode) runs in its own process, so its peak resident memory (ru_maxrss) is its
own; the data's share (after the split, before any compilation) is reported beside it. Times are
wall seconds (median and min over --repeats calls after one compile-and-warm-up call) and the
process's CPU seconds per call, which other jobs on a shared machine inflate less than wall time.
A padded local epoch has ceil(n_pad / batch) steps; `steps` shows that beside the number of
steps the largest client actually takes (floor(n_train / batch) with drop_last) and the sum of
every client's steps, which is what the chunked mode runs.

  PYTHONPATH=. python scripts/bench_graph.py
  PYTHONPATH=. python scripts/bench_graph.py --datasets=cora --clients=3 --modes=vmapped,scanned
"""

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.configs import cora
from fedjax_syn import experiment
from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.core.interface import FederatedAlgorithm
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.mapping import map_clients
from fedjax_syn.engine.round import EngineConfig, init_states, make_round

REPO = str(pathlib.Path(__file__).resolve().parents[1])

_DATASETS = flags.DEFINE_list("datasets", ["cora", "computers"], "Graph datasets.")
_CLIENTS = flags.DEFINE_list("clients", ["3", "10"], "Numbers of training clients K.")
_MODES = flags.DEFINE_list(
    "modes",
    ["vmapped", "scanned", "chunked", "uncached", "loop"],
    "vmapped, scanned, chunked, uncached, loop.",
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets folder; empty: FEDJAX_SYN_DATA_DIR.")
_JSON = flags.DEFINE_string("json_out", "", "Also write the rows as JSON to this file.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: 'dataset:K:mode' measured in this process.")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(fn: Callable[[Any], Any], state: Any, repeats: int) -> tuple[Any, dict]:
    """state = fn(state) once (compile + warm-up), then `repeats` timed calls."""
    start = time.perf_counter()
    state = jax.block_until_ready(fn(state))
    first = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        state = jax.block_until_ready(fn(state))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    stats = {
        "first_s": first,
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "cpu_s": statistics.median(cpus),
    }
    return state, stats


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


def make_evaluate(alg: FederatedAlgorithm, chunk: int | None = None) -> Callable:
    """Jitted (server, client states, fed, key) -> counts: what a round's evaluation computes."""

    def evaluate(server, clients, fed, key):
        keys = jax.random.split(key, fed.num_clients)
        personal = lambda state, data, k: alg.personalize(server, state, data, k)
        models = map_clients(personal, (clients, fed.train, keys), chunk)
        return evaluation.evaluate(alg.predict, models, fed, chunk)

    return jax.jit(evaluate)


def run_vmapped(alg, fed, server, clients, key, repeats, chunk=None) -> dict:
    round_fn = make_round(alg, EngineConfig(client_chunk=chunk))

    def one_round(carry):
        server, clients = carry
        server, clients, _ = round_fn(server, clients, fed, key, evaluate=False)
        return server, clients

    (server, clients), rounds = timed(one_round, (server, clients), repeats)
    evaluate = make_evaluate(alg, chunk)
    _, evals = timed(lambda _: evaluate(server, clients, fed, key), None, repeats)
    return {"round": rounds, "eval": evals}


def run_loop(alg, fed, server, clients, key, repeats) -> dict:
    update = jax.jit(alg.client_update)
    stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    aggregate = jax.jit(lambda s, ups, m, k: alg.server_update(s, stack(ups), m, k))
    # The per-client keys of `round_step`, so both modes do the same work.
    update_key, server_key, _ = jax.random.split(key, 3)
    keys = list(jax.random.split(update_key, fed.num_clients))
    take = lambda tree, k: jax.tree.map(lambda leaf: leaf[k], tree)
    datas = [take(fed.train, k) for k in range(fed.num_clients)]
    states = [take(clients, k) for k in range(fed.num_clients)]

    def one_round(carry):
        server, states = carry
        outs = [update(server, s, d, k) for s, d, k in zip(states, datas, keys)]
        server = aggregate(server, [o[1] for o in outs], fed.client_mask, server_key)
        return server, [o[0] for o in outs]

    (server, states), rounds = timed(one_round, (server, states), repeats)
    evaluate = make_evaluate(alg)
    views = [client_view(fed, k) for k in range(fed.num_clients)]
    one = [jax.tree.map(lambda leaf: leaf[None], s) for s in states]
    eval_key = jax.random.split(key)[1]
    _, evals = timed(
        lambda _: [evaluate(server, s, v, eval_key) for s, v in zip(one, views)], None, repeats
    )
    return {"round": rounds, "eval": evals}


def without_neighbour_mean(fed: Federation) -> Federation:
    """Every graph of `fed` with its first-layer cache dropped."""
    bare = lambda group: group.replace(inputs=group.inputs._replace(neighbour_mean=None))
    groups = {name: bare(group) for name, group in fed.eval_groups.items()}
    return fed.replace(train=bare(fed.train), eval_groups=groups)


def worker(spec: str) -> dict:
    dataset, k, mode = spec.split(":")
    cfg = cora.get_config()
    cfg.dataset, cfg.num_clients = dataset, int(k)
    cfg.data_dir = _DATA_DIR.value
    cfg.unroll = mode == "scanned"
    prepared = experiment.prepare(cfg)
    fed = prepared.fed if mode != "uncached" else without_neighbour_mean(prepared.fed)
    alg = experiment.build_algorithm(cfg, [prepared])
    data_rss = peak_rss_mib()
    train = fed.train
    n_pad = int(train.labels.shape[1])
    per_client = np.asarray(train.mask).sum(axis=1) // cfg.batch_size
    server, clients = init_states(alg, fed, jax.random.key(0))
    key = jax.random.key(1)
    if mode == "loop":
        times = run_loop(alg, fed, server, clients, key, _REPEATS.value)
    else:
        chunk = 1 if mode in ("chunked", "uncached") else None
        times = run_vmapped(alg, fed, server, clients, key, _REPEATS.value, chunk)
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
        **{f"{part}_{key}": value for part, stats in times.items() for key, value in stats.items()},
        "data_rss_mib": data_rss,
        "peak_rss_mib": peak_rss_mib(),
        "backend": f"jax {jax.__version__} on {jax.default_backend()}",
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | K | nodes/client (pad) | edges/client (pad) | steps (scan / busiest / sum) | mode "
        "| round s (median, min) | round CPU s | eval s (median, min) | eval CPU s "
        "| first round s | peak RSS MiB (data) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['K']} | {r['nodes_pad']} | {r['edges_pad']} "
            f"| {r['scan_steps']} / {r['active_steps']} / {r['client_steps']} | {r['mode']} "
            f"| {r['round_median_s']:.3f}, {r['round_min_s']:.3f} | {r['round_cpu_s']:.3f} "
            f"| {r['eval_median_s']:.3f}, {r['eval_min_s']:.3f} | {r['eval_cpu_s']:.3f} "
            f"| {r['round_first_s']:.1f} | {r['peak_rss_mib']:.0f} ({r['data_rss_mib']:.0f}) |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if _WORKER.value:
        print(json.dumps(worker(_WORKER.value)))
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    rows = []
    for dataset in _DATASETS.value:
        for k in _CLIENTS.value:
            for mode in _MODES.value:
                spec = f"{dataset}:{k}:{mode}"
                args = [sys.executable, __file__, f"--worker={spec}", f"--repeats={_REPEATS.value}"]
                args.append(f"--data_dir={_DATA_DIR.value}")
                out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
                if out.returncode != 0:
                    sys.exit(f"{spec} failed:\n{out.stderr[-3000:]}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{spec}: round {rows[-1]['round_median_s']:.3f}s", file=sys.stderr)
    print(f"{rows[0]['backend']}, {os.cpu_count()} CPUs\n")
    print(table(rows))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
