"""Memorisation of shared synthetic data: how close each uploaded synthetic example lies to the
client's real training records, measured against how close real records lie to each other.

A synthetic example that sits nearer to some record than any other real record does is, as far
as distance can tell, a copy of that record: condensation that starts from real images and moves
them little shares exactly that. Both summaries read distances on the records' own scale, so
synthetic data far from the data manifold can still come out "closer" (a vector near the
origin is nearer a sparse bag-of-words row than that row is to its neighbour); `train_share`
controls for that with held-out records of the same distribution.
"""

from typing import NamedTuple

import numpy as np


def nearest(queries: np.ndarray, records: np.ndarray, exclude_self: bool = False):
    """(distance, index) of each query's nearest record, Euclidean, over flattened rows.

    The search uses |q|^2 + |r|^2 - 2 q.r; the returned distance is recomputed from the
    difference itself, so an exact copy is at distance 0, not at a rounding error from it.
    """
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    r = np.asarray(records, np.float64).reshape(len(records), -1)
    squared = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    if exclude_self:
        np.fill_diagonal(squared, np.inf)
    index = np.argmin(squared, axis=1)
    distance = np.linalg.norm(q - r[index], axis=1)
    return distance, index


class DCR(NamedTuple):
    """Distance to closest record of every synthetic example, and two summaries."""

    ratio: np.ndarray  # [m] distance to the closest record / median real-to-real nearest distance
    closer: np.ndarray  # [m] bool: nearer its closest record than that record's nearest real one

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratio))

    @property
    def share_closer(self) -> float:
        return float(np.mean(self.closer))


def dcr(synthetic: np.ndarray, real: np.ndarray) -> DCR:
    """Distance-to-closest-record of `synthetic` [m, ...] against `real` [n >= 2, ...]."""
    to_real, index = nearest(synthetic, real)
    real_to_real, _ = nearest(real, real, exclude_self=True)
    scale = max(float(np.median(real_to_real)), 1e-12)
    return DCR(to_real / scale, to_real < real_to_real[index])


def train_share(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int = 0):
    """The share of synthetic examples nearer the training records than the held-out ones, with
    both sets subsampled to the same size (nearest distances shrink as a set grows): 0.5 when
    the synthetic data know no more of the training records than of others of their kind. Exact
    copies of training records score n/n_train + (1 - n/n_train)/2: a copied record may fall
    outside the subsample."""
    n = min(len(train), len(holdout))
    rng = np.random.default_rng(seed)
    to_train, _ = nearest(synthetic, train[rng.permutation(len(train))[:n]])
    to_holdout, _ = nearest(synthetic, holdout[rng.permutation(len(holdout))[:n]])
    return float(np.mean(to_train < to_holdout) + 0.5 * np.mean(to_train == to_holdout))
