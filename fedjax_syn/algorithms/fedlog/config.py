"""Graph FedLoG's options (one frozen, hashable, jit-static record built from `cfg.fedlog`), what
they define (the model optimiser, one local epoch), and the static description of a run (`Spec`).

Defaults follow the method's specification (docs/fedlog.md; Kim et al., "Subgraph Federated
Learning for Local Generalization", ICLR 2025). Fields marked "released" exist so that the
released code's behaviour can be compared with the documented decisions (see
`experiments/configs/fedlog_cora.py`).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import optax

from fedjax_syn.algorithms.common import parse_options
from fedjax_syn.algorithms.fedlog.model import FedLoGNet
from fedjax_syn.algorithms.fedlog.shared import AGGREGATES, BLEND_WEIGHTS
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task
from fedjax_syn.models.gnn import GNN

PROMPTS = ("trained", "random", "none")
GLOBAL_SYNTHETIC = ("head", "tail", "both")
SYNTHETIC_GRAPHS = ("isolated", "self_loop")
# Named sets of option defaults. "faithful": the method as documented (docs/fedlog.md);
# "released": the released code's choices that change numbers (random prompt generators with
# dropout, synthetic nodes with the identity adjacency, pretraining continued from its last epoch).
# A preset fixes its fields: giving one of them another value is an error.
PRESETS = {
    "faithful": {},
    "released": {
        "prompt": "random",
        "prompt_dropout": True,
        "synthetic_graph": "self_loop",
        "restore_best": False,
    },
}


@dataclasses.dataclass(frozen=True)
class FedLoGConfig:
    preset: str = "faithful"  # a key of PRESETS: the defaults the other fields start from
    # Synthetic nodes and losses.
    syn_per_class: int = 20  # s: synthetic nodes per class and branch
    beta: float = 1.0  # weight of L_norm
    cd_weight: float = 1.0  # weight of L_cd
    metric_weight: float = 1.0  # weight of L_metric
    gamma: float = 3.0  # head-degree threshold of the gate sigmoid(deg - (gamma + 1))
    synthetic_graph: str = "isolated"  # "self_loop": the released identity adjacency
    # Local optimisation (fresh optimisers every round).
    lr: float = 1e-3
    weight_decay: float = 5e-4  # coupled (added to the gradient before Adam)
    syn_lr: float = 1e-3  # Adam on X_head / X_tail
    batch_size: int = 64
    # Server.
    aggregate: str = "uniform"  # model average: "uniform" (released) or "weighted" by n_train
    weights: str = "class_share"  # blend weights w_kc: class shares, or "uniform" 1/K
    global_synthetic: str = "head"  # which synthetic nodes build the global set (ablation)
    # Customised global synthetic data.
    feature_scaling: bool = True
    scale_step: float = 1e-3
    scale_threshold: float = 0.8
    prompt: str = "trained"  # generators: "trained" (the spec), "random" (released), "none"
    # Generators' dropout (gen_dropout) at every step of the rounds, a fresh mask each time: the
    # released code leaves them in training mode. False: prompts are deterministic.
    prompt_dropout: bool = False
    # Round 0: encoder pretraining (early stopping on validation accuracy).
    pretrain_epochs: int = 100
    patience: int = 10
    restore_best: bool = True  # released: continue from the last pretraining epoch
    # Round 0: generator pretraining (prompt="trained" only).
    gen_epochs: int = 100
    gen_networks: int = 20  # random GraphSAGE+linear networks per epoch
    gen_fixed_networks: bool = True  # False: a fresh draw every epoch, as released
    gen_lr: float = 1e-2
    gen_hidden: tuple[int, ...] = (256, 512)
    gen_dropout: float = 0.5
    # Static cap on training nodes read per client. 0: every padded node slot, or, in a run built
    # by the run pipeline (`runs.prepare.build_algorithm`), exactly the largest client's training-node count.
    gen_nodes: int = 0

    def __post_init__(self):
        check_choice("fedlog preset", self.preset, PRESETS)
        check_choice("fedlog prompt", self.prompt, PROMPTS)
        check_choice("fedlog aggregate", self.aggregate, AGGREGATES)
        check_choice("fedlog weights", self.weights, BLEND_WEIGHTS)
        check_choice("fedlog global_synthetic", self.global_synthetic, GLOBAL_SYNTHETIC)
        check_choice("fedlog synthetic_graph", self.synthetic_graph, SYNTHETIC_GRAPHS)
        for name in ("syn_per_class", "batch_size", "gen_networks"):
            value = getattr(self, name)
            check(value >= 1, f"fedlog {name} must be >= 1, got {value}")
        counts = ("pretrain_epochs", "patience", "gen_epochs", "gen_nodes")
        for name in (*counts, "beta", "cd_weight", "metric_weight", "weight_decay", "scale_step"):
            value = getattr(self, name)
            check(value >= 0, f"fedlog {name} must be >= 0, got {value}")
        for name in ("lr", "syn_lr", "gen_lr"):
            value = getattr(self, name)
            check(value > 0, f"fedlog {name} must be > 0, got {value}")
        check(
            0 <= self.gen_dropout < 1,
            f"fedlog gen_dropout must be in [0, 1), got {self.gen_dropout}",
        )
        check(
            len(self.gen_hidden) >= 1 and all(w >= 1 for w in self.gen_hidden),
            f"fedlog gen_hidden must be positive widths, got {self.gen_hidden}",
        )

    @property
    def global_slots(self) -> int:
        """Global synthetic nodes per class: s, or 2s when head and tail are both shared."""
        return 2 * self.syn_per_class if self.global_synthetic == "both" else self.syn_per_class


def from_dict(options: Mapping[str, Any] | None) -> FedLoGConfig:
    """Defaults overridden by `options` (e.g. `cfg.fedlog`); an unknown key is a `UserError`."""
    options = dict(options or {})
    preset = options.get("preset", "faithful")
    check_choice("fedlog preset", preset, PRESETS)
    for name, value in PRESETS[preset].items():
        given = options.setdefault(name, value)
        check(
            given == value,
            f"fedlog preset {preset!r} sets {name}={value!r}, got {name}={given!r}; "
            "use preset 'faithful' to combine options freely",
        )
    if "gen_hidden" in options:
        options["gen_hidden"] = tuple(options["gen_hidden"])
    return parse_options(FedLoGConfig, "fedlog", options)


def model_optimizer(config: FedLoGConfig) -> optax.GradientTransformation:
    """Adam with coupled weight decay (PyTorch's Adam(weight_decay=...)), for encoder pretraining
    and every local epoch, with a fresh state each time (as released)."""
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(config.lr))


def epoch_schedule(config: FedLoGConfig) -> local.Schedule:
    """One epoch of floor(n / b) full minibatches (one of all n when n < b)."""
    return local.Schedule(batch_size=config.batch_size, epochs=1, drop_last=True)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static description of a FedLoG run."""

    task: Task  # the GNN (encoder + linear head): round-0 pretraining and matching networks
    net: FedLoGNet  # the same encoder + one LayerNorm per branch
    num_classes: int
    config: FedLoGConfig


def make_spec(task: Task, num_classes: int, config: FedLoGConfig | None = None) -> Spec:
    """FedLoG's static description; `task` is the track's GNN (its encoder shape is phi).
    `config` None: the defaults."""
    config = FedLoGConfig() if config is None else config
    check(task.graph, "fedlog needs the graph track (track='graph'); use fedlog_vision for images")
    gnn = task.model
    check(isinstance(gnn, GNN), f"fedlog needs a GNN model, got {type(gnn).__name__}")
    return Spec(task, FedLoGNet(gnn.kind, tuple(gnn.hidden), gnn.dropout), num_classes, config)
