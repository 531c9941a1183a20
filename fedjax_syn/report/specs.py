"""Table specs: which ledger records a table averages and how it lays them out.

A `TableSpec` is a ledger query plus a layout: which records (filters, seeds), what identifies a
row (dotted record paths, e.g. dataset, protocol.alpha, algorithm), and which numbers fill the
columns (e.g. best.seen and last.seen side by side). Specs come from Python (`accuracy_spec`,
`condense_spec`), by name (`NAMED_SPECS`), from JSON (`resolve_spec`) or from a sweep config's
`table` field (`table_spec`); `tables.build_table` fills one from a ledger.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.data.graph_arrays import GRAPH_SETTINGS
from fedjax_syn.data.vision_arrays import VISION_SETTINGS
from fedjax_syn.report.published import CONDENSATION, Reference
from fedjax_syn.runs.records import SETTING_LABELS

METRIC_SETS = ("best", "last", "both")
# How each evaluation mode scores a method (core/interface.py); every accuracy table says it.
MODE_NOTES = {
    "personalized": "each client's personalised model (the algorithm's own `personalize`: the "
    "global model for FedAvg and FedProx, the fine-tuned model for FedAvg-FT, own head for FedPer)",
    "local": "each client's model right after its local update (the released FedLoG protocol)",
    "global": "the server's global model",
}
CONDENSE_LABELS = {"syn_acc": "Condensed", "random_acc": "Random real"}
FIGURE_FIELDS = ("plot", "series")  # fields of a config's `table` that choose the figure
FIGURE_KINDS = ("alpha", "curves", "gap")  # what its `plot` may draw (`report.plots`)


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: the dotted record path it averages, and its two header levels."""

    path: str
    group: str
    sub: str = ""


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A ledger query and the layout of the table it fills.

    `expected_rows` (row-key tuples) and `seeds` describe the grid the table should cover: rows or
    seeds absent from the ledger are reported as missing. `seeds` also restricts the query.
    `compare_within` names the row keys that form a comparison group for bolding (default: all row
    keys but the last, e.g. algorithms compared within each (dataset, alpha)).
    """

    name: str
    title: str
    filters: Mapping[str, Any]
    rows: tuple[str, ...]
    columns: tuple[Column, ...]
    expected_rows: tuple[tuple, ...] | None = None
    seeds: tuple[int, ...] | None = None
    compare_within: tuple[str, ...] | None = None
    scale: float = 100.0
    digits: int = 2
    note: str = ""
    # Record paths (e.g. config.fedlog.beta) tuned on validation: each row and evaluation mode
    # shows the value whose mean best-round validation accuracy over seeds is highest.
    select_on: tuple[str, ...] = ()
    # The values each `select_on` path is tuned over (a sweep config's grid gives them): a row
    # tuned on a path is complete only once every value has every seed, since a choice among some
    # of them is provisional. Paths left out are complete with whatever values ran.
    select_values: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    # Values of the last row key (e.g. fedlog) whose every cell is judged against the best other
    # row of its comparison group: win / tie / loss, a tie meaning within the larger std.
    verdict_for: tuple[str, ...] = ()
    # Whether to say under the table how many runs it holds, their summed wall and CPU time.
    cost: bool = False
    # Published figures shown in a last column, looked up by some of the row keys.
    reference: Reference | None = None

    def __post_init__(self):
        check(len(self.rows) > 0, f"table {self.name!r} needs at least one row key")
        check(len(self.columns) > 0, f"table {self.name!r} needs at least one column")
        for row in self.expected_rows or ():
            check(
                len(row) == len(self.rows),
                f"expected row {list(row)} of table {self.name!r} has {len(row)} values; "
                f"the row keys are {list(self.rows)}",
            )
        for key in self.compare_within or ():
            check_choice(f"compare_within key of table {self.name!r}", key, self.rows)
        for path in self.select_values:
            check_choice(f"select_values path of table {self.name!r}", path, self.select_on)

    @property
    def compare_keys(self) -> tuple[str, ...]:
        """The row keys that form a comparison group (bold cells, verdicts, LaTeX rules)."""
        return self.rows[:-1] if self.compare_within is None else self.compare_within

    @property
    def compare_indices(self) -> tuple[int, ...]:
        """Where `compare_keys` sit in a row key."""
        return tuple(self.rows.index(k) for k in self.compare_keys)


def scored_path(mode: str, round_: str, setting: str) -> str:
    """The record path of a setting's accuracy under an evaluation mode at a round (best / last):
    best.seen for the personalised mode, modes.local.last.missing_class for the others."""
    prefix = "" if mode == "personalized" else f"modes.{mode}."
    return f"{prefix}{round_}.{setting}"


def scoring_of(path: str) -> tuple[str, str, str] | None:
    """(mode, round, setting) of a `scored_path`; None for any other path."""
    parts = path.split(".")
    mode, rest = (
        (parts[1], parts[2:]) if parts[0] == "modes" and len(parts) > 1 else ("personalized", parts)
    )
    return (mode, *rest) if len(rest) == 2 and rest[0] in ("best", "last") else None


def accuracy_spec(
    name: str,
    filters: Mapping[str, Any],
    rows: Sequence[str],
    settings: Sequence[str],
    metric: str = "both",
    title: str | None = None,
    modes: Sequence[str] = ("personalized",),
    **layout: Any,
) -> TableSpec:
    """Spec of a settings table: one column per setting, best-val and last round side by side,
    for each evaluation mode in `modes` (each mode's best round is chosen on its own validation
    accuracy)."""
    check_choice("metric set", metric, METRIC_SETS)
    check(len(modes) >= 1, "an accuracy table needs at least one evaluation mode")
    for mode in modes:
        check_choice("evaluation mode", mode, MODE_NOTES)
    metrics = ("best", "last") if metric == "both" else (metric,)
    subs = lambda mode, m: " ".join(
        ([mode] if len(modes) > 1 else []) + ([m] if metric == "both" else [])
    )
    columns = tuple(
        Column(scored_path(mode, m, s), SETTING_LABELS.get(s, s), subs(mode, m))
        for s in settings
        for mode in modes
        for m in metrics
    )
    note = {
        "best": "Numbers are at the round of best validation accuracy.",
        "last": "Numbers are at the last round.",
        "both": "best = round of best validation accuracy; last = final round.",
    }[metric]
    scored = "; ".join(f"{m}: {MODE_NOTES[m]}" if len(modes) > 1 else MODE_NOTES[m] for m in modes)
    return TableSpec(
        name=name,
        title=title or f"{', '.join(SETTING_LABELS.get(s, s) for s in settings)} accuracy",
        filters=dict(filters),
        rows=tuple(rows),
        columns=columns,
        note=f"{note} Scored with {scored}.",
        **layout,
    )


def condense_spec(
    name: str = "condense",
    filters: Mapping[str, Any] | None = None,
    rows: Sequence[str] = ("dataset", "method", "config.dsa", "ipc", "config.iterations"),
    metrics: Sequence[str] = ("syn_acc", "random_acc"),
    title: str = "Dataset condensation: test accuracy",
    **layout: Any,
) -> TableSpec:
    """Spec of the condensation table (a row per iteration budget, since runs short of the
    papers' 1000 iterations are common on CPUs); methods are compared within each (dataset, ipc),
    and the papers' own figures sit in a last column."""
    layout.setdefault("compare_within", tuple(r for r in rows if r in ("dataset", "ipc")))
    layout.setdefault("reference", CONDENSATION)
    return TableSpec(
        name=name,
        title=title,
        filters={"track": "condense", **(filters or {})},
        rows=tuple(rows),
        columns=tuple(Column(f"metrics.{m}", CONDENSE_LABELS.get(m, m)) for m in metrics),
        note="Condensed = model trained on the synthetic set; "
        "Random real = on as many random real examples per class.",
        **layout,
    )


NAMED_SPECS = {
    "vision": accuracy_spec(
        "vision",
        {"track": "vision", "protocol.partition": "dirichlet"},
        ("dataset", "protocol.alpha", "algorithm"),
        VISION_SETTINGS,
        title="Image classification under Dirichlet(alpha) heterogeneity",
    ),
    "graph": accuracy_spec(
        "graph",
        {"track": "graph"},
        ("dataset", "protocol.num_clients", "algorithm"),
        GRAPH_SETTINGS,
        title="Subgraph node classification with K clients",
    ),
    "condense": condense_spec(),
}

# The fields of a JSON spec: layout fields taken as tuples, layout fields taken as they are, and
# the rest, which say what the table holds.
_AS_TUPLES = ("compare_within", "seeds", "select_on", "verdict_for")
_AS_IS = ("title", "scale", "digits", "cost")
_JSON_KEYS = {"name", "kind", "filters", "rows", "expected_rows", "settings", "metric", "modes"}
_JSON_KEYS |= {"metrics", "select_values", *_AS_TUPLES, *_AS_IS}


def spec_from_dict(obj: Mapping[str, Any]) -> TableSpec:
    """A spec from JSON-style fields (see `_JSON_KEYS`).

    kind "accuracy" (default) takes settings + metric; kind "condense" takes metrics.
    expected_rows is a list of row-value lists, or a {row key: [values]} dict meaning every
    combination; select_values a {select_on path: [values]} dict.
    """
    unknown = sorted(set(obj) - _JSON_KEYS)
    check(not unknown, f"unknown table spec field(s) {unknown}; allowed: {sorted(_JSON_KEYS)}")
    kind = obj.get("kind", "accuracy")
    check_choice("table kind", kind, ("accuracy", "condense"))
    name, accuracy = obj.get("name", "table"), kind == "accuracy"
    for key in ("rows", "settings") if accuracy else ():
        check(key in obj, f"accuracy table spec {name!r} needs {key!r}")
    rows = tuple(obj.get("rows", ("dataset", "method", "ipc")))
    own = "modes" if accuracy else "metrics"  # the other kind's fields are ignored
    layout = {k: tuple(obj[k]) for k in (*_AS_TUPLES, own) if k in obj}
    layout |= {k: obj[k] for k in _AS_IS if k in obj}
    if "expected_rows" in obj:
        layout["expected_rows"] = _expected_rows(obj["expected_rows"], rows)
    if "select_values" in obj:
        values = obj["select_values"]
        check(
            isinstance(values, Mapping),
            f"select_values of table spec {name!r} must map each select_on path to its values, "
            f"got {_json_kind(values)}",
        )
        layout["select_values"] = {path: tuple(v) for path, v in values.items()}
    if accuracy:
        metric = obj.get("metric", "both")
        return accuracy_spec(name, obj.get("filters", {}), rows, obj["settings"], metric, **layout)
    return condense_spec(name, obj.get("filters"), rows, **layout)


def _expected_rows(value: Any, rows: Sequence[str]) -> tuple[tuple, ...]:
    if isinstance(value, Mapping):
        missing = [r for r in rows if r not in value]
        check(not missing, f"expected_rows grid lacks values for row key(s) {missing}")
        return tuple(itertools.product(*(value[r] for r in rows)))
    return tuple(tuple(row) for row in value)


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words (a list is an array)."""
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else kinds.get(type(value), "a number")


def resolve_spec(text: str) -> TableSpec:
    """A named spec, an inline JSON object, or the path of a JSON file holding one."""
    if text in NAMED_SPECS:
        return NAMED_SPECS[text]
    if text.lstrip().startswith("{"):
        source = text
    else:
        path = pathlib.Path(text)
        check(
            path.is_file(),
            f"table spec {text!r} is neither a named spec ({', '.join(NAMED_SPECS)}), "
            "an inline JSON object, nor an existing JSON file",
        )
        source = path.read_text()
    try:
        obj = json.loads(source)
    except json.JSONDecodeError as e:
        raise UserError(f"table spec {text!r} is not valid JSON: {e}") from None
    check(
        isinstance(obj, dict), f"table spec {text!r} must be a JSON object, got {_json_kind(obj)}"
    )
    return spec_from_dict(obj)


def table_spec(config: ml_collections.ConfigDict, name: str = "table") -> TableSpec:
    """The table a sweep config names in its `table` field (spec fields of
    `spec_from_dict`, plus the figure fields `plot` and `series`), with defaults from its
    track and grid seeds. Its figure is checked too (`figure_kind`): entry points build the
    spec before the runs, so a typo fails in seconds, not after the sweep. The values of each
    `select_on` path default to those the grid sweeps."""
    figure_kind(config)
    fields = (config.get("table") or ml_collections.ConfigDict()).to_dict()
    table = {k: v for k, v in fields.items() if k not in FIGURE_FIELDS}
    track = config.get("track", "vision")
    table.setdefault("name", name)
    table.setdefault("kind", "condense" if track == "condense" else "accuracy")
    if track != "condense":
        table.setdefault("rows", ["dataset", "algorithm"])
        table.setdefault("settings", list(VISION_SETTINGS if track == "vision" else GRAPH_SETTINGS))
    grid = config.get("grid") or {}
    table.setdefault("seeds", list(grid["seed"]) if "seed" in grid else [config.get("seed", 0)])
    plain = grid.to_dict() if isinstance(grid, ml_collections.ConfigDict) else grid
    swept = {path: _grid_values(plain, path) for path in table.get("select_on", ())}
    table.setdefault("select_values", {p: list(v) for p, v in swept.items() if v is not None})
    return spec_from_dict(table)


def _grid_values(grid: Mapping[str, Any], path: str) -> Sequence | None:
    """The values a grid sweeps for a record path (config.fedlog.beta -> grid.fedlog.beta);
    None where the grid does not sweep it."""
    node: Any = grid
    for part in path.removeprefix("config.").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Sequence) and not isinstance(node, str) else None


def figure_kind(config: ml_collections.ConfigDict) -> str:
    """The figure of a sweep config's table: its `table.plot`, by default accuracy against alpha
    when the grid sweeps several alphas, else the per-round curves."""
    grid = config.get("grid") or {}
    default = "alpha" if len(grid.get("alpha", ())) > 1 else "curves"
    kind = (config.get("table") or {}).get("plot", default)
    check_choice("table plot", kind, FIGURE_KINDS)
    return kind
