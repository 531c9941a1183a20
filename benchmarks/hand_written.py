"""The computations that `benchmarks.dense` and `benchmarks.w2_floor` time, free of flags so
that tests can check them: a vmapped SGD step of a dense kernel with its gradient as a dot or as
outer products, and W2's round written by hand."""

import jax
import jax.numpy as jnp
from jax import lax

from fedjax_syn.models.dense import outer_product_matmul


def sgd_step(product):
    """Every client's kernel after one SGD step on sum(product(x, kernel) * g), vmapped."""

    def one(kernel, x, g):
        grad = jax.grad(lambda k: jnp.sum(product(x, k) * g))(kernel)
        return kernel - 0.1 * grad

    return jax.jit(jax.vmap(one))


KERNEL_STEPS = {
    "dot": sgd_step(lambda x, k: lax.dot_general(x, k, (((1,), (0,)), ((), ())))),
    "outer": sgd_step(outer_product_matmul),
}


INPUTS, HIDDEN, CLASSES, LR = 64, 32, 10, 0.05


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
    """[k, rows, m], [k, rows, n] -> [k, m, n]: the rows' outer products summed."""
    return sum(a[:, r, :, None] * b[:, r, None, :] for r in range(a.shape[1]))


def _train(params, x, y, outer: bool):
    """k clients' sum of parameters after their steps; x [k, steps, batch, inputs]."""
    k, steps, batch = y.shape
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), params)
    kernel_grad = _outer if outer else lambda a, b: jnp.einsum("cbm,cbn->cmn", a, b)
    for s in range(steps):
        xb, yb = x[:, s], y[:, s]
        pre = jnp.einsum("cbi,cih->cbh", xb, p["w1"]) + p["b1"][:, None]
        h = jax.nn.relu(pre)
        z = jnp.einsum("cbh,cho->cbo", h, p["w2"]) + p["b2"][:, None]
        dz = (jax.nn.softmax(z) - jax.nn.one_hot(yb, CLASSES)) / batch
        dh = jnp.einsum("cbo,cho->cbh", dz, p["w2"]) * (pre > 0)
        grads = {"w1": kernel_grad(xb, dh), "b1": dh.sum(1), "w2": kernel_grad(h, dz)}
        grads["b2"] = dz.sum(1)
        p = jax.tree.map(lambda a, g: a - LR * g, p, grads)
    return jax.tree.map(lambda a: a.sum(0), p)


def w2_round(chunk: int, outer: bool):
    """The server's new parameters: the mean of every client's after its steps."""

    @jax.jit
    def round_fn(params, x, y):
        clients = y.shape[0]
        split = lambda a: a.reshape(clients // chunk, chunk, *a.shape[1:])
        sums = jax.lax.map(lambda xy: _train(params, *xy, outer), (split(x), split(y)))
        return jax.tree.map(lambda a: a.sum(0) / clients, sums)

    return round_fn
