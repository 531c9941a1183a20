"""FedLoG (Kim et al., ICLR 2025): subgraph FL with condensed synthetic nodes (`fedlog`), and its
synthetic-data recipe carried to images (`fedlog_vision`)."""

from fedjax_syn.algorithms.fedlog.algorithm import fedlog
from fedjax_syn.algorithms.fedlog.config import FedLoGConfig
from fedjax_syn.algorithms.fedlog.vision import FedLoGVisionConfig, fedlog_vision

__all__ = ["FedLoGConfig", "FedLoGVisionConfig", "fedlog", "fedlog_vision"]
