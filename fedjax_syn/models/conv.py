"""Convolution as one matrix product over gathered patches (im2col), a drop-in for
`lax.conv_general_dilated` in `flax.linen.Conv` (same parameters, same results).

Why: on XLA:CPU, convolutions are fast only in the canonical layout at the top level of a
program. Two things dataset condensation does all the time leave that path: the per-class
kernel gradient under `vmap` becomes a grouped convolution (`feature_group_count` = classes),
and a convolution inside a `lax.scan` / `while_loop` body may get a non-canonical layout; both
fall back to a slow generic loop. Written as patches @ kernel, the same computation is a dot,
which `vmap` turns into a batched dot and which stays fast inside loops. On GPU and TPU the
native convolution is the better choice; `ConvNet(conv="auto")` picks by backend. BENCHMARKS.md,
"Native convolution vs im2col", has the measurements and the HLO that shows both slow paths.
"""

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from fedjax_syn.core.errors import check, check_choice

CONV_IMPLS = ("auto", "xla", "im2col")


def _channels_last_spec(ndim: int) -> lax.ConvDimensionNumbers:
    """flax's layout: inputs [N, *spatial, C], kernel [*spatial, in, out]."""
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, ndim - 1, *spatial),
        rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
        out_spec=(0, ndim - 1, *spatial),
    )


def im2col_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvDimensionNumbers | None = None,
    feature_group_count: int = 1,
    precision=None,
) -> jax.Array:
    """`lax.conv_general_dilated` for channels-last inputs, ungrouped and undilated kernels."""
    ndim = lhs.ndim
    check(
        dimension_numbers == _channels_last_spec(ndim),
        f"im2col_conv needs channels-last inputs and [*spatial, in, out] kernels (flax's "
        f"layout), got dimension_numbers={dimension_numbers}",
    )
    for name, dilation in (("lhs_dilation", lhs_dilation), ("rhs_dilation", rhs_dilation)):
        check(
            dilation is None or all(d == 1 for d in dilation),
            f"im2col_conv supports no dilation, got {name}={dilation}",
        )
    check(
        feature_group_count == 1,
        f"im2col_conv supports feature_group_count=1 only, got {feature_group_count}",
    )
    window = rhs.shape[:-2]
    spatial = lhs.shape[1:-1]
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, window, window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), *(tuple(p) for p in padding), (0, 0)))
    out_size = [(x.shape[1 + d] - window[d]) // window_strides[d] + 1 for d in range(len(window))]
    patches = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = tuple(
            slice(o, o + (n - 1) * s + 1, s)
            for o, n, s in zip(offset, out_size, window_strides, strict=True)
        )
        patches.append(x[(slice(None), *index, slice(None))])
    # Offsets outer, input channels inner: the row-major order of the kernel's leading axes.
    patches = jnp.concatenate(patches, axis=-1)
    kernel = rhs.reshape((-1, rhs.shape[-1]))
    return jnp.einsum("...k,ko->...o", patches, kernel, precision=precision)


def conv_function(impl: str):
    """The `conv_general_dilated` that flax's Conv should use for `impl` (None: flax's own)."""
    check_choice("convolution implementation", impl, CONV_IMPLS)
    if impl == "auto":
        impl = "im2col" if jax.default_backend() == "cpu" else "xla"
    return im2col_conv if impl == "im2col" else None
