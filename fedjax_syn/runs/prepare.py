"""A run's data on device: config -> dataset -> split -> padded client arrays, and the model
and algorithm that train on it."""

import dataclasses
from collections.abc import Sequence

import jax

from fedjax_syn.algorithms import registry
from fedjax_syn.core.arrays import Federation, round_up
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.engine.task import Task
from fedjax_syn.runs.config import GRAPH_MODELS, VISION_MODELS


@dataclasses.dataclass
class Prepared:
    """What a run needs besides the config: device arrays, the task, protocol and settings."""

    fed: Federation
    task: Task
    protocol: dict
    settings: tuple[str, ...]


def _num_client_slots(cfg) -> int | None:
    if not cfg.shard:
        return None
    return round_up(cfg.num_clients, jax.device_count())


def prepare(cfg) -> Prepared:
    check_choice("track", cfg.track, ("vision", "graph"))
    check(cfg.num_clients >= 1, f"num_clients must be >= 1, got {cfg.num_clients}")
    if cfg.track == "vision":
        return _prepare_vision(cfg)
    return _prepare_graph(cfg)


def build_split(cfg, data):
    """The federation (clients, new client, held-out nodes or classes) a config's fields ask for,
    from the loaded dataset of its track: one place maps config fields to split arguments."""
    if cfg.track == "vision":
        from fedjax_syn.data.vision_split import build_vision_federation

        return build_vision_federation(
            data,
            cfg.num_clients,
            cfg.partition,
            alpha=cfg.alpha,
            classes_per_part=cfg.classes_per_part,
            seed=cfg.seed,
            min_class_count=cfg.min_class_count,
            missing_frac=cfg.missing_frac,
        )
    from fedjax_syn.data.graph_split import build_graph_federation

    return build_graph_federation(
        data,
        cfg.num_clients,
        partitioner=cfg.partitioner,
        setting=cfg.setting,
        unseen_frac=cfg.unseen_frac,
        missing_frac=cfg.graph_missing_frac,
        seed=cfg.seed,
    )


def _prepare_vision(cfg) -> Prepared:
    from fedjax_syn.data.vision import load_vision
    from fedjax_syn.data.vision_arrays import VISION_SETTINGS, vision_arrays
    from fedjax_syn.models.vision import MLP, ConvNet

    check_choice("model", cfg.model, VISION_MODELS)
    data = load_vision(cfg.dataset, cfg.data_dir or None)
    split = build_split(cfg, data)
    fed = vision_arrays(split, _num_client_slots(cfg))
    model = (
        MLP(data.num_classes, tuple(cfg.hidden))
        if cfg.model == "mlp"
        else ConvNet(data.num_classes, cfg.width)
    )
    protocol = {
        "num_clients": cfg.num_clients,
        "partition": cfg.partition,
        "alpha": cfg.alpha,
        "min_class_count": cfg.min_class_count,
        "missing_frac": cfg.missing_frac,
    }
    return Prepared(fed, Task(model, graph=False), protocol, VISION_SETTINGS)


def _prepare_graph(cfg) -> Prepared:
    from fedjax_syn.data.graph_arrays import GRAPH_SETTINGS, graph_arrays
    from fedjax_syn.data.graphs import load_graph
    from fedjax_syn.models.gnn import GNN

    check_choice("model", cfg.model, GRAPH_MODELS)
    data = load_graph(cfg.dataset, cfg.data_dir or None)
    split = build_split(cfg, data)
    fed = graph_arrays(split, _num_client_slots(cfg), normalize=cfg.normalize_features)
    model = GNN(data.num_classes, cfg.model, tuple(cfg.hidden), cfg.dropout)
    return Prepared(fed, Task(model, graph=True), dict(split.protocol), GRAPH_SETTINGS)


def build_algorithm(cfg, prepared: Sequence[Prepared]):
    """The algorithm of `cfg` for the runs of one program, which share the data spec."""
    spec = DataSpec.of(cfg.track, [p.fed for p in prepared], prepared[0].settings)
    return registry.build(cfg, prepared[0].task, spec)
