"""A dense layer's kernel gradient and SGD update for a stack of clients, as flax's Dense computes
it (a batched dot contracting the minibatch rows) against the sum of outer products of
`fedjax_syn/models/dense.py`, timed interleaved in one process for several row counts
(BENCHMARKS.md, "Made the difference for W2"). The row counts where the sum wins set `ROW_LIMIT`.

    taskset -c 1 python -m benchmarks.dense
    taskset -c 1 python -m benchmarks.dense --shapes=1000x64x32 --rows=10
"""

import jax
from absl import flags

from benchmarks import hand_written, harness
from experiments import cli
from fedjax_syn.models.dense import ROW_LIMIT

_SHAPES = flags.DEFINE_list(
    "shapes",
    ["1000x64x32", "100x784x128", "10x784x128", "1x784x128"],
    "clients x inputs x outputs: W2's first layer (1000 clients), W1's (100), fewer clients.",
)
_ROWS = flags.DEFINE_list("rows", ["4", "8", "16", "32"], "Minibatch rows (the contraction).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed calls per formulation.", lower_bound=1)


def parse(text: str, name: str, parts: int) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split("x"))
    except ValueError:
        dims = ()
    if len(dims) != parts or min(dims) < 1:
        cli.fail(f"--{name}: {text!r} is not {parts} positive integers joined by 'x'")
    return dims


def main(argv: list[str]) -> None:
    del argv
    shapes = [parse(s, "shapes", 3) for s in _SHAPES.value]
    rows = [parse(r, "rows", 1)[0] for r in _ROWS.value]
    print(
        f"load average {harness.load_average():.1f}; {harness.cpu_model()}; ROW_LIMIT {ROW_LIMIT}"
    )
    for clients, inputs, outputs in shapes:
        for r in rows:
            k_w, k_x, k_g = jax.random.split(jax.random.key(r), 3)
            kernel = jax.random.normal(k_w, (clients, inputs, outputs))
            x = jax.random.normal(k_x, (clients, r, inputs))
            g = jax.random.normal(k_g, (clients, r, outputs))
            runners = {
                name: ((lambda s, fn=fn, x=x, g=g: (fn(s[0], x, g), s[1])), (kernel, None))
                for name, fn in hand_written.KERNEL_STEPS.items()
            }
            line = harness.side_by_side(runners, _REPEATS.value, lambda s: s[0], digits=3)
            print(f"{clients} clients, {inputs}x{outputs}, {r} rows: {line}", flush=True)


if __name__ == "__main__":
    cli.run(main)
