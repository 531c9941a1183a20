"""W2's local training written by hand, beside the engine's round, to see how far the engine is
from what XLA:CPU makes of the bare computation (BENCHMARKS.md, "Made the difference for W2").

The hand-written round is the least a FedAvg round of W2 must compute: each client's 10 SGD steps
on pre-drawn minibatches, forward and backward written out (no masks, no random draws, no
gathers, no finiteness check), clients in chunks under `lax.map`, kernel gradients as a batched
dot or as sums of outer products. Timed interleaved in one process with the engine's round in
its fastest W2 layout (chunks of 16).

    taskset -c 1 python -m benchmarks.w2_floor
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import harness, rounds, workloads
from experiments import cli
from fedjax_syn.engine.round import EngineConfig, init_states

_CHUNKS = flags.DEFINE_list("chunks", ["10", "100", "1000"], "Clients per chunk, hand-written.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed rounds per variant.", lower_bound=1)

INPUTS, HIDDEN, CLASSES, LR = 64, 32, 10, 0.05


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
    """[k, rows, m], [k, rows, n] -> [k, m, n]: the rows' outer products summed."""
    return sum(a[:, r, :, None] * b[:, r, None, :] for r in range(a.shape[1]))


def _train(params, x, y, outer: bool):
    """k clients' sum of parameters after their steps; x [k, steps, batch, inputs]."""
    k, steps, batch = y.shape
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), params)
    for s in range(steps):
        xb, yb = x[:, s], y[:, s]
        pre = jnp.einsum("cbi,cih->cbh", xb, p["w1"]) + p["b1"][:, None]
        h = jax.nn.relu(pre)
        z = jnp.einsum("cbh,cho->cbo", h, p["w2"]) + p["b2"][:, None]
        dz = (jax.nn.softmax(z) - jax.nn.one_hot(yb, CLASSES)) / batch
        dh = jnp.einsum("cbo,cho->cbh", dz, p["w2"]) * (pre > 0)
        kernel_grad = _outer if outer else lambda a, b: jnp.einsum("cbm,cbn->cmn", a, b)
        grads = {"w1": kernel_grad(xb, dh), "b1": dh.sum(1), "w2": kernel_grad(h, dz)}
        grads["b2"] = dz.sum(1)
        p = jax.tree.map(lambda a, g: a - LR * g, p, grads)
    return jax.tree.map(lambda a: a.sum(0), p)


def hand_written_round(chunk: int, outer: bool):
    """The server's new parameters: the mean of every client's after its steps."""

    @jax.jit
    def round_fn(params, x, y):
        clients = y.shape[0]
        split = lambda a: a.reshape(clients // chunk, chunk, *a.shape[1:])
        sums = jax.lax.map(lambda xy: _train(params, *xy, outer), (split(x), split(y)))
        return jax.tree.map(lambda a: a.sum(0) / clients, sums)

    return round_fn


def main(argv: list[str]) -> None:
    del argv
    setup = workloads.w2(quick=True)
    chunks = [int(c) for c in _CHUNKS.value]
    for chunk in chunks:
        if chunk < 1 or setup.clients % chunk:
            cli.fail(f"--chunks: {chunk} does not divide the {setup.clients} clients")
    print(f"load average {harness.load_average():.1f}; {harness.cpu_model()}")
    rng = np.random.default_rng(0)
    shape = (setup.clients, setup.steps, setup.batch)
    x = jnp.asarray(rng.normal(size=(*shape, INPUTS)), jnp.float32)
    y = jnp.asarray(rng.integers(0, CLASSES, size=shape))
    params = {
        "w1": jnp.asarray(rng.normal(size=(INPUTS, HIDDEN)) * 0.1, jnp.float32),
        "b1": jnp.zeros(HIDDEN),
        "w2": jnp.asarray(rng.normal(size=(HIDDEN, CLASSES)) * 0.1, jnp.float32),
        "b2": jnp.zeros(CLASSES),
    }
    runners = {}
    for chunk in chunks:
        for outer in (False, True):
            fn = hand_written_round(chunk, outer)
            name = f"hand-written, chunk={chunk}, {'outer' if outer else 'dot'}"
            runners[name] = ((lambda state, fn=fn: fn(state, x, y)), params)
    alg, fed = rounds.make_algorithm(setup), rounds.make_federation(setup)
    engine_state = init_states(alg, fed, jax.random.key(0))
    config = EngineConfig(client_chunk=16)
    runners["engine, chunk=16"] = (
        rounds.vmapped_round(alg, fed, jax.random.key(1), config),
        engine_state,
    )
    _, timings = harness.time_interleaved(runners, _REPEATS.value)
    engine_s = timings["engine, chunk=16"].median_s
    for name, timing in timings.items():
        print(
            f"{name}: median {timing.median_s * 1e3:.1f} ms, engine / this {engine_s / timing.median_s:.2f}x"
        )


if __name__ == "__main__":
    cli.run(main)
