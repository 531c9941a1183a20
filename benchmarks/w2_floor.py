"""W2's local training written by hand, beside the engine's round, to see how far the engine is
from what XLA:CPU makes of the bare computation (BENCHMARKS.md, "Made the difference for W2").

The hand-written round is the least a FedAvg round of W2 must compute: each client's 10 SGD steps
on pre-drawn minibatches, forward and backward written out (no masks, no random draws, no
gathers, no finiteness check), clients in chunks under `lax.map`, kernel gradients as a batched
dot or as sums of outer products. Timed interleaved in one process with the engine's round in
chunks of 16, within 1% of its fastest W2 layout (BENCHMARKS.md, W2 table). With `--parts`, the
pieces of one step of all clients at once are timed one by one too (and one pass over the stacked
first-layer kernels that only reads and writes them): their sum, times the steps, bounds the round
from below wherever nothing fuses across the pieces.

    taskset -c 1 python -m benchmarks.w2_floor --parts
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import hand_written, harness, rounds, workloads
from benchmarks.hand_written import CLASSES, HIDDEN, INPUTS
from experiments import cli
from fedjax_syn.engine.round import EngineConfig, init_states

_CHUNKS = flags.DEFINE_list("chunks", ["10", "100", "1000"], "Clients per chunk, hand-written.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed rounds per variant.", lower_bound=1)
_PARTS = flags.DEFINE_bool("parts", False, "Also time one step's pieces, all clients at once.")


def main(argv: list[str]) -> None:
    del argv
    setup = workloads.w2(quick=True)
    chunks = harness.dividing_chunks(_CHUNKS.value, setup.clients)
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
            fn = hand_written.w2_round(chunk, outer)
            name = f"hand-written, chunk={chunk}, {'outer' if outer else 'dot'}"
            runners[name] = ((lambda state, fn=fn: fn(state, x, y)), params)
    alg, fed = rounds.make_algorithm(setup), rounds.make_federation(setup)
    engine_state = init_states(alg, fed, jax.random.key(0))
    config = EngineConfig(client_chunk=16)
    runners["engine, chunk=16"] = (
        rounds.vmapped_round(alg, fed, jax.random.key(1), config),
        engine_state,
    )
    runners["per-client loop"] = (
        harness.loop_round(alg, fed, jax.random.key(1)),
        # Its own states: the engine's round donates the buffers of the states it is given.
        harness.loop_carry(*init_states(alg, fed, jax.random.key(0)), setup.clients),
    )
    _, timings = harness.time_interleaved(runners, _REPEATS.value)
    engine_s = timings["engine, chunk=16"].median_s
    for name, timing in timings.items():
        ratio = engine_s / timing.median_s
        print(f"{name}: median {timing.median_s * 1e3:.1f} ms, engine / this {ratio:.2f}x")
    if _PARTS.value:
        pieces_s = _time_parts(params, x[:, 0], y[:, 0]) * setup.steps
        loop_s = timings["per-client loop"].median_s
        print(
            f"one step's pieces x {setup.steps} steps: {pieces_s * 1e3:.1f} ms, "
            f"the loop / this {loop_s / pieces_s:.2f}x (8x the loop: {loop_s / 8 * 1e3:.1f} ms)"
        )


def _time_parts(params, xb, yb) -> float:
    """Times one step's pieces for every client at once, interleaved (median of 3x the repeats),
    prints each, and returns the seconds of one step's pieces together."""
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (xb.shape[0], *a.shape)), params)
    parts = hand_written.step_parts(stacked, xb, yb)
    runners = {name: ((lambda _, f=fn, a=args: f(*a)), None) for name, (fn, args) in parts.items()}
    _, timings = harness.time_interleaved(runners, 3 * _REPEATS.value)
    for name, timing in timings.items():
        print(f"  {name}: {timing.median_s * 1e3:.3f} ms")
    return sum(t.median_s for name, t in timings.items() if name in hand_written.STEP_PARTS)


if __name__ == "__main__":
    cli.run(main)
