"""A dense layer's product whose kernel gradient is a sum of outer products over few rows, a
drop-in for `lax.dot_general` in `flax.linen.Dense` (same parameters, same results up to the
order of summation).

Why: a client's local step contracts its minibatch (often 10 rows) into the kernel gradient.
Under `vmap` over clients that is a batched dot with a tiny contraction, which XLA:CPU runs at a
small share of its peak: W2's first layer and its SGD update, 1000 clients of 10 rows, take
2.8 ms a step as a batched dot and 0.57 ms as a sum of ten outer products (one loop fusion with
the update). Up to `ROW_LIMIT` rows the kernel gradient is therefore that sum; above it, and for
the inputs' gradient, it stays a dot. The forward product is always a dot. BENCHMARKS.md
("Made the difference for W2: kernel gradients as sums of outer products") has the measurements.
"""

import jax
from jax import lax

from fedjax_syn.core.errors import check, check_choice

DENSE_IMPLS = ("auto", "dot", "outer")
ROW_LIMIT = 16  # rows up to which "outer" sums outer products (measured, BENCHMARKS.md)


@jax.custom_vjp
def outer_product_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` for x [..., in] and kernel [in, out]; its kernel gradient sums outer products."""
    return x @ kernel


def _forward(x, kernel):
    return x @ kernel, (x, kernel)


def _backward(residuals, g):
    x, kernel = residuals
    rows_x = x.reshape((-1, x.shape[-1]))
    rows_g = g.reshape((-1, g.shape[-1]))
    d_kernel = sum(rows_x[r][:, None] * rows_g[r][None, :] for r in range(rows_x.shape[0]))
    return g @ kernel.T, d_kernel.astype(kernel.dtype)


outer_product_matmul.defvjp(_forward, _backward)


def outer_product_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """flax Dense's `dot_general`: `outer_product_matmul` up to `ROW_LIMIT` rows, a dot above."""
    check(
        dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and rhs.ndim == 2,
        f"the outer-product dense product needs flax Dense's contraction of the last input axis "
        f"with a 2-d kernel, got dimension_numbers={dimension_numbers}",
    )
    if lhs.size // lhs.shape[-1] > ROW_LIMIT:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return outer_product_matmul(lhs, rhs)


def dense_function(impl: str):
    """The `dot_general` that flax's Dense should use for `impl` (None: flax's own). "auto" is
    "outer" on CPU and "dot" elsewhere (a small contraction is an accelerator's own business)."""
    check_choice("dense implementation", impl, DENSE_IMPLS)
    if impl == "auto":
        impl = "outer" if jax.default_backend() == "cpu" else "dot"
    return outer_product_dot if impl == "outer" else None
