"""The one table of algorithms: name -> builder, written out literally.

A builder takes (config, task, data spec) and returns a `FederatedAlgorithm`. Nothing registers
itself; adding an algorithm is one line here.
"""

from collections.abc import Callable

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedavg import fedavg, fedprox
from fedjax_syn.algorithms.fedavg_ft import fedavg_ft
from fedjax_syn.algorithms.fedlog.algorithm import build as build_fedlog
from fedjax_syn.algorithms.fedlog.config import from_dict
from fedjax_syn.algorithms.fedlog.vision import build as build_fedlog_vision
from fedjax_syn.algorithms.fedlog.vision import vision_options
from fedjax_syn.algorithms.fedper import fedper
from fedjax_syn.algorithms.fedsage import build as build_fedsage
from fedjax_syn.algorithms.fedsage import fedsage_options
from fedjax_syn.algorithms.local_only import local_only
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.interface import DataSpec, FederatedAlgorithm
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.task import Task

Builder = Callable[..., FederatedAlgorithm]  # (cfg, task, spec) -> algorithm


def _fedavg_ft(cfg, task: Task, spec: DataSpec) -> FederatedAlgorithm:
    check(cfg.finetune_epochs >= 1, f"finetune_epochs must be >= 1, got {cfg.finetune_epochs}")
    finetune = Schedule(
        cfg.batch_size, epochs=cfg.finetune_epochs, drop_last=cfg.get("drop_last", False)
    )
    return fedavg_ft(
        task, common.optimizer(cfg), common.local_schedule(cfg), finetune, weighted=cfg.weighted
    )


BUILDERS: dict[str, Builder] = {
    "local": lambda cfg, task, spec: local_only(
        task, common.optimizer(cfg), common.local_schedule(cfg)
    ),
    "fedavg": lambda cfg, task, spec: fedavg(
        task, common.optimizer(cfg), common.local_schedule(cfg), weighted=cfg.weighted
    ),
    "fedavg_ft": _fedavg_ft,
    "fedprox": lambda cfg, task, spec: fedprox(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        mu=cfg.prox_mu,
        weighted=cfg.weighted,
    ),
    "fedper": lambda cfg, task, spec: fedper(
        task, common.optimizer(cfg), common.local_schedule(cfg), weighted=cfg.weighted
    ),
    "fedlog": build_fedlog,
    "fedlog_vision": build_fedlog_vision,
    "fedsage": build_fedsage,
}


_ANY = ("vision", "graph")
# The tracks each algorithm runs on (FedLoG's graph and image recipes differ).
TRACKS: dict[str, tuple[str, ...]] = {
    "local": _ANY,
    "fedavg": _ANY,
    "fedavg_ft": _ANY,
    "fedprox": _ANY,
    "fedper": _ANY,
    "fedlog": ("graph",),
    "fedlog_vision": ("vision",),
    "fedsage": ("graph",),
}


# The option group each algorithm reads (`cfg.<group>`, a dict; absent: the defaults) and its
# parser: cheap, no data needed, so a config's options are checked before any run starts.
OPTION_PARSERS: dict[str, tuple[str, Callable[[dict], object]]] = {
    "fedlog": ("fedlog", from_dict),
    "fedlog_vision": ("fedlog", vision_options),
    "fedsage": ("fedsage", fedsage_options),
}


def check_track(algorithm: str, track: str) -> None:
    """A one-line error when `algorithm` does not run on `track`."""
    check_choice("algorithm", algorithm, BUILDERS)
    allowed = [name for name, tracks in TRACKS.items() if track in tracks]
    check(
        track in TRACKS[algorithm],
        f"algorithm {algorithm!r} does not run on the {track} track; allowed: {', '.join(allowed)}",
    )


def check_options(cfg) -> None:
    """A one-line error for an unknown or bad option of the algorithm `cfg` names."""
    if cfg.algorithm in OPTION_PARSERS:
        group, parse = OPTION_PARSERS[cfg.algorithm]
        parse(common.options(cfg, group))


def build(cfg, task: Task, spec: DataSpec) -> FederatedAlgorithm:
    """The algorithm `cfg.algorithm` names, for data described by `spec`."""
    check_track(cfg.algorithm, spec.track)
    return BUILDERS[cfg.algorithm](cfg, task, spec)
