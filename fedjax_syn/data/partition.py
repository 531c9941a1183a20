"""Partitions of a labelled dataset into federated clients (vision track of the protocol).

The protocol is the project's `../shared/docs/PROTOCOL.md`, outside the repository.

- `iid`: a random permutation cut into parts whose sizes differ by at most one.
- `dirichlet`: each class's examples are spread over the parts in proportions drawn from
  Dir(alpha, ..., alpha) (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", 2019); small alpha gives few classes per part.
- `shards`: every part holds `classes_per_part` distinct classes (the pathological non-IID split
  of McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
  AISTATS 2017). Classes are dealt to parts least-used first, so each class goes to
  ceil or floor of `num_parts * classes_per_part / num_classes` parts, and its examples are divided
  evenly among them.

Every example lands in exactly one part. Afterwards each part that holds no class with at least
`min_class_size` examples (with the default 1: each empty part, common for Dirichlet with many parts
and small alpha) is topped up from the largest (part, class) cell: it receives just enough examples
of that class, and the donor keeps a class of its own that large. The repair visits each part once,
so it ends after at most `num_parts` moves, unlike redrawing the proportions until every part is
large enough, which can loop for a very long time with hundreds of parts. A shards part can hold
fewer classes than promised only when some class has fewer examples than the parts it was dealt to.
"""

import math

import numpy as np

from fedjax_syn.core.errors import UserError, check, check_choice

PARTITIONS = ("iid", "dirichlet", "shards")


def partition(
    labels: np.ndarray,
    num_parts: int,
    method: str,
    *,
    seed: int,
    alpha: float = 1.0,
    classes_per_part: int = 2,
    min_class_size: int = 1,
) -> list[np.ndarray]:
    """Splits the indices of the [n] integer `labels` into `num_parts` (1 .. n) disjoint,
    non-empty parts: sorted int64 arrays together covering each index once. The same `seed` gives
    the same parts. `alpha` is used by `dirichlet` only, `classes_per_part` by `shards` only.
    Every part ends up holding some class with at least `min_class_size` examples (a federation
    passes its `min_class_count`, so that no client is left without a class)."""
    check_choice("partition method", method, PARTITIONS)
    labels = np.asarray(labels)
    check(
        labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer),
        f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}",
    )
    check(labels.size == 0 or labels.min() >= 0, "labels must be non-negative")
    num_examples = labels.size
    for name, value, low in (("num_parts", num_parts, 1), ("min_class_size", min_class_size, 1)):
        check(
            isinstance(value, int | np.integer) and value >= low,
            f"{name} must be an integer >= {low}, got {value!r}",
        )
    check(
        num_parts * min_class_size <= num_examples,
        f"num_parts={num_parts} is too many for {num_examples} examples: every part needs "
        f"{min_class_size} of one class; use fewer parts (clients)",
    )
    check(
        isinstance(seed, int | np.integer) and seed >= 0,
        f"seed must be an integer >= 0, got {seed!r}",
    )
    rng = np.random.default_rng(seed)
    if method == "iid":
        owner = _iid_owner(num_examples, num_parts, rng)
    elif method == "dirichlet":
        check(
            math.isfinite(alpha) and alpha > 0,
            f"dirichlet alpha must be a finite number > 0, got {alpha!r}",
        )
        owner = _dirichlet_owner(labels, num_parts, alpha, rng)
    else:
        owner = _shards_owner(labels, num_parts, classes_per_part, rng)
    owner = _top_up_small_parts(owner, labels, num_parts, min_class_size, rng)
    order = np.argsort(owner, kind="stable")  # stable: indices stay ascending within a part
    bounds = np.cumsum(np.bincount(owner, minlength=num_parts))[:-1]
    return np.split(order.astype(np.int64), bounds)


def _iid_owner(num_examples: int, num_parts: int, rng: np.random.Generator) -> np.ndarray:
    owner = np.empty(num_examples, np.int64)
    owner[rng.permutation(num_examples)] = np.arange(num_examples) * num_parts // num_examples
    return owner


def _dirichlet_owner(
    labels: np.ndarray, num_parts: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    owner = np.empty(labels.size, np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_parts, alpha))
        # Cut points from the cumulative shares; the last one is pinned to the class size so that
        # rounding can neither drop nor invent an example.
        cuts = np.minimum(np.floor(np.cumsum(shares) * members.size).astype(np.int64), members.size)
        cuts[-1] = members.size
        sizes = np.diff(cuts, prepend=0)
        owner[members] = np.repeat(np.arange(num_parts), sizes)
    return owner


def _shards_owner(
    labels: np.ndarray, num_parts: int, classes_per_part: int, rng: np.random.Generator
) -> np.ndarray:
    classes = np.unique(labels)
    num_classes = classes.size
    fewest = -(-num_classes // num_parts)  # ceil: fewer would leave a class without a part
    if not (
        isinstance(classes_per_part, int | np.integer) and fewest <= classes_per_part <= num_classes
    ):
        raise UserError(
            f"shards classes_per_part={classes_per_part!r} is out of range: with {num_parts} parts "
            f"and {num_classes} classes it must be an integer in {fewest}..{num_classes}"
        )
    usage = np.zeros(num_classes, np.int64)
    holders: list[list[int]] = [[] for _ in range(num_classes)]
    for part in range(num_parts):
        # Least-used classes first; random keys break ties so class combinations vary.
        chosen = np.lexsort((rng.random(num_classes), usage))[:classes_per_part]
        usage[chosen] += 1
        for c in chosen:
            holders[c].append(part)
    owner = np.empty(labels.size, np.int64)
    for c, parts in zip(classes, holders, strict=True):
        members = rng.permutation(np.flatnonzero(labels == c))
        owner[members] = np.asarray(parts)[np.arange(members.size) * len(parts) // members.size]
    return owner


def _top_up_small_parts(
    owner: np.ndarray,
    labels: np.ndarray,
    num_parts: int,
    min_class_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gives each part lacking a class of `min_class_size` examples enough of the largest cell.

    The donor is the (part, class) cell with the most examples, ties going to the larger part. With
    `min_class_size` 1 and at least as many examples as parts this never fails: while a part is
    empty, some part holds two or more examples and can spare one.
    """
    owner = owner.copy()
    classes, class_of = np.unique(labels, return_inverse=True)
    counts = np.zeros((num_parts, classes.size), np.int64)
    np.add.at(counts, (owner, class_of), 1)
    for part in range(num_parts):
        if counts[part].max() >= min_class_size:
            continue
        key = counts * (labels.size + 1) + counts.sum(axis=1, keepdims=True)
        key[part] = -1
        donor, c = np.unravel_index(np.argmax(key), key.shape)
        need = min_class_size - counts[part, c]
        keeps = counts[donor].copy()
        keeps[c] -= need
        if keeps.max() < min_class_size:
            raise UserError(
                f"cannot give each of the {num_parts} parts a class with {min_class_size} "
                f"examples; use fewer parts (clients)"
            )
        candidates = np.flatnonzero((owner == donor) & (class_of == c))
        owner[rng.choice(candidates, need, replace=False)] = part
        counts[donor, c] -= need
        counts[part, c] += need
    return owner
