"""One FedAvg round of fixed local work on random data, timed in every layout side by side.

Layouts: `loop` (the reference per-client loop of `harness.loop_round`), `vmapped`
(`make_round`: every client in one jitted program), `chunk=k` (`EngineConfig(client_chunk=k)`:
`lax.map` over groups of k clients; chunk=1 runs each client unbatched), `chunk=1 vmapped` (each
client as a vmap of one) and `sharded xN` (the vmapped round with the clients axis
over N devices). Every client runs the same number of SGD steps on random examples, so the work
is fixed and the layouts differ only in how it is laid out.

A round's FLOPs are clients x steps x the FLOPs of one local step, from XLA's cost analysis of
that step compiled alone (XLA counts a loop body once, so the round is not analysed whole), plus
the server update's; an analytic count of the dense and conv layers stands in where cost
analysis is unavailable.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness
from fedjax_syn.algorithms.fedavg import fedavg, local_loss
from fedjax_syn.core.arrays import ClientData, Federation, round_up
from fedjax_syn.core.interface import FederatedAlgorithm
from fedjax_syn.engine import evaluation, sharding
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.mapping import map_clients
from fedjax_syn.engine.round import EngineConfig, init_states, make_round
from fedjax_syn.engine.task import Task
from fedjax_syn.models import dense
from fedjax_syn.models.vision import MLP, ConvNet, count_params

NUM_CLASSES = 10
# The per-client loops: with the setup's model, and for an MLP whose kernel gradients are outer
# products (models/dense.py: minibatches of at most ROW_LIMIT rows), also with flax's own Dense.
# `vs loop` is against the faster one.
PLAIN_LOOP = "loop, flax Dense"
LOOPS = ("loop", PLAIN_LOOP)


@dataclasses.dataclass(frozen=True)
class RoundSetup:
    """A federation of `clients` clients, each running `steps` SGD steps of `batch` examples."""

    model: str  # "mlp" or "convnet"
    clients: int
    input_shape: tuple[int, ...]  # one example: (features,) for the MLP, (side, side, 1) else
    hidden: tuple[int, ...] = (32,)  # MLP hidden widths
    width: int = 32  # ConvNet width
    conv: str = "auto"  # ConvNet convolutions (models/conv.py)
    dense: str = "auto"  # MLP products (models/dense.py)
    steps: int = 10
    batch: int = 10
    examples: int = 50  # per client; the steps draw minibatches from them
    unroll: bool = True  # unrolled local steps; False keeps the engine's loop
    lr: float = 0.05

    def describe(self) -> str:
        if self.model == "mlp":
            widths = [int(np.prod(self.input_shape)), *self.hidden, NUM_CLASSES]
            model = "MLP " + "-".join(map(str, widths))
        else:
            side = "x".join(map(str, self.input_shape))
            model = f"ConvNet width {self.width}, {side}"
        return f"{model}, {self.steps} steps of {self.batch}"


def make_task(setup: RoundSetup) -> Task:
    if setup.model == "mlp":
        return Task(MLP(NUM_CLASSES, setup.hidden, setup.dense), graph=False)
    return Task(ConvNet(NUM_CLASSES, setup.width, conv=setup.conv), graph=False)


def make_algorithm(setup: RoundSetup) -> FederatedAlgorithm:
    schedule = Schedule(setup.batch, epochs=None, steps=setup.steps, unroll=setup.unroll or 1)
    return fedavg(make_task(setup), optax.sgd(setup.lr), schedule)


def make_federation(setup: RoundSetup, padded: int | None = None, seed: int = 0) -> Federation:
    """`setup.clients` clients of random examples, plus empty clients up to `padded`."""
    padded = padded or setup.clients
    rng = np.random.default_rng(seed)
    n = setup.examples
    x = rng.normal(size=(padded, n, *setup.input_shape)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(padded, n)).astype(np.int32)
    real = np.arange(padded) < setup.clients
    mask = np.broadcast_to(real[:, None], (padded, n)).copy()
    data = ClientData(x, y, mask, np.zeros_like(mask))
    return Federation(jax.tree.map(jnp.asarray, data), {}, jnp.asarray(real), NUM_CLASSES)


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of a compiled program by XLA's cost analysis, or None where it has none."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and cost.get("flops") else None


def step_flops(setup: RoundSetup, params: Any, data: ClientData) -> float | None:
    """FLOPs of one local SGD step on one client, by XLA's cost analysis."""
    task, optimizer = make_task(setup), optax.sgd(setup.lr)

    def step(params, data, idx, weights, key):
        loss, grads = jax.value_and_grad(local_loss(task, data))(params, idx, weights, key)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        return optax.apply_updates(params, updates), loss

    idx = jnp.zeros((setup.batch,), jnp.int32)
    weights = jnp.ones((setup.batch,), jnp.float32)
    one = harness.take_client(data, 0)
    return compiled_flops(
        jax.jit(step).lower(params, one, idx, weights, jax.random.key(0)).compile()
    )


def analytic_step_flops(setup: RoundSetup, params: Any) -> float:
    """3 (forward and backward) x 2 x the multiply-adds of the dense and conv layers; SAME convs
    on a side halved by each block's pooling. It charges the first layer an input gradient that
    is never computed, counts the convs' padding taps and ignores normalisation and pooling, so
    it is an estimate, not XLA's count."""
    forward, conv_layer = 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jax.tree_util.keystr(path[-1:]) != "['kernel']":
            continue
        if leaf.ndim == 2:
            forward += 2 * leaf.shape[0] * leaf.shape[1]
        else:
            side = setup.input_shape[0] // 2**conv_layer
            forward += 2 * int(np.prod(leaf.shape)) * side * side
            conv_layer += 1
    return 3.0 * forward * setup.batch


def server_flops(alg: FederatedAlgorithm, server: Any, clients: Any, fed: Federation) -> float:
    """FLOPs of the server update over every client's upload (cost analysis, else two per
    parameter and client: the weighted average)."""
    key = jax.random.key(0)
    one = harness.take_client
    upload = jax.eval_shape(
        alg.client_update, server, one(clients, 0), one(fed.train, 0), key
    ).upload
    stacked = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((fed.num_clients, *s.shape), s.dtype), upload
    )
    compiled = jax.jit(alg.server_update).lower(server, stacked, fed.client_mask, key).compile()
    return compiled_flops(compiled) or 2.0 * fed.num_clients * count_params(server)


def vmapped_round(alg: FederatedAlgorithm, fed: Federation, key: jax.Array, config: EngineConfig):
    """The engine's round without evaluation as step((server, clients)) -> the same."""
    round_fn = make_round(alg, config)

    def step(carry):
        server, clients, _ = round_fn(*carry, fed, key, evaluate=False)
        return server, clients

    return step


def evaluate_program(alg: FederatedAlgorithm, config: EngineConfig):
    """Jitted (server, client states, fed, key) -> counts: what a round's evaluation computes,
    as its own program."""

    def evaluate(server, clients, fed, key):
        keys = jax.random.split(key, fed.num_clients)
        personal = lambda state, data, k: alg.personalize(server, state, data, k)
        models = map_clients(personal, (clients, fed.train, keys), config.client_chunk)
        return evaluation.evaluate(
            alg.predict, models, fed, config.client_chunk, config.eval_example_chunk
        )

    return jax.jit(evaluate)


def relative_diff(a: Any, b: Any) -> float:
    """max |a - b| / max |a| over all leaves (host copies, so any device layout compares)."""
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    diff = max(float(np.max(np.abs(x - y))) for x, y in pairs)
    return diff / max(max(float(np.max(np.abs(x))) for x, _ in pairs), 1e-30)


def sharded_runner(alg: FederatedAlgorithm, setup: RoundSetup, key: jax.Array, devices: int):
    """The vmapped round with clients (padded to a multiple of the devices) over a 1-D mesh."""
    mesh = sharding.client_mesh(devices)
    fed = make_federation(setup, round_up(setup.clients, devices))
    fed = sharding.shard_federation(fed, mesh)
    server, clients = init_states(alg, fed, jax.random.key(0))
    state = (sharding.replicate(server, mesh), sharding.shard_clients(clients, mesh))
    return vmapped_round(alg, fed, key, EngineConfig()), state


def compare(
    setup: RoundSetup, *, repeats: int, chunks: tuple[int, ...], peak: float, devices: int = 1
) -> dict[str, Any]:
    """Times one round in every layout, interleaved, and rates each against the loop and the
    matmul peak `peak` (FLOP/s). Every layout runs the same rounds from the same start, so their
    final server parameters are compared with the loop's too."""
    alg = make_algorithm(setup)
    fed = make_federation(setup)
    key = jax.random.key(1)
    server, clients = init_states(alg, fed, jax.random.key(0))
    per_step = step_flops(setup, server, fed.train)
    analytic = analytic_step_flops(setup, server)
    flops = setup.clients * setup.steps * (per_step or analytic)
    flops += server_flops(alg, server, clients, fed)

    fresh = lambda: jax.tree.map(jnp.copy, (server, clients))
    loop_carry = lambda: harness.loop_carry(server, clients, setup.clients)
    runners = {"loop": (harness.loop_round(alg, fed, key), loop_carry())}
    outer = setup.model == "mlp" and dense.dense_function(setup.dense) is not None
    if outer and setup.batch <= dense.ROW_LIMIT:
        plain = make_algorithm(dataclasses.replace(setup, dense="dot"))
        runners[PLAIN_LOOP] = (harness.loop_round(plain, fed, key), loop_carry())
    runners["vmapped"] = (vmapped_round(alg, fed, key, EngineConfig()), fresh())
    for chunk in sorted(c for c in set(chunks) if c < setup.clients):
        config = EngineConfig(client_chunk=chunk)
        runners[f"chunk={chunk}"] = (vmapped_round(alg, fed, key, config), fresh())
    if 1 in chunks and setup.clients > 1:  # one client at a time, each as a vmap of one
        config = EngineConfig(client_chunk=1, vmap_single=True)
        runners["chunk=1 vmapped"] = (vmapped_round(alg, fed, key, config), fresh())
    if devices > 1:
        runners[f"sharded x{devices}"] = sharded_runner(alg, setup, key, devices)
    states, timings = harness.time_interleaved(runners, repeats)

    loop_s = min(timings[mode].median_s for mode in LOOPS if mode in timings)
    modes = {}
    for mode, timing in timings.items():
        modes[mode] = {
            **timing.summary(),
            "vs_loop": loop_s / timing.median_s,
            "gflops": flops / timing.median_s / 1e9,
            "peak_frac": flops / timing.median_s / peak,
            "diff_vs_loop": relative_diff(states["loop"][0], states[mode][0]),
        }
    engine_layouts = {mode: t.median_s for mode, t in timings.items() if mode not in LOOPS}
    return {
        "setup": {**dataclasses.asdict(setup), "description": setup.describe()},
        "fastest_layout": min(engine_layouts, key=engine_layouts.__getitem__),
        "params": count_params(server),
        "flops": {
            "step_cost_analysis": per_step,
            "step_analytic": analytic,
            "round": flops,
            "source": "cost analysis" if per_step else "analytic",
        },
        "modes": modes,
    }


def print_comparison(result: dict[str, Any]) -> None:
    """One line per layout, as the measurement finishes."""
    setup, flops = result["setup"], result["flops"]
    print(
        f"# {setup['description']}, {setup['clients']} clients: {result['params']} params; "
        f"FLOPs/step cost analysis {flops['step_cost_analysis']}, analytic "
        f"{flops['step_analytic']:.4g}; round {flops['round']:.4g}",
        flush=True,
    )
    for mode, m in result["modes"].items():
        print(
            f"  {mode:>11}: median {m['median_s'] * 1e3:9.2f} ms (min {m['min_s'] * 1e3:.2f}, "
            f"max {m['max_s'] * 1e3:.2f}; first call {m['first_s']:.2f} s); "
            f"{m['vs_loop']:.2f}x the loop; {m['gflops']:.2f} GFLOP/s = "
            f"{100 * m['peak_frac']:.1f}% of peak; max rel. diff vs loop {m['diff_vs_loop']:.1e}",
            flush=True,
        )
