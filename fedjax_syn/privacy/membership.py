"""Membership inference: scores that should be higher for a client's training records than for
its held-out ones, and the AUC of telling the two apart (0.5: no better than a coin).

- `loss_scores`: minus the shared model's loss on a record (Yeom et al., CSF 2018).
- `distance_scores`: minus the distance from a record to the nearest shared synthetic example of
  its class: shared data that copy records give their members away.
- `lira_offline`: offline LiRA (Carlini et al., S&P 2022): the target model's logit-scaled
  confidence on a record, standardised by shadow models that did not train on it.
"""

import numpy as np
import scipy.special
import scipy.stats


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(score of a random member > that of a random non-member), ties counted half (the
    Mann-Whitney statistic); nan when either side is empty."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if members.size == 0 or nonmembers.size == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(np.concatenate([members, nonmembers]))
    m = members.size
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * nonmembers.size))


def log_probs(logits: np.ndarray) -> np.ndarray:
    return np.asarray(scipy.special.log_softmax(np.asarray(logits, np.float64), axis=-1))


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy of each record under the model."""
    return np.take_along_axis(log_probs(logits), np.asarray(labels)[:, None], axis=-1)[:, 0]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y - log(1 - p_y), computed from log-probabilities (LiRA's near-Gaussian statistic)."""
    lp = log_probs(logits)
    own = np.take_along_axis(lp, np.asarray(labels)[:, None], axis=-1)[:, 0]
    others = np.where(np.arange(lp.shape[-1]) == np.asarray(labels)[:, None], -np.inf, lp)
    return own - scipy.special.logsumexp(others, axis=-1)


def distance_scores(
    records: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, syn_labels: np.ndarray
) -> np.ndarray:
    """Minus the Euclidean distance from each record to the nearest synthetic example of its
    class (-inf when its class has none)."""
    r = np.asarray(records, np.float64).reshape(len(records), -1)
    s = np.asarray(synthetic, np.float64).reshape(len(synthetic), -1)
    squared = (r * r).sum(1)[:, None] + (s * s).sum(1)[None, :] - 2.0 * r @ s.T
    same = np.asarray(labels)[:, None] == np.asarray(syn_labels)[None, :]
    nearest = np.where(same, np.maximum(squared, 0.0), np.inf).min(axis=1)
    return -np.sqrt(nearest)


def lira_offline(target: np.ndarray, shadows: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """Offline LiRA scores: (target confidence - mean OUT confidence) / global OUT std.

    target [n] and shadows [S, n] are logit-scaled confidences; shadow_in [S, n] marks the
    records each shadow trained on. With few shadows a per-record variance is noisy, so the std is
    pooled over records (the paper's fixed-variance variant). A record no shadow left out gets
    the mean of all OUT confidences.
    """
    out = ~np.asarray(shadow_in, bool)
    count = out.sum(axis=0)
    pooled = shadows[out].mean() if out.any() else 0.0
    mean = np.where(count > 0, (shadows * out).sum(axis=0) / np.maximum(count, 1), pooled)
    centred = np.where(out, shadows - mean[None, :], 0.0)
    std = np.sqrt((centred**2).sum() / max(out.sum() - 1, 1))
    return (np.asarray(target) - mean) / max(std, 1e-12)
