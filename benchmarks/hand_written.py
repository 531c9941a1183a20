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


def _kernel_grad(outer: bool):
    return _outer if outer else lambda a, b: jnp.einsum("cbm,cbn->cmn", a, b)


def _hidden(p, xb):
    """The first layer's pre-activations [k, batch, hidden]."""
    return jnp.einsum("cbi,cih->cbh", xb, p["w1"]) + p["b1"][:, None]


def _logits(p, pre):
    return jnp.einsum("cbh,cho->cbo", jax.nn.relu(pre), p["w2"]) + p["b2"][:, None]


def _logit_grad(z, yb):
    """The mean cross-entropy's gradient with respect to the logits."""
    return (jax.nn.softmax(z) - jax.nn.one_hot(yb, CLASSES)) / yb.shape[1]


def _hidden_grad(p, dz, pre):
    return jnp.einsum("cbo,cho->cbh", dz, p["w2"]) * (pre > 0)


def _sgd_kernel(kernel, a, b, outer: bool):
    """kernel - LR * (the rows' kernel gradient a^T b)."""
    return kernel - LR * _kernel_grad(outer)(a, b)


def w2_step(p, xb, yb, outer: bool):
    """Every client's parameters after one SGD step on its minibatch (xb, yb), written out."""
    pre = _hidden(p, xb)
    z = _logits(p, pre)
    dz = _logit_grad(z, yb)
    dh = _hidden_grad(p, dz, pre)
    return {
        "w1": _sgd_kernel(p["w1"], xb, dh, outer),
        "b1": p["b1"] - LR * dh.sum(1),
        "w2": _sgd_kernel(p["w2"], jax.nn.relu(pre), dz, outer),
        "b2": p["b2"] - LR * dz.sum(1),
    }


def _train(params, x, y, outer: bool):
    """k clients' sum of parameters after their steps; x [k, steps, batch, inputs]."""
    k, steps, _ = y.shape
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), params)
    for s in range(steps):
        p = w2_step(p, x[:, s], y[:, s], outer)
    return jax.tree.map(lambda a: a.sum(0), p)


STEP_PARTS = (
    "first layer forward (dot)",
    "second layer forward (ReLU, dot)",
    "softmax cross-entropy gradient",
    "hidden gradient (dot, ReLU mask)",
    "first kernel: outer products + SGD",
    "second kernel: outer products + SGD",
    "biases + SGD",
)
MEMORY_PASS = "one read and write of the stacked first-layer kernels (not a piece)"


def step_parts(params, xb, yb) -> dict[str, tuple]:
    """The pieces of one SGD step of every client at once (params stacked [k, ...], one
    minibatch xb [k, batch, inputs], yb [k, batch]), each as (jitted function, its arguments),
    in the order `w2_step` runs them with kernel gradients as outer products; and one pass over
    the stacked first-layer kernels that only reads and writes them, the memory traffic that
    every step's first-layer update pays at least."""
    pre = _hidden(params, xb)
    z = _logits(params, pre)
    dz = _logit_grad(z, yb)
    dh = _hidden_grad(params, dz, pre)
    pieces = (
        (_hidden, params, xb),
        (_logits, params, pre),
        (_logit_grad, z, yb),
        (_hidden_grad, params, dz, pre),
        (lambda w, a, b: _sgd_kernel(w, a, b, True), params["w1"], xb, dh),
        (lambda w, a, b: _sgd_kernel(w, jax.nn.relu(a), b, True), params["w2"], pre, dz),
        (lambda p, a, b: (p["b1"] - LR * a.sum(1), p["b2"] - LR * b.sum(1)), params, dh, dz),
    )
    parts = {
        **dict(zip(STEP_PARTS, pieces, strict=True)),
        MEMORY_PASS: (lambda w: w * 0.5, params["w1"]),
    }
    return {name: (jax.jit(fn), args) for name, (fn, *args) in parts.items()}


def w2_round(chunk: int, outer: bool):
    """The server's new parameters: the mean of every client's after its steps."""

    @jax.jit
    def round_fn(params, x, y):
        clients = y.shape[0]
        split = lambda a: a.reshape(clients // chunk, chunk, *a.shape[1:])
        sums = jax.lax.map(lambda xy: _train(params, *xy, outer), (split(x), split(y)))
        return jax.tree.map(lambda a: a.sum(0) / clients, sums)

    return round_fn


def kernel_products_round(chunk: int, unroll: bool, lr: float = 1e-5):
    """W1's two large products and nothing else: for every client, each step h = x W, then
    W <- W - lr x^T h (the first layer's forward product and kernel gradient, feeding the SGD
    update), on pre-drawn minibatches x [clients, steps, batch, inputs]; clients one at a time
    (chunk 1) or vmapped in chunks under `lax.map`, steps unrolled or looped. Returns the mean
    of the clients' kernels. `lr` is small so that the kernels stay finite without the rest of
    the step."""

    def client(kernel, xc):
        def step(w, xb):
            return w - lr * jnp.einsum("bi,bh->ih", xb, xb @ w), None

        return lax.scan(step, kernel, xc, unroll=True if unroll else 1)[0]

    @jax.jit
    def round_fn(kernel, x):
        clients = x.shape[0]
        if chunk == 1:
            return lax.map(lambda xc: client(kernel, xc), x).mean(0)
        chunks = x.reshape(clients // chunk, chunk, *x.shape[1:])
        sums = lax.map(lambda xs: jax.vmap(client, (None, 0))(kernel, xs).sum(0), chunks)
        return sums.sum(0) / clients

    return round_fn
