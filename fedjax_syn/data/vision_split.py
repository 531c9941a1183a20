"""A federation of image classification clients under the vision track of the protocol.

The protocol is the project's `../shared/docs/PROTOCOL.md`, outside the repository.

The training set is partitioned over K + 1 parts; part K + 1 is the new client, which never trains
(FedLoG, ICLR 2025, evaluates every client model on it). In each training client a class with fewer
than `min_class_count` examples is *missing*; `missing_frac` hides more of the present classes,
never the last client training a class. Missing classes contribute nothing to a client's
train / val / test split; they are evaluated on the official test set instead. The split is
stratified: per class, val and test get floor(fraction * n) examples each and train the rest, so a
class with very few examples goes to train first.
"""

import dataclasses
import math

import numpy as np

from fedjax_syn.core.errors import check
from fedjax_syn.data import partition as partition_lib
from fedjax_syn.data.vision import ImageDataset

Split = tuple[np.ndarray, np.ndarray]  # (x [n, h, w, c], y [n])


@dataclasses.dataclass(frozen=True)
class VisionFederation:
    """K training clients, one new client, and the official test set."""

    num_classes: int
    train: list[Split]  # K training clients: (x, y)
    val: list[Split]
    test: list[Split]  # each client's seen test split
    missing: np.ndarray  # [K, C] bool: class missing for client k
    new_client: Split  # all data of part K + 1 (never trains)
    global_test: Split  # the dataset's official test set
    counts: np.ndarray  # [K + 1, C] examples per client per class (before the split)


def build_vision_federation(
    data: ImageDataset,
    num_clients: int,
    partition: str = "dirichlet",
    *,
    alpha: float = 0.5,
    classes_per_part: int = 2,
    seed: int = 0,
    min_class_count: int = 2,
    missing_frac: float = 0.0,
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> VisionFederation:
    """Partitions `data`'s training set into `num_clients` training clients plus a new client.

    Every training client keeps at least one class, hence at least one training example: the
    partition gives each part a class with `min_class_count` examples, and hiding never takes a
    client's last class. The same arguments give byte-identical arrays. Raises `UserError` for bad
    arguments, including more clients than the data can give such a class each.
    """
    check(
        isinstance(num_clients, int) and num_clients >= 1,
        f"num_clients must be an integer >= 1, got {num_clients!r}",
    )
    check(
        isinstance(min_class_count, int) and min_class_count >= 1,
        f"min_class_count must be an integer >= 1, got {min_class_count!r}",
    )
    check(0.0 <= missing_frac < 1.0, f"missing_frac must be in [0, 1), got {missing_frac!r}")
    val_frac, test_frac = _check_split(split)
    labels = data.train_y
    num_classes = data.num_classes
    parts = partition_lib.partition(
        labels,
        num_clients + 1,
        partition,
        seed=seed,
        alpha=alpha,
        classes_per_part=classes_per_part,
        min_class_size=min_class_count,  # so every training client keeps a class to train on
    )
    counts = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
    rng = np.random.default_rng([seed, 1])  # a stream apart from the partition's
    missing = counts[:num_clients] < min_class_count
    if missing_frac > 0:
        missing = _hide_classes(missing, missing_frac, rng)
    splits = [
        _split_client(parts[k], labels, missing[k], val_frac, test_frac, rng)
        for k in range(num_clients)
    ]

    def take(index: np.ndarray) -> Split:
        return data.train_x[index], labels[index]

    train, val, test = ([take(s[i]) for s in splits] for i in range(3))
    new_client, global_test = take(parts[num_clients]), (data.test_x, data.test_y)
    return VisionFederation(num_classes, train, val, test, missing, new_client, global_test, counts)


def _check_split(split) -> tuple[float, float]:
    """Validates (train, val, test) fractions; returns (val, test)."""
    fractions = tuple(split)
    check(
        len(fractions) == 3
        and all(isinstance(f, int | float) and math.isfinite(f) and f >= 0 for f in fractions)
        and fractions[0] > 0
        and math.isclose(sum(fractions), 1.0, abs_tol=1e-9),
        f"split must be (train, val, test) fractions >= 0, train > 0, summing to 1; got {split!r}",
    )
    return float(fractions[1]), float(fractions[2])


def _hide_classes(missing: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Hides round(frac * present) more classes per client (at least one, never all of them).

    A class is hidden only while another client still trains it. Clients are visited in random
    order so that this constraint does not favour the first ones.
    """
    missing = missing.copy()
    trainers = (~missing).sum(axis=0)
    for k in rng.permutation(missing.shape[0]):
        present = np.flatnonzero(~missing[k])
        quota = min(max(1, int(frac * present.size + 0.5)), present.size - 1)
        for c in rng.permutation(present):
            if quota == 0:
                break
            if trainers[c] > 1:
                missing[k, c] = True
                trainers[c] -= 1
                quota -= 1
    return missing


def _split_client(
    index: np.ndarray,
    labels: np.ndarray,
    missing: np.ndarray,
    val_frac: float,
    test_frac: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / val / test indices over the client's present classes (sorted)."""
    train, val, test = [], [], []
    client_labels = labels[index]
    for c in np.flatnonzero(~missing):
        members = rng.permutation(index[client_labels == c])
        n = members.size
        # The small epsilon keeps e.g. 0.15 * 20 = 2.9999999999999996 from flooring to 2.
        n_val, n_test = int(val_frac * n + 1e-9), int(test_frac * n + 1e-9)
        n_train = n - n_val - n_test
        train.append(members[:n_train])
        val.append(members[n_train : n_train + n_val])
        test.append(members[n_train + n_val :])
    return tuple(np.sort(np.concatenate(s)).astype(np.int64) for s in (train, val, test))


def class_count_table(fed: VisionFederation) -> str:
    """Markdown table of each client's train/val/test examples per class, missing classes marked.

    A training client's cell is `train/val/test`; `m:N` marks a class missing for it (N examples
    held, none used). The new client's cells are its example counts; the last row counts the
    clients that train each class.
    """
    num_clients, num_classes = fed.missing.shape
    header = ["client", "train/val/test", *(f"class {c}" for c in range(num_classes))]
    rows = [header, ["---", "---:", *(["---:"] * num_classes)]]
    for k in range(num_clients):
        per_split = [
            np.bincount(s[k][1], minlength=num_classes) for s in (fed.train, fed.val, fed.test)
        ]
        cells = [
            f"m:{fed.counts[k, c]}" if fed.missing[k, c] else "/".join(str(n[c]) for n in per_split)
            for c in range(num_classes)
        ]
        totals = "/".join(str(n.sum()) for n in per_split)
        rows.append([str(k), totals, *cells])
    new_counts = fed.counts[num_clients]
    rows.append(["new", str(new_counts.sum()), *map(str, new_counts)])
    trainers = (~fed.missing).sum(axis=0)
    rows.append(["clients training", f"of {num_clients}", *map(str, trainers)])
    legend = (
        "\n\nCells: train/val/test examples; m:N = class missing for the client (N examples held, "
        "none used); the `new` row counts the new client's examples."
    )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + legend
