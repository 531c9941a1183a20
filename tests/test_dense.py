"""The outer-product dense product: flax's Dense function, its gradients, under vmap and twice
differentiated, with the dot kept above `ROW_LIMIT` rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_syn.core.errors import UserError
from fedjax_syn.models.dense import ROW_LIMIT, dense_function, outer_product_dot
from fedjax_syn.models.vision import MLP

DENSE_DIMS = (((1,), (0,)), ((), ()))


def _allclose(got, want, tol=1e-5):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _mlp_loss(model):
    def loss(params, x, y):
        logits = model.apply(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    return loss


@pytest.mark.parametrize("rows", [1, 10, ROW_LIMIT])
def test_values_and_gradients_equal_the_dot(rows):
    k_x, k_w = jax.random.split(jax.random.key(0))
    x, w = jax.random.normal(k_x, (rows, 7)), jax.random.normal(k_w, (7, 5))

    @jax.jit
    def both(x, w):
        out = {}
        for name, fn in (("outer", outer_product_dot), ("dot", jax.lax.dot_general)):
            loss = lambda x, w, fn=fn: jnp.sum(jnp.sin(fn(x, w, DENSE_DIMS)))
            out[name] = fn(x, w, DENSE_DIMS), jax.grad(loss, argnums=(0, 1))(x, w)
        return out

    with jax.default_matmul_precision("highest"):
        out = both(x, w)
    _allclose(out["outer"], out["dot"])


def test_outer_products_up_to_the_row_limit_only():
    """At most ROW_LIMIT rows the kernel gradient is the custom rule; above, flax's own dot."""
    product = lambda x: outer_product_dot(x, jnp.ones((3, 2)), DENSE_DIMS)
    traced = lambda rows: str(jax.make_jaxpr(product)(jnp.ones((rows, 3))))
    assert "custom_vjp_call" in traced(ROW_LIMIT)
    assert "custom_vjp_call" not in traced(ROW_LIMIT + 1)


def test_mlp_clients_under_vmap_match_flax_dense():
    """The case the rule exists for: every client's gradient under vmap, and the gradient of a
    gradient-matching loss (synthetic examples differentiated through a kernel gradient)."""
    clients, rows = 4, 10
    k_x, k_y, k_p = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k_x, (clients, rows, 6))
    y = jax.random.randint(k_y, (clients, rows), 0, 3)
    outer, dot = MLP(3, (8,), dense="outer"), MLP(3, (8,), dense="dot")
    params = dot.init(k_p, x[0])
    assert jax.tree.map(jnp.shape, outer.init(k_p, x[0])) == jax.tree.map(jnp.shape, params)

    def per_client(model):
        return jax.vmap(jax.grad(_mlp_loss(model)), in_axes=(None, 0, 0))(params, x, y)

    def matching(model):
        real = jax.grad(_mlp_loss(model))(params, x[0], y[0])

        def distance(syn):
            g = jax.grad(_mlp_loss(model))(params, syn, y[1])
            return sum(
                jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(real))
            )

        return jax.grad(distance)(x[1])

    with jax.default_matmul_precision("highest"):
        got, want = jax.jit(
            lambda: ((per_client(outer), matching(outer)), (per_client(dot), matching(dot)))
        )()
    _allclose(got, want, tol=1e-4)


def test_bad_choices_are_named():
    with pytest.raises(UserError, match="'einsum'"):
        dense_function("einsum")
    with pytest.raises(UserError, match="dimension_numbers"):
        outer_product_dot(jnp.ones((2, 3)), jnp.ones((2, 4)), (((0,), (0,)), ((), ())))
