"""Image classifiers: an MLP and the ConvNet of the dataset-condensation papers.

Both are split into an `encoder` and a linear `head` so that algorithms that personalise only part
of the model (e.g. FedPer) can address the parts by name.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_syn.models.conv import conv_function
from fedjax_syn.models.dense import dense_function


class MLPEncoder(nn.Module):
    hidden: Sequence[int] = (32,)
    dense: str = "auto"  # see models/dense.py: "dot", "outer", or by backend and rows

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, dot_general=dense_function(self.dense))(x))
        return x


class MLP(nn.Module):
    """Fully connected classifier on flattened inputs. `dense` picks how the layers' products are
    differentiated (`fedjax_syn/models/dense.py`); parameters and results are the same."""

    num_classes: int
    hidden: Sequence[int] = (32,)
    dense: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        h = MLPEncoder(self.hidden, self.dense, name="encoder")(x)
        return nn.Dense(self.num_classes, dot_general=dense_function(self.dense), name="head")(h)


class ConvEncoder(nn.Module):
    width: int = 128
    depth: int = 3
    conv: str = "auto"  # see models/conv.py: "xla", "im2col", or by backend

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 3:  # [n, h, w] grayscale -> [n, h, w, 1]
            x = x[..., None]
        for _ in range(self.depth):
            x = nn.Conv(
                self.width, (3, 3), padding="SAME", conv_general_dilated=conv_function(self.conv)
            )(x)
            x = nn.InstanceNorm(epsilon=1e-5)(x)
            x = nn.relu(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return x.reshape((x.shape[0], -1))


class ConvNet(nn.Module):
    """ConvNet of Zhao et al. (ICLR 2021): `depth` x [conv 3x3 + instance norm + ReLU + avg-pool
    2x2], then a linear head. Spatial size halves per block (floor), e.g. 28 -> 14 -> 7 -> 3.
    `conv` picks how the convolutions are computed (`fedjax_syn/models/conv.py`); parameters and
    results are the same."""

    num_classes: int
    width: int = 128
    depth: int = 3
    conv: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        h = ConvEncoder(self.width, self.depth, self.conv, name="encoder")(x)
        return nn.Dense(self.num_classes, name="head")(h)


def count_params(params) -> int:
    return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
