"""The one table of algorithms: name -> builder, written out literally.

A builder takes (config, task, data spec) and returns a `FederatedAlgorithm`. Nothing registers
itself; adding an algorithm is one line here.
"""

import dataclasses
from collections.abc import Callable

from fedjax_syn.algorithms import (
    apfl,
    common,
    ditto,
    dp,
    fedbabu,
    fedgta,
    fedproto,
    fedpub,
    fedrep,
    fedsage,
    fedtad,
    gcfl,
    moon,
    scaffold,
)
from fedjax_syn.algorithms.fedavg import fedavg, fedavg_options, fedprox
from fedjax_syn.algorithms.fedavg_ft import fedavg_ft
from fedjax_syn.algorithms.fedlog.algorithm import build as build_fedlog
from fedjax_syn.algorithms.fedlog.algorithm import build_released, released_options
from fedjax_syn.algorithms.fedlog.config import from_dict
from fedjax_syn.algorithms.fedlog.vision import build as build_fedlog_vision
from fedjax_syn.algorithms.fedlog.vision import vision_options
from fedjax_syn.algorithms.fedper import fedper
from fedjax_syn.algorithms.local_only import local_only
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.core.interface import DataSpec, FederatedAlgorithm
from fedjax_syn.engine.task import Task

Builder = Callable[..., FederatedAlgorithm]  # (cfg, task, spec) -> algorithm


def _fedavg_ft(cfg, task: Task, spec: DataSpec) -> FederatedAlgorithm:
    return fedavg_ft(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        common.finetune_schedule(cfg),
        weighted=cfg.weighted,
    )


BUILDERS: dict[str, Builder] = {
    "local": lambda cfg, task, spec: local_only(
        task, common.optimizer(cfg), common.local_schedule(cfg)
    ),
    "fedavg": lambda cfg, task, spec: fedavg(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        weighted=cfg.weighted,
        options=fedavg_options(common.options(cfg, "fedavg")),
    ),
    "fedavg_ft": _fedavg_ft,
    "fedprox": lambda cfg, task, spec: fedprox(
        task,
        common.optimizer(cfg),
        common.local_schedule(cfg),
        mu=cfg.prox_mu,
        weighted=cfg.weighted,
        options=fedavg_options(common.options(cfg, "fedavg")),
    ),
    "fedper": lambda cfg, task, spec: fedper(
        task, common.optimizer(cfg), common.local_schedule(cfg), weighted=cfg.weighted
    ),
    "fedlog": build_fedlog,
    "fedlog_released": build_released,
    "fedlog_vision": build_fedlog_vision,
    "scaffold": scaffold.build,
    "ditto": ditto.build,
    "moon": moon.build,
    "fedproto": fedproto.build,
    "fedrep": fedrep.build,
    "fedbabu": fedbabu.build,
    "apfl": apfl.build,
    "fedpub": fedpub.build,
    "gcfl_plus": gcfl.build,
    "fedgta": fedgta.build,
    "fedtad": fedtad.build,
    "fedsage": fedsage.build,
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
    "fedlog_released": ("graph",),
    "fedlog_vision": ("vision",),
    "scaffold": _ANY,
    "ditto": _ANY,
    "moon": _ANY,
    "fedproto": _ANY,
    "fedrep": _ANY,
    "fedbabu": _ANY,
    "apfl": _ANY,
    "fedpub": ("graph",),
    "gcfl_plus": ("graph",),
    "fedgta": ("graph",),
    "fedtad": ("graph",),
    "fedsage": ("graph",),
}


# The option group each algorithm reads (`cfg.<group>`, a dict; absent: the defaults) and its
# parser: cheap, no data needed, so a config's options are checked before any run starts.
OPTION_PARSERS: dict[str, tuple[str, Callable[[dict], object]]] = {
    "fedavg": ("fedavg", fedavg_options),
    "fedprox": ("fedavg", fedavg_options),
    "fedlog": ("fedlog", from_dict),
    "fedlog_released": ("fedlog", released_options),
    "fedlog_vision": ("fedlog", vision_options),
    "scaffold": ("scaffold", scaffold.scaffold_options),
    "ditto": ("ditto", ditto.ditto_options),
    "moon": ("moon", moon.moon_options),
    "fedproto": ("fedproto", fedproto.fedproto_options),
    "fedrep": ("fedrep", fedrep.options),
    "apfl": ("apfl", apfl.options),
    "fedpub": ("fedpub", fedpub.parse_options),
    "gcfl_plus": ("gcfl_plus", gcfl.parse_options),
    "fedgta": ("fedgta", fedgta.options),
    "fedtad": ("fedtad", fedtad.options),
    "fedsage": ("fedsage", fedsage.fedsage_options),
}


# Option groups any algorithm may carry, read by a wrapper around it (`dp`: clipping and noise on
# uploads, `algorithms/dp.py`). A config without the group runs the algorithm unwrapped, so
# adding a wrapper changes no existing run's id.
WRAPPER_GROUPS = ("dp",)


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
    raw_dp = common.options(cfg, "dp")
    if raw_dp:
        dp.check_supported(cfg.algorithm)
        dp.dp_options(raw_dp)


def resolved_options(cfg) -> dict[str, dict]:
    """The algorithm's options as it runs them, defaults and presets filled in: {group: options},
    {} for an algorithm without options. A run's id names only the options its config gives, so
    its record keeps these too: what a preset or a default meant when it ran."""
    if cfg.algorithm not in OPTION_PARSERS:
        return {}
    group, parse = OPTION_PARSERS[cfg.algorithm]
    return {group: dataclasses.asdict(parse(common.options(cfg, group)))}


def build(cfg, task: Task, spec: DataSpec) -> FederatedAlgorithm:
    """The algorithm `cfg.algorithm` names, for data described by `spec`, wrapped by the config's
    `dp` group when it has one."""
    check_track(cfg.algorithm, spec.track)
    return dp.apply(cfg, spec, BUILDERS[cfg.algorithm](cfg, task, spec))


def tracks_table() -> str:
    """The Markdown table of algorithms x tracks (and option groups) that README.md shows."""
    rows = ["| algorithm | vision | graph | options |", "| --- | :---: | :---: | --- |"]
    for name, tracks in TRACKS.items():
        marks = ["✓" if track in tracks else "" for track in ("vision", "graph")]
        group = f"`cfg.{OPTION_PARSERS[name][0]}`" if name in OPTION_PARSERS else ""
        rows.append(f"| `{name}` | {marks[0]} | {marks[1]} | {group} |")
    return "\n".join(rows)
