"""Dataset condensation: gradient matching, distribution matching and graph condensation.

Images: `condense` (standalone, numpy in and out) and `condense_client` (pure, jittable,
vmappable over clients), configured by a frozen `CondenseConfig`. Graphs: `condense_graph`,
configured by `GraphCondenseConfig`.
"""

from fedjax_syn.condense.api import condense, condense_client
from fedjax_syn.condense.augment import DSAConfig, augment, augment_each
from fedjax_syn.condense.core import CondenseConfig
from fedjax_syn.condense.distance import gradient_distance
from fedjax_syn.condense.distribution_matching import encode
from fedjax_syn.condense.evaluate import evaluate_synthetic, random_subset
from fedjax_syn.condense.graph import GraphCondenseConfig, condense_graph, graph_matching_loss

__all__ = [
    "CondenseConfig",
    "DSAConfig",
    "GraphCondenseConfig",
    "augment",
    "augment_each",
    "condense",
    "condense_client",
    "condense_graph",
    "encode",
    "evaluate_synthetic",
    "gradient_distance",
    "graph_matching_loss",
    "random_subset",
]
