"""The server's weighted average over clients, as written now (`weighted_average`: a product
with the weights) against the sum it replaced (`sum(x * w, axis=0) / sum(w)`), timed interleaved
in one process on stacked leaves of the shapes that showed the difference (BENCHMARKS.md,
"Averaging over clients"). FedSage+'s generator layer takes minutes as a sum: `--shapes` adds it.

    taskset -c 0 python -m benchmarks.averaging
    taskset -c 0 python -m benchmarks.averaging --shapes=100x784x128,3x2048x7165
"""

import jax
import jax.numpy as jnp
from absl import flags

from benchmarks import harness
from experiments import cli
from fedjax_syn.core.interface import weighted_average

_SHAPES = flags.DEFINE_list(
    "shapes",
    ["100x784x128", "10x1433x128", "50x3x3x32x32"],
    "Stacked leaf shapes, clients first: W1's first layer, a Cora GraphSAGE layer, a ConvNet one.",
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per formulation.", lower_bound=1)


def summed(stacked: jax.Array, weights: jax.Array) -> jax.Array:
    """The former formulation, kept here as the reference."""
    w = weights.reshape((-1,) + (1,) * (stacked.ndim - 1))
    return jnp.sum(stacked * w, axis=0) / jnp.maximum(jnp.sum(weights), 1e-12)


_SUMMED = jax.jit(summed)
_PRODUCT = jax.jit(weighted_average)


def _step(fn):
    """A timing step: (stacked, weights, last output) -> the same with the new output."""
    return lambda state: (state[0], state[1], fn(state[0], state[1]))


def parse(shape: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape.split("x"))
    except ValueError:
        dims = ()
    if len(dims) < 2 or min(dims) < 1:
        cli.fail(f"--shapes: {shape!r} is not a shape like 100x784x128 (clients first)")
    return dims


def main(argv: list[str]) -> None:
    del argv
    shapes = [parse(s) for s in _SHAPES.value]
    print(f"load average {harness.load_average():.1f}; {harness.cpu_model()}")
    for shape in shapes:
        stacked = jax.random.normal(jax.random.key(0), shape)
        weights = jnp.arange(1.0, shape[0] + 1)
        runners = {
            name: (_step(fn), (stacked, weights, None))
            for name, fn in (("sum", _SUMMED), ("product", _PRODUCT))
        }
        line = harness.side_by_side(runners, _REPEATS.value, lambda s: s[2], digits=2)
        print(f"{'x'.join(map(str, shape))}: {line}", flush=True)


if __name__ == "__main__":
    cli.run(main)
