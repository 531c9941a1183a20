"""W1's two large products alone, beside the engine's round and the per-client loop, to see how
much of the loop's time no layout of the clients can save (BENCHMARKS.md, "Why W1 stays level
with the loop").

Per step a W1 client multiplies its minibatch by the first-layer kernel (32 x 784 by 784 x 128)
and forms that kernel's gradient (784 x 32 by 32 x 128) for the update: with 10 steps and 100
clients, 12.8 of the round's 13.3 GFLOP. `hand_written.kernel_products_round` runs only these
two products and the update, on pre-drawn minibatches, one client at a time or vmapped in chunks,
steps unrolled or looped; the fastest of these forms is the figure.
If they alone take longer than the loop's round divided by 1.2, no layout of the clients makes
the round 1.2x the loop on this backend.

    taskset -c 1 python -m benchmarks.w1_floor
"""

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from benchmarks import hand_written, harness, rounds, workloads
from experiments import cli
from fedjax_syn.engine.round import EngineConfig, init_states

_CHUNKS = flags.DEFINE_list("chunks", ["1", "4", "10"], "Clients per chunk, the products alone.")
_ENGINE_CHUNK = flags.DEFINE_integer("engine_chunk", 4, "The engine's chunk (W1's fastest).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed rounds per variant.", lower_bound=1)


def main(argv: list[str]) -> None:
    del argv
    setup = workloads.w1(quick=True)
    chunks = harness.dividing_chunks(_CHUNKS.value, setup.clients)
    print(f"load average {harness.load_average():.1f}; {harness.cpu_model()}")
    peak = harness.matmul_peak()
    (inputs,), (hidden,) = setup.input_shape, setup.hidden
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(setup.clients, setup.steps, setup.batch, inputs)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(inputs, hidden)) * 0.05, jnp.float32)
    flops = 2 * 2 * setup.clients * setup.steps * setup.batch * inputs * hidden

    alg, fed = rounds.make_algorithm(setup), rounds.make_federation(setup)
    engine = f"engine, chunk={_ENGINE_CHUNK.value}"
    runners = {
        "per-client loop": (
            harness.loop_round(alg, fed, jax.random.key(1)),
            harness.loop_carry(*init_states(alg, fed, jax.random.key(0)), setup.clients),
        ),
        engine: (
            rounds.vmapped_round(
                alg, fed, jax.random.key(1), EngineConfig(client_chunk=_ENGINE_CHUNK.value)
            ),
            init_states(alg, fed, jax.random.key(0)),
        ),
    }
    products = []  # the names of the products-alone forms
    for chunk in chunks:
        for unroll in (True, False):
            fn = hand_written.kernel_products_round(chunk, unroll)
            products.append(
                f"the two products alone, chunk={chunk}, {'unrolled' if unroll else 'looped'}"
            )
            runners[products[-1]] = ((lambda _, f=fn: f(kernel, x)), None)
    _, timings = harness.time_interleaved(runners, _REPEATS.value)
    loop_s = timings["per-client loop"].median_s
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; the two products: {flops / 1e9:.2f} GFLOP")
    for name, timing in timings.items():
        line = f"{name}: median {timing.median_s * 1e3:.1f} ms, {loop_s / timing.median_s:.2f}x"
        if name in products:
            share = flops / timing.median_s / peak
            line += f" the loop, {flops / timing.median_s / 1e9:.1f} GFLOP/s = {share:.0%} of peak"
        print(line)
    best = min(timings[name].median_s for name in products)
    print(
        f"the two products alone: {best * 1e3:.1f} ms, the loop / this {loop_s / best:.2f}x; "
        f"1.2x the loop needs the whole round in {loop_s / 1.2 * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    cli.run(main)
