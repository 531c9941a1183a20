"""im2col convolution: the same function as XLA's, with the same flax parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedjax_syn.core.errors import UserError
from fedjax_syn.models.conv import _channels_last_spec, conv_function, im2col_conv
from fedjax_syn.models.vision import ConvNet


@pytest.mark.parametrize(
    "shape,window,strides,padding",
    [
        ((2, 9, 7, 3), (3, 3), (1, 1), "SAME"),
        ((2, 9, 7, 3), (3, 2), (2, 1), "VALID"),
        ((1, 8, 8, 2), (5, 5), (1, 1), ((2, 1), (0, 3))),
        ((3, 10, 4), (3,), (2,), "SAME"),  # 1-d
    ],
)
def test_im2col_equals_xla_values_and_gradients(shape, window, strides, padding):
    k_x, k_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k_x, shape)
    w = jax.random.normal(k_w, (*window, shape[-1], 4))
    dims = _channels_last_spec(len(shape))

    def conv(fn, x, w):
        return fn(x, w, strides, padding, dimension_numbers=dims, precision="highest")

    @jax.jit  # one program per implementation instead of one per operation
    def values_and_gradients(x, w):
        out = {}
        for name, fn in (("im2col", im2col_conv), ("xla", lax.conv_general_dilated)):
            loss = lambda x, w, fn=fn: jnp.sum(jnp.sin(conv(fn, x, w)))
            out[name] = conv(fn, x, w), jax.grad(loss, argnums=(0, 1))(x, w)
        return out

    out = values_and_gradients(x, w)
    (got, grads), (ref, ref_grads) = out["im2col"], out["xla"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_convnet_same_params_and_outputs_for_both_impls():
    x = jax.random.normal(jax.random.key(1), (5, 28, 28, 1))
    xla, im2col = ConvNet(10, width=8, conv="xla"), ConvNet(10, width=8, conv="im2col")
    params = xla.init(jax.random.key(2), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, im2col.init(jax.random.key(2), x)
    )
    with jax.default_matmul_precision("highest"):
        both = jax.jit(lambda params, x: (im2col.apply(params, x), xla.apply(params, x)))
        got, want = both(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_per_class_kernel_gradients_under_vmap_match():
    """The case im2col exists for: per-example-group kernel gradients under vmap."""
    x = jax.random.normal(jax.random.key(3), (4, 6, 8, 8, 1))  # [classes, batch, h, w, c]
    model = ConvNet(3, width=4, depth=2, conv="xla")
    params = model.init(jax.random.key(4), x[0])

    def grads(m):
        loss = lambda p, xc: jnp.sum(m.apply(p, xc) ** 2)
        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, x)

    with jax.default_matmul_precision("highest"):
        got, want = jax.jit(
            lambda: (grads(ConvNet(3, width=4, depth=2, conv="im2col")), grads(model))
        )()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_bad_choices_are_named():
    with pytest.raises(UserError, match="'fft'"):
        conv_function("fft")
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2))
    dims = _channels_last_spec(4)
    with pytest.raises(UserError, match="rhs_dilation"):
        im2col_conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dims)
    with pytest.raises(UserError, match="feature_group_count"):
        im2col_conv(x, w, (1, 1), "SAME", dimension_numbers=dims, feature_group_count=2)
    with pytest.raises(UserError, match="channels-last"):
        im2col_conv(x, w, (1, 1), "SAME", dimension_numbers=None)
