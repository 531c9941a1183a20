"""Memorisation of shared synthetic data: how close each uploaded synthetic example lies to the
client's real training records, measured against how close real records lie to each other.

A synthetic example that sits nearer to some record than any other real record does is, as far
as distance can tell, a copy of that record: condensation that starts from real images and moves
them little shares exactly that.
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
