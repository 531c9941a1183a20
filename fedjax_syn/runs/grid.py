"""A config's grid expanded into runs, and the command line's say over it.

A config may carry `grid` (field -> tuple of values, nested like the config itself, so
{"fedlog": {"beta": (0.1, 1.0)}} sweeps an option of FedLoG) and `variants` (name -> field
values) selected by a grid axis named `variant`; every combination is one run. A run leaves out
the option groups of algorithms it does not use, so equal runs of a grid are run once. Fields
that only choose how a run executes (`UNSWEPT_FIELDS`) are not part of its id and cannot be swept.
"""

import ast
import difflib
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from fedjax_syn.algorithms.registry import OPTION_PARSERS, WRAPPER_GROUPS
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.runs import condense
from fedjax_syn.runs import config as run_config

SWEEP_FIELDS = ("grid", "table", "variants")  # describe a sweep, not a run: dropped from runs
# Fields left out of the run id (`runs.config.run_id`): points differing only in them would be
# one run, so a grid may not sweep them.
UNSWEPT_FIELDS = (*run_config.EXECUTION_FIELDS, "on_nonfinite", *condense.EXECUTION_FIELDS)


def set_field(cfg: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    """cfg.a.b = value for dotted = "a.b". The top-level field must exist, or be an algorithm's
    option group (`fedlog`, `moon`, ...) or a wrapper's (`dp`), which may gain keys that its
    algorithm or wrapper validates."""
    parts = dotted.split(".")
    node = cfg
    groups = _option_groups() | set(WRAPPER_GROUPS)
    if len(parts) > 1 and parts[0] not in cfg and parts[0] in groups:
        with cfg.unlocked():
            cfg[parts[0]] = ml_collections.ConfigDict()  # e.g. moon.mu: MOON's option group
    for depth, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            where = ".".join(parts[: depth + 1])
            raise UserError(f"grid field {dotted!r}: {where!r} is not a group of options")
        node = node[part]
    if len(parts) == 1 and parts[0] not in cfg:
        close = difflib.get_close_matches(dotted, list(cfg), n=3)
        known = (
            f"did you mean {', '.join(close)}?" if close else f"fields: {', '.join(sorted(cfg))}"
        )
        raise UserError(f"grid field {dotted!r} is not a config field; {known}")
    with cfg.unlocked():
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise UserError(f"grid field {dotted!r} cannot take {value!r}: {e}") from None


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of a nested dict's leaves: {"fedlog": {"beta": x}} -> fedlog.beta."""
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def grid_axes(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
    """The grid's axes as (dotted field, values), in product order."""
    return _leaves(config.get("grid") or {})


def grid_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """One config per point of `config.grid` (see the module docstring), in product order (last
    axis fastest), without the sweep-only fields; the config itself (minus those fields) when
    there is no grid. A `variant` point records the variant's name in its `variant` field."""
    axes = grid_axes(config)
    variants = config.get("variants") or {}
    for name, values in axes:
        check(
            isinstance(values, (list, tuple)) and len(values) > 0,
            f"grid axis {name!r} must be a non-empty list, got {values!r}",
        )
        check(
            name not in UNSWEPT_FIELDS,
            f"grid axis {name!r} chooses how runs execute, not what they compute (it is not part "
            f"of the run id): set it with --config.{name}=VALUE instead of sweeping it",
        )
    own_groups = {group for group in _option_groups() if group in config}
    points = []
    for values in itertools.product(*(v for _, v in axes)):
        point = config.copy_and_resolve_references()
        with point.unlocked():
            for field in SWEEP_FIELDS:
                if field in point:
                    del point[field]
        for (name, _), value in zip(axes, values):
            if name == "variant":
                check(
                    value in variants,
                    f"variant {value!r} is not defined; variants: {', '.join(variants) or 'none'}",
                )
                with point.unlocked():
                    point["variant"] = value
                for field, v in _leaves(variants[value]):
                    set_field(point, field, v)
            else:
                set_field(point, name, value)
        _drop_unread_options(point, own_groups)
        points.append(point)
    unique = {run_config.run_id(point): point for point in reversed(points)}
    return list(reversed(unique.values()))


def _option_groups() -> set[str]:
    return {group for group, _ in OPTION_PARSERS.values()}


def _drop_unread_options(point: ml_collections.ConfigDict, own_groups: set[str]) -> None:
    """Clears the option groups the point's algorithm does not read, in place: a FedAvg point of
    a grid that also sweeps `fedlog.beta` is one run, not one per beta (`grid_configs` keeps the
    first of equal points). A group of the config itself (`own_groups`) is emptied, one only the
    grid brought is removed, so sweeping one more algorithm's option leaves the other runs' ids
    as they were."""
    read = OPTION_PARSERS.get(point.get("algorithm"), (None,))[0]
    with point.unlocked():
        for group in _option_groups() - {read}:
            if group in own_groups:
                if point.get(group):
                    point[group] = ml_collections.ConfigDict()
            elif group in point:
                del point[group]


def _literal(text: str) -> Any:
    if text.lower() in ("true", "false"):  # as absl's boolean flags read them
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def parse_grid_override(text: str) -> dict[str, list]:
    """'algorithm=fedavg,fedprox;seed=0,1,2' -> {'algorithm': [...], 'seed': [0, 1, 2]}.

    Values are Python literals (bare words are strings, true/false in any case booleans); keys may
    be dotted (fedlog.beta=0.1,1).
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if "=" not in part:
            raise UserError(f"bad --grid entry {part!r}; expected key=v1,v2")
        key, values = part.split("=", 1)
        out[key.strip()] = [_literal(v.strip()) for v in values.split(",")]
    return out


def override_grid(config: ml_collections.ConfigDict, text: str) -> None:
    """Sets or replaces the grid axes given as `parse_grid_override` text, in place."""
    _set_axes(config, parse_grid_override(text))


def _set_axes(config: ml_collections.ConfigDict, axes: Mapping[str, Sequence]) -> None:
    if not axes:
        return
    with config.unlocked():
        if not config.get("grid"):
            config.grid = ml_collections.ConfigDict()
        for dotted, values in axes.items():
            node = config.grid
            *parents, last = dotted.split(".")
            for part in parents:
                if part not in node:
                    node[part] = ml_collections.ConfigDict()
                node = node[part]
                check(
                    isinstance(node, ml_collections.ConfigDict),
                    f"--grid key {dotted!r}: {part!r} is a grid axis, not a group of options",
                )
            node[last] = tuple(values)


def narrow_grid(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Narrows each grid axis that an override sets to that one value, in place.

    `overrides` are the fields set on the command line (dotted, as `--config.fedlog.beta=0.1`).
    A grid point sets every axis field, so without this `--config.algorithm=fedprox` would be
    overwritten at every point of a grid that sweeps `algorithm`, and silently ignored.
    """
    axes = dict(grid_axes(config))
    _set_axes(config, {field: [value] for field, value in overrides.items() if field in axes})


def apply_command_line(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any], grid: str
) -> None:
    """The runs a command line asks for, in place: `--config.FIELD` overrides narrow the grid
    axes they set (`narrow_grid`), then `--grid` replaces axes (`override_grid`)."""
    both = sorted(set(overrides) & set(parse_grid_override(grid)))
    if both:
        raise UserError(f"--config.{both[0]} and --grid both set {both[0]}; give one of them")
    narrow_grid(config, overrides)
    override_grid(config, grid)
    _check_variants_keep(config, overrides)


def _check_variants_keep(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """A variant sets its fields at every point it names, after the command line's overrides: an
    override of a field that a swept variant sets would be silently undone at that variant."""
    axes = dict(grid_axes(config))
    variants = config.get("variants") or {}
    for name in axes.get("variant", ()):
        for field, _ in _leaves(variants.get(name, {})):
            check(
                field not in overrides,
                f"--config.{field} is also set by variant {name!r}, which would undo it there; "
                "narrow the variants (--grid='variant=...') or drop the override",
            )
