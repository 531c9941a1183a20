"""Times one FedAvg round of the engine four ways and reports achieved FLOP/s against a matmul peak.

  vmapped   `make_round` (evaluate=False): every client's local training in one jitted program;
  loop      a Python loop calling a jitted per-client update, then a jitted server average (the
            FedJAX way); per-client data slices and keys are prepared outside the timed region;
  chunk=k   the vmapped round with `EngineConfig(client_chunk=k)` (`lax.map` over groups of k);
  sharded   the vmapped round with the clients axis over --devices emulated host devices (the script
            re-executes itself with XLA_FLAGS=--xla_force_host_platform_device_count=N).

Local training is a fixed number of SGD steps (`Schedule(batch, steps=S, unroll=True)`; --nounroll
keeps the steps in a `lax.scan` loop, which XLA:CPU runs much slower for convolutions), so every
client does the same work. Times are medians (and minima) over --repeats rounds after one
compile-and-warm-up call, interleaved across modes; `vs loop` is the loop's median over the mode's
median. The machine's load average is printed: on a shared machine rerun on a quiet one. FLOPs of one
local step come from XLA's cost analysis of the compiled step (an analytic count of the dense and conv
layers, x3 for forward + backward, is printed beside it and used where cost analysis is unavailable);
a round is clients x steps x that, plus the server average. XLA counts a scan's body once, which is
why the round is not cost-analysed whole. The peak is the median of 2048x2048 f32 matmuls.

  PYTHONPATH=. python scripts/bench_engine.py --devices=2     # full run, ~10 min on 2 CPU cores
  PYTHONPATH=. python scripts/bench_engine.py --quick         # a few minutes
  PYTHONPATH=. python scripts/bench_engine.py --models=convnet --convnet_clients=100 \
      --image_size=28 --width=128 --steps=2 --repeats=3 --chunks=
"""

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from experiments import cli
from fedjax_syn.algorithms.fedavg import fedavg, local_loss
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData, Federation, round_up
from fedjax_syn.engine import sharding
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models.conv import CONV_IMPLS
from fedjax_syn.models.vision import MLP, ConvNet, count_params

_CLIENTS = flags.DEFINE_list("clients", ["10", "100", "1000"], "Numbers of clients (MLP).")
_CONV_CLIENTS = flags.DEFINE_list(
    "convnet_clients",
    ["10", "100"],
    "Numbers of clients for the ConvNet (minutes per round at 1000).",
)
_MODELS = flags.DEFINE_list("models", ["mlp", "convnet"], "Models: mlp (64-H-10), convnet.")
_STEPS = flags.DEFINE_integer("steps", 10, "Local SGD steps per round.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 10, "Local minibatch size.", lower_bound=1)
_EXAMPLES = flags.DEFINE_integer("examples", 50, "Training examples per client.", lower_bound=1)
_UNROLL = flags.DEFINE_bool(
    "unroll", True, "Unroll the local steps (Schedule.unroll); --nounroll keeps the lax.scan loop."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds per mode (median).", lower_bound=1)
_CHUNKS = flags.DEFINE_list("chunks", ["10", "100"], "client_chunk values (those < clients run).")
_DEVICES = flags.DEFINE_integer(
    "devices", 1, "Also time the round sharded over N host devices.", lower_bound=1
)
_HIDDEN = flags.DEFINE_integer("mlp_hidden", 32, "MLP hidden width (64-H-10).", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 32, "ConvNet width (128 in the papers).", lower_bound=1)
_CONV = flags.DEFINE_enum(
    "conv", "auto", list(CONV_IMPLS), "ConvNet convolutions (models/conv.py; auto: by backend)."
)
_IMAGE = flags.DEFINE_integer(
    "image_size", 8, "ConvNet input side: 8 (digits) or 28 (MNIST).", lower_bound=8
)
_PEAK_N = flags.DEFINE_integer("peak_size", 2048, "Side of the peak's f32 matmul.", lower_bound=1)
_QUICK = flags.DEFINE_bool("quick", False, "Small run: 10,100 clients, 3 repeats, one chunk size.")

NUM_CLASSES = 10
PEAK_REPEATS = 7


def block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def measure(runners: dict[str, tuple[Callable, Any]], repeats: int) -> dict[str, tuple]:
    """name -> (median, min, first-call) seconds of `state = step(state)` for each runner.

    Every runner is called once first (compile and warm-up); the timed calls are then interleaved
    across runners, so a change in background load hits every runner alike.
    """
    states, first = {}, {}
    for name, (step, state) in runners.items():
        start = time.perf_counter()
        states[name] = block(step(state))
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, (step, _) in runners.items():
            start = time.perf_counter()
            states[name] = block(step(states[name]))
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t), first[name]) for name, t in times.items()}


def matmul_peak(n: int) -> float:
    """FLOP/s of an n x n f32 matmul (median of PEAK_REPEATS) on the default device."""
    a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    seconds, _, _ = measure({"matmul": (lambda _: matmul(a, b), None)}, PEAK_REPEATS)["matmul"]
    return 2 * n**3 / seconds


def schedule() -> Schedule:
    return Schedule(_BATCH.value, epochs=None, steps=_STEPS.value, unroll=_UNROLL.value or 1)


def make_task(model: str) -> tuple[Task, tuple[int, ...]]:
    """The model and the shape of one input example."""
    if model == "mlp":
        return Task(MLP(NUM_CLASSES, (_HIDDEN.value,)), graph=False), (64,)
    return Task(ConvNet(NUM_CLASSES, _WIDTH.value, conv=_CONV.value), graph=False), (
        _IMAGE.value,
    ) * 2 + (1,)


def make_federation(clients: int, padded: int, shape: tuple[int, ...], seed: int = 0) -> Federation:
    """`clients` clients of random examples, plus empty clients up to `padded`; no eval groups."""
    rng = np.random.default_rng(seed)
    n = _EXAMPLES.value
    x = rng.normal(size=(padded, n, *shape)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(padded, n)).astype(np.int32)
    real = np.arange(padded) < clients
    mask = np.broadcast_to(real[:, None], (padded, n)).copy()
    data = ClientData(x, y, mask, np.zeros_like(mask))
    return Federation(jax.tree.map(jnp.asarray, data), {}, jnp.asarray(real), NUM_CLASSES)


def step_flops(task: Task, optimizer, params: Any, data: ClientData) -> float | None:
    """FLOPs of one local SGD step on one client, from XLA's cost analysis (None if unavailable)."""

    def step(params, data, idx, weights, key):
        loss, grads = jax.value_and_grad(local_loss(task, data))(params, idx, weights, key)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates), loss

    one = jax.tree.map(lambda leaf: leaf[0], data)
    idx = jnp.zeros((_BATCH.value,), jnp.int32)
    weights = jnp.ones((_BATCH.value,), jnp.float32)
    compiled = jax.jit(step).lower(params, one, idx, weights, jax.random.key(0)).compile()
    return _flops(compiled)


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and cost.get("flops") else None


def analytic_step_flops(params: Any) -> float:
    """3 x forward multiply-adds x 2 of the dense and conv layers (SAME convs, 2x2 pooling)."""
    forward, conv_layer = 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jax.tree_util.keystr(path[-1:]) != "['kernel']":
            continue
        if leaf.ndim == 2:
            forward += 2 * leaf.shape[0] * leaf.shape[1]
        else:
            side = _IMAGE.value // 2**conv_layer
            forward += 2 * int(np.prod(leaf.shape)) * side * side
            conv_layer += 1
    return 3.0 * forward * _BATCH.value


def loop_round(alg: base.FederatedAlgorithm, fed: Federation, key: jax.Array) -> Callable:
    """A round as a Python loop over clients; returns step(server) -> server."""
    update = jax.jit(alg.client_update)
    stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    aggregate = jax.jit(lambda s, ups, m, k: alg.server_update(s, stack(ups), m, k))
    # The same per-client keys as `round_step`, so both give the same server.
    update_key, server_key, _ = jax.random.split(key, 3)
    keys = list(jax.random.split(update_key, fed.num_clients))
    datas = [jax.tree.map(lambda leaf, k=k: leaf[k], fed.train) for k in range(fed.num_clients)]
    state = alg.init_client(None, None, None)

    def step(server):
        uploads = [update(server, state, d, k)[1] for d, k in zip(datas, keys)]
        return aggregate(server, uploads, fed.client_mask, server_key)

    return step


def vmapped_round(alg, fed, key, config: EngineConfig) -> Callable:
    round_fn = make_round(alg, config)

    def step(carry):
        server, clients = carry
        server, clients, _ = round_fn(server, clients, fed, key, evaluate=False)
        return server, clients

    return step


def copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def relative_diff(a: Any, b: Any) -> float:
    """max |a - b| / max |a| over all leaves."""
    leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in leaves)
    return diff / max(float(jnp.max(jnp.abs(x))) for x, _ in leaves)


def bench_config(model: str, clients: int, peak: float) -> list[dict]:
    """Rows of the table for one (model, clients)."""
    task, shape = make_task(model)
    optimizer = optax.sgd(0.05)
    alg = fedavg(task, optimizer, schedule())
    fed = make_federation(clients, clients, shape)
    key = jax.random.key(1)
    server, client_states = init_states(alg, fed, jax.random.key(0))
    per_step = step_flops(task, optimizer, server, fed.train)
    analytic = analytic_step_flops(server)
    uploads = {"params": jax.tree.map(lambda p: jnp.stack([p] * clients), server)}
    uploads |= {"size": jnp.ones(clients)}
    agg = jax.jit(alg.server_update).lower(server, uploads, fed.client_mask, key).compile()
    flops = clients * _STEPS.value * (per_step or analytic)
    flops += _flops(agg) or 2 * clients * count_params(server)
    print(
        f"# {model}, {clients} clients: {count_params(server)} params; FLOPs/step "
        f"cost_analysis={per_step} analytic={analytic:.4g}; round={flops:.4g}",
        flush=True,
    )

    fresh = lambda: (copy(server), copy(client_states))
    vmapped = vmapped_round(alg, fed, key, EngineConfig())
    loop = loop_round(alg, fed, key)
    runners = {"vmapped": (vmapped, fresh()), "loop": (loop, server)}
    for chunk in sorted({int(c) for c in _CHUNKS.value}):
        if chunk < clients:
            config = EngineConfig(client_chunk=chunk)
            runners[f"chunk={chunk}"] = (vmapped_round(alg, fed, key, config), fresh())
    if _DEVICES.value > 1:
        runners[f"sharded x{_DEVICES.value}"] = sharded_runner(alg, clients, shape, key)
    timings = measure(runners, _REPEATS.value)

    rows = []
    for mode, (seconds, fastest, first) in timings.items():
        rows.append(
            dict(
                model=model,
                clients=clients,
                mode=mode,
                seconds=seconds,
                fastest=fastest,
                first=first,
                gflops=flops / seconds / 1e9,
                peak_frac=flops / seconds / peak,
            )
        )
        print(
            f"  {mode:>10}: median {seconds * 1e3:9.2f} ms, min {fastest * 1e3:9.2f} ms "
            f"(first call {first:.2f} s)",
            flush=True,
        )
    diff = relative_diff(loop(server), vmapped(fresh())[0])
    print(f"  max |loop - vmapped| / max |loop| over server parameters: {diff:.1e}", flush=True)
    return rows


def sharded_runner(alg, clients: int, shape: tuple[int, ...], key: jax.Array) -> tuple:
    """The vmapped round with clients (padded to a multiple of the devices) over a 1-D mesh."""
    mesh = sharding.client_mesh(_DEVICES.value)
    fed = make_federation(clients, round_up(clients, _DEVICES.value), shape)
    fed = sharding.shard_federation(fed, mesh)
    server, client_states = init_states(alg, fed, jax.random.key(0))
    state = (sharding.replicate(server, mesh), sharding.shard_clients(client_states, mesh))
    return vmapped_round(alg, fed, key, EngineConfig()), state


def reexec_with_host_devices(n: int) -> None:
    """Restarts this script with n emulated host devices (XLA reads the flag once, at start-up)."""
    flag = f"--xla_force_host_platform_device_count={n}"
    if flag in os.environ.get("XLA_FLAGS", ""):
        cli.fail(f"asked for {n} devices, but only {jax.device_count()} came up")
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip())
    env.setdefault("JAX_PLATFORMS", "cpu")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()} "
        f"x{jax.device_count()}; python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def table(rows: list[dict]) -> str:
    """Markdown: one line per (model, clients, mode); `vs loop` = loop time / this time."""
    loop = {(r["model"], r["clients"]): r["seconds"] for r in rows if r["mode"] == "loop"}
    lines = [
        "| model | clients | mode | median ms | min ms | first call s | vs loop | GFLOP/s | % of peak |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = loop.get((r["model"], r["clients"]))
        ratio = f"{ref / r['seconds']:.2f}x" if ref else "-"
        lines.append(
            f"| {r['model']} | {r['clients']} | {r['mode']} | {r['seconds'] * 1e3:.1f} | "
            f"{r['fastest'] * 1e3:.1f} | "
            f"{r['first']:.2f} | {ratio} | {r['gflops']:.2f} | {100 * r['peak_frac']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv  # cli.run rejects stray arguments
    if _DEVICES.value > 1 and jax.device_count() < _DEVICES.value:
        reexec_with_host_devices(_DEVICES.value)
    if _QUICK.value:
        quick = {
            "clients": ["10", "100"],
            "convnet_clients": ["10"],
            "repeats": 3,
            "chunks": ["10"],
        }
        for flag, value in quick.items():
            if not flags.FLAGS[flag].present:
                flags.FLAGS[flag].value = value
    for m in _MODELS.value:
        if m not in ("mlp", "convnet"):
            cli.fail(f"unknown model {m!r}; choose from mlp, convnet")
    sizes = {"mlp": _CLIENTS.value, "convnet": _CONV_CLIENTS.value}
    for name, values in (
        ("clients", _CLIENTS.value),
        ("convnet_clients", _CONV_CLIENTS.value),
        ("chunks", _CHUNKS.value),
    ):
        if not all(v.isdigit() and int(v) > 0 for v in values):
            cli.fail(f"--{name} must be positive integers, got {','.join(values)!r}")
    print(f"machine: {machine()}", flush=True)
    peak = matmul_peak(_PEAK_N.value)
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({_PEAK_N.value}^2 f32 matmul, median)", flush=True)
    print(
        f"setup: steps={_STEPS.value} batch={_BATCH.value} examples/client={_EXAMPLES.value} "
        f"unroll={_UNROLL.value} repeats={_REPEATS.value} mlp=64-{_HIDDEN.value}-10 "
        f"convnet=width {_WIDTH.value}, depth 3, {_IMAGE.value}x{_IMAGE.value}x1",
        flush=True,
    )
    rows = []
    for model in _MODELS.value:
        for clients in sizes[model]:
            rows.extend(bench_config(model, int(clients), peak))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}\n")
    print(table(rows))


if __name__ == "__main__":
    cli.run(main)
