"""Differentiable siamese augmentation (DSA) for dataset condensation.

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021. When
matching, the real batch and the synthetic batch of a class are transformed with the SAME random
parameters (siamese), and every transform is differentiable in the pixels, so the synthetic images
learn what survives augmentation. The transforms and ranges are those of the released code:
colour (brightness, saturation, contrast), crop (integer translation with zero fill), cutout,
horizontal flip, scale and rotation. `mode="single"` applies one transform chosen at random per
call (the released default); `mode="all"` applies every transform. Here the geometric transforms
(crop, flip, scale, rotate) are composed into one affine map and resampled once with bilinear
interpolation (zeros outside), so "all" blurs less than the released code's sequential resampling.
Leave "flip" out of `strategy` for digit-like data, where a mirrored glyph is another class.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_syn.core.errors import check, check_choice

TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclasses.dataclass(frozen=True)
class DSAConfig:
    """Which transforms to draw from and their ranges (defaults: the released DSA code)."""

    strategy: tuple[str, ...] = TRANSFORMS
    mode: str = "single"  # "single" | "all"
    brightness: float = 1.0  # x + (u - 0.5) * brightness
    saturation: float = 2.0  # channel-mean deviation scaled by u * saturation
    contrast: float = 0.5  # image-mean deviation scaled by u + contrast
    crop_pad: float = 0.125  # max translation, as a fraction of the side
    cutout: float = 0.5  # side of the erased square, as a fraction of the side
    scale: float = 1.2  # per-axis scale in [1 / scale, scale]
    rotate_deg: float = 15.0  # angle in [-rotate_deg, rotate_deg]

    def __post_init__(self):
        check(len(self.strategy) > 0, "DSA strategy is empty; name at least one transform")
        for name in self.strategy:
            check_choice("DSA transform", name, TRANSFORMS)
        check_choice("DSA mode", self.mode, ("single", "all"))


class AugParams(NamedTuple):
    """One draw of augmentation parameters; identity values for transforms not drawn."""

    brightness: jax.Array  # additive, identity 0
    saturation: jax.Array  # factor, identity 1
    contrast: jax.Array  # factor, identity 1
    matrix: jax.Array  # [2, 2] output (row, col) offset from centre -> source offset
    shift: jax.Array  # [2] source translation in pixels
    cutout_centre: jax.Array  # [2] int
    cutout_on: jax.Array  # bool


def sample_params(key: jax.Array, height: int, width: int, config: DSAConfig) -> AugParams:
    """Draws the parameters of one augmentation for images of size height x width."""
    keys = jax.random.split(key, 10)
    names = config.strategy
    choice = jax.random.randint(keys[0], (), 0, len(names))

    def on(name: str) -> jax.Array:
        if name not in names:
            return jnp.array(False)
        return jnp.array(True) if config.mode == "all" else choice == names.index(name)

    u = jax.random.uniform
    brightness = jnp.where(on("color"), (u(keys[1]) - 0.5) * config.brightness, 0.0)
    saturation = jnp.where(on("color"), u(keys[2]) * config.saturation, 1.0)
    contrast = jnp.where(on("color"), u(keys[3]) + config.contrast, 1.0)

    pad = jnp.array([int(height * config.crop_pad + 0.5), int(width * config.crop_pad + 0.5)])
    shift = jax.random.randint(keys[4], (2,), -pad, pad + 1).astype(jnp.float32)
    shift = jnp.where(on("crop"), shift, 0.0)

    col_sign = jnp.where(on("flip") & (u(keys[5]) < 0.5), -1.0, 1.0)
    scales = u(keys[6], (2,), minval=1.0 / config.scale, maxval=config.scale)
    scales = jnp.where(on("scale"), scales, 1.0)
    angle = u(keys[7], minval=-1.0, maxval=1.0) * config.rotate_deg * math.pi / 180.0
    angle = jnp.where(on("rotate"), angle, 0.0)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.array([[cos, -sin], [sin, cos]])
    matrix = rotation @ jnp.diag(scales) @ jnp.diag(jnp.array([1.0, col_sign]))

    size = _cutout_size(height, width, config)
    row = jax.random.randint(keys[8], (), 0, height + (1 - size[0] % 2))
    centre = jnp.stack([row, jax.random.randint(keys[9], (), 0, width + (1 - size[1] % 2))])
    return AugParams(brightness, saturation, contrast, matrix, shift, centre, on("cutout"))


def _cutout_size(height: int, width: int, config: DSAConfig) -> tuple[int, int]:
    return int(height * config.cutout + 0.5), int(width * config.cutout + 0.5)


def _color(x: jax.Array, p: AugParams) -> jax.Array:
    x = x + p.brightness
    channel_mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - channel_mean) * p.saturation + channel_mean
    image_mean = jnp.mean(x, axis=(-3, -2, -1), keepdims=True)
    return (x - image_mean) * p.contrast + image_mean


def _resample(x: jax.Array, p: AugParams) -> jax.Array:
    """out[r, c] = bilinear sample of x at matrix @ ((r, c) - centre) + centre + shift."""
    height, width = x.shape[-3], x.shape[-2]
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0])
    offsets = jnp.stack([rows, cols], axis=-1) - centre
    src = offsets @ p.matrix.T + centre + p.shift  # [H, W, 2]
    base = jnp.floor(src)
    frac = src - base
    out = jnp.zeros_like(x)
    for dr in (0, 1):
        for dc in (0, 1):
            r = base[..., 0] + dr
            c = base[..., 1] + dc
            weight = (frac[..., 0] if dr else 1.0 - frac[..., 0]) * (
                frac[..., 1] if dc else 1.0 - frac[..., 1]
            )
            inside = (r >= 0) & (r <= height - 1) & (c >= 0) & (c <= width - 1)
            ri = jnp.clip(r, 0, height - 1).astype(jnp.int32)
            ci = jnp.clip(c, 0, width - 1).astype(jnp.int32)
            out = out + x[..., ri, ci, :] * (weight * inside)[..., None]
    return out


def _cutout(x: jax.Array, p: AugParams, config: DSAConfig) -> jax.Array:
    height, width = x.shape[-3], x.shape[-2]
    size = _cutout_size(height, width, config)
    top = p.cutout_centre[0] - size[0] // 2
    left = p.cutout_centre[1] - size[1] // 2
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    erased = (rows >= top) & (rows < top + size[0]) & (cols >= left) & (cols < left + size[1])
    keep = jnp.where(p.cutout_on & erased, 0.0, 1.0)
    return x * keep[:, :, None]


def apply_params(x: jax.Array, params: AugParams, config: DSAConfig) -> jax.Array:
    """Applies one drawn augmentation to every image of x [b, H, W, C] (or one image [H, W, C])."""
    return _cutout(_resample(_color(x, params), params), params, config)


def augment(key: jax.Array, x: jax.Array, config: DSAConfig) -> jax.Array:
    """The same random augmentation for every image of the batch x [b, H, W, C]. Calling it with
    one key on the real and on the synthetic batch of a class is the siamese augmentation."""
    return apply_params(x, sample_params(key, x.shape[-3], x.shape[-2], config), config)


def augment_each(key: jax.Array, x: jax.Array, config: DSAConfig) -> jax.Array:
    """An independent random augmentation per image of x [b, H, W, C] (for network training)."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda k, image: augment(k, image, config))(keys, x)
