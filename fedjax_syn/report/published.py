"""Figures published by other papers, shown beside the toolkit's own in a table's `Reference`
column so that a reader sees the gap at a glance. Each entry cites where it was read; only
figures checked against that source are listed (a missing entry prints as "—").
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reference:
    """A column of published figures keyed by some of a table's row keys (e.g. dataset, method,
    config.dsa, ipc; a row's iteration budget is not part of the key, so every budget shows the
    paper's figure). `note` says where the figures come from and goes under the table."""

    label: str
    keys: tuple[str, ...]
    values: tuple[tuple[tuple, float], ...]
    note: str

    def lookup(self, rows: tuple[str, ...], key: tuple) -> float | None:
        """The figure for a table row (row keys `rows`, values `key`), None if none published."""
        if not set(self.keys) <= set(rows):
            return None
        wanted = tuple(key[rows.index(k)] for k in self.keys)
        return dict(self.values).get(wanted)


def _condensation_values() -> tuple[tuple[tuple, float], ...]:
    # ConvNet, 1, 10 and 50 images per class. DC = gradient matching without augmentation, DSA =
    # gradient matching with differentiable Siamese augmentation.
    published = {
        ("mnist", "gm", False): (91.7, 97.4, 98.8),
        ("fashion_mnist", "gm", False): (70.5, 82.3, 83.6),
        ("mnist", "gm", True): (88.7, 97.8, 99.2),
        ("fashion_mnist", "gm", True): (70.6, 84.6, 88.7),
    }
    # MNIST-5k (5,000 of MNIST's training images) is scored against the papers' full MNIST.
    published |= {("mnist_5k", *key[1:]): v for key, v in published.items() if key[0] == "mnist"}
    return tuple(
        ((dataset, method, dsa, ipc), figure)
        for (dataset, method, dsa), figures in published.items()
        for ipc, figure in zip((1, 10, 50), figures, strict=True)
    )


CONDENSATION = Reference(
    label="Published",
    keys=("dataset", "method", "config.dsa", "ipc"),
    values=_condensation_values(),
    note="Published = the authors' figures with a ConvNet: gradient matching from DC (Zhao et al., "
    "ICLR 2021) and with DSA from DSA (Zhao & Bilen, ICML 2021), as listed in Tables 1 and 2 of "
    "the README of their repository VICO-UoE/DatasetCondensation (1000 iterations). That README "
    "gives no MNIST or Fashion-MNIST figure for distribution matching (Zhao & Bilen, WACV 2023), "
    "so those rows show —. mnist_5k rows show the papers' MNIST figures, which condense all "
    "60,000 training images where mnist_5k has 5,000.",
)
