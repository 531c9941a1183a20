"""Paper-style tables (Markdown and LaTeX) computed from the results ledger, never typed by hand.

A `TableSpec` is a ledger query plus a layout: which records (filters, seeds), what identifies a
row (dotted record paths, e.g. dataset, protocol.alpha, algorithm), and which numbers fill the
columns (e.g. best.seen and last.seen side by side). Every cell is the mean ± population standard
deviation (ddof=0, as PROTOCOL.md asks) over seeds; the best mean of each column within a comparison
group is bold; runs that the spec expects but the ledger lacks are shown as missing, never dropped;
and the query that produced the table is printed under it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.report.published import CONDENSATION, Reference
from fedjax_syn.runs.ledger import (
    GRAPH_SETTINGS,
    SETTING_LABELS,
    VISION_SETTINGS,
    Stats,
    group_runs,
    lookup,
    seed_stats,
    select,
)

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
ROW_LABELS = {"protocol.num_clients": "K", "protocol.alpha": "alpha", "ipc": "IPC"}


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
    # Values of the last row key (e.g. fedlog) whose every cell is judged against the best other
    # row of its comparison group: win / tie / loss, a tie meaning within the larger std.
    verdict_for: tuple[str, ...] = ()
    # Whether to say under the table how many runs it holds and their summed wall time.
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
    prefix = lambda mode: "" if mode == "personalized" else f"modes.{mode}."
    subs = lambda mode, m: " ".join(
        ([mode] if len(modes) > 1 else []) + ([m] if metric == "both" else [])
    )
    columns = tuple(
        Column(f"{prefix(mode)}{m}.{s}", SETTING_LABELS.get(s, s), subs(mode, m))
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
_JSON_KEYS |= {"metrics", *_AS_TUPLES, *_AS_IS}


def spec_from_dict(obj: Mapping[str, Any]) -> TableSpec:
    """A spec from JSON-style fields (see `_JSON_KEYS`).

    kind "accuracy" (default) takes settings + metric; kind "condense" takes metrics.
    expected_rows is a list of row-value lists, or a {row key: [values]} dict meaning every
    combination.
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
    check(isinstance(obj, dict), f"table spec {text!r} must be a JSON object")
    return spec_from_dict(obj)


@dataclasses.dataclass(frozen=True)
class Table:
    """The numbers of a table: per-row seeds found, per-cell stats, and the bold cells."""

    spec: TableSpec
    row_keys: tuple[tuple, ...]
    seeds_found: dict[tuple, tuple]
    cells: dict[tuple[tuple, int], Stats]
    bold: frozenset[tuple[tuple, int]]
    query: str
    selected: dict[tuple[tuple, str], tuple] = dataclasses.field(default_factory=dict)
    cost: tuple[int, float] = (0, 0.0)  # the matched runs: how many, their summed wall hours
    # The same per group of rows (every row key but the last; e.g. per dataset and K), in row order.
    group_cost: dict[tuple, tuple[int, float]] = dataclasses.field(default_factory=dict)


def _validation_path(column_path: str) -> str:
    """The best-round validation accuracy of a column's evaluation mode: modes.local.last.seen ->
    modes.local.best.val."""
    return ".".join([*column_path.split(".")[:-2], "best", "val"])


def _select(runs: list[tuple[tuple, list[dict]]], n: int, column: str) -> tuple[tuple, list]:
    """(selected values, their runs): of the runs grouped by their last `n` key values (the
    `select_on` paths), those with the highest mean validation accuracy for `column`."""
    candidates: dict[tuple, list[dict]] = {}
    for key, members in runs:
        candidates.setdefault(key[len(key) - n :], []).extend(members)

    def score(values: tuple) -> float:
        vals = [lookup(r, _validation_path(column), None) for r in candidates[values]]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else float("-inf")

    best = max(candidates, key=score)
    return best, candidates[best]


def build_table(records: Iterable[dict], spec: TableSpec, source: str = "ledger") -> Table:
    """Aggregates the records matching `spec` over seeds; `source` names the ledger in the query."""
    filters = dict(spec.filters)
    if spec.seeds is not None:
        filters["seed"] = list(spec.seeds)
    matched = select(records, **filters)
    n_select = len(spec.select_on)
    by_key = group_runs(matched, spec.rows, optional=spec.select_on)
    groups: dict[tuple, list] = {}
    for key, runs in by_key.items():
        groups.setdefault(key[: len(spec.rows)], []).append((key, runs))
    expected = list(dict.fromkeys(spec.expected_rows or ()))
    extra = sorted((k for k in groups if k not in set(expected)), key=_sort_key)
    row_keys = tuple(expected + extra)
    cells: dict[tuple[tuple, int], Stats] = {}
    selected: dict[tuple[tuple, str], tuple] = {}
    seeds_found: dict[tuple, tuple] = {}
    for key in row_keys:
        for j, column in enumerate(spec.columns):
            chosen, runs = (
                _select(groups[key], n_select, column.path) if key in groups else ((), [])
            )
            if runs and any(v is not None for v in chosen):
                selected[key, _validation_path(column.path)] = chosen
            seeds_found.setdefault(key, tuple(sorted(r.get("seed") for r in runs)))
            values = [lookup(r, column.path, None) for r in runs]
            stats = seed_stats([v * spec.scale for v in values if v is not None])
            if stats is not None:
                cells[key, j] = stats
    query = (
        f"select(ledger={source}, filters={json.dumps(filters, sort_keys=True, default=str)}) -> "
        f"{len(matched)} runs; rows={json.dumps(list(spec.rows))}; "
        f"columns={json.dumps([c.path for c in spec.columns])}"
    )
    bold = _bold_cells(spec, row_keys, cells)
    cost, group_cost = _costs(matched, spec.rows, row_keys)
    return Table(spec, row_keys, seeds_found, cells, bold, query, selected, cost, group_cost)


def _costs(matched: list[dict], rows: Sequence[str], row_keys: Sequence[tuple]):
    """(runs, summed wall hours) of all matched runs, and per group of rows (all row keys but the
    last) that has runs, in row order: what each part of a sweep cost, read from its records."""
    hours = lambda runs: sum(r.get("wall_time_s") or 0.0 for r in runs) / 3600
    if len(rows) < 2:
        return (len(matched), hours(matched)), {}
    by_group: dict[tuple, list[dict]] = {}
    for record in matched:
        by_group.setdefault(tuple(lookup(record, k, None) for k in rows[:-1]), []).append(record)
    order = list(dict.fromkeys(key[:-1] for key in row_keys))
    groups = {g: (len(by_group[g]), hours(by_group[g])) for g in order if g in by_group}
    return (len(matched), hours(matched)), groups


def _sort_key(key: tuple) -> tuple:
    """Orders mixed-type row keys: numbers numerically, everything else as text."""
    return tuple(
        (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
        for v in key
    )


def _compare_keys(spec: TableSpec) -> tuple[str, ...]:
    return spec.rows[:-1] if spec.compare_within is None else spec.compare_within


def _compare_indices(spec: TableSpec) -> list[int]:
    return [spec.rows.index(k) for k in _compare_keys(spec)]


def _bold_cells(spec: TableSpec, row_keys: Sequence[tuple], cells: Mapping) -> frozenset:
    """Cells holding the highest mean, as displayed, of their column within their group."""
    idx = _compare_indices(spec)
    groups: dict[tuple, list[tuple]] = {}
    for key in row_keys:
        groups.setdefault(tuple(key[i] for i in idx), []).append(key)
    bold = set()
    for members in groups.values():
        for j in range(len(spec.columns)):
            shown = {k: round(cells[k, j].mean, spec.digits) for k in members if (k, j) in cells}
            if len(shown) < 2:
                continue
            top = max(shown.values())
            bold.update((k, j) for k, v in shown.items() if v == top)
    return frozenset(bold)


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _row_label(path: str) -> str:
    return ROW_LABELS.get(path, path.rsplit(".", 1)[-1])


def _n_text(table: Table, key: tuple) -> str:
    found = len(table.seeds_found[key])
    return f"{found}/{len(table.spec.seeds)}" if table.spec.seeds is not None else str(found)


def _cell_text(table: Table, key: tuple, j: int) -> str:
    stats = table.cells.get((key, j))
    if not table.seeds_found[key]:
        return "missing"
    if stats is None:
        return "—"
    d = table.spec.digits
    text = f"{stats.mean:.{d}f} ± {stats.std:.{d}f}"
    if stats.n != len(table.seeds_found[key]):
        text += f" (n={stats.n})"
    return text


def _assignments(names: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{n}={_fmt_value(v)}" for n, v in zip(names, values, strict=True))


def verdict(table: Table, key: tuple, j: int) -> str | None:
    """`key`'s cell j against the best mean of the other rows of its group that are not judged
    themselves: 'win +d', 'tie +d' (|d| within the larger std) or 'loss -d (<best row>)'."""
    spec, idx = table.spec, _compare_indices(table.spec)
    mine = table.cells.get((key, j))
    others = [
        (table.cells[k, j], k[-1])
        for k in table.row_keys
        if [k[i] for i in idx] == [key[i] for i in idx]
        and k[-1] not in spec.verdict_for
        and (k, j) in table.cells
    ]
    if mine is None or not others:
        return None
    best, name = max(others, key=lambda other: other[0].mean)
    diff = mine.mean - best.mean
    word = "tie" if abs(diff) <= max(mine.std, best.std) else "win" if diff > 0 else "loss"
    return f"{word} {diff:+.{spec.digits}f}" + ("" if word == "win" else f" ({name})")


def _column_label(column: Column) -> str:
    """A column's Markdown header: its group, with its sub-header in parentheses."""
    return f"{column.group} ({column.sub})" if column.sub else column.group


def _verdict_summary(table: Table, verdicts: dict[tuple, list[str | None]]) -> list[str]:
    """Per judged row, the columns it wins, ties and loses under each scoring (a sub-header's
    words before best / last: local, global, personalized; none in a table of one scoring), and
    the columns it loses: the verdict table folded into one line a row."""
    spec = table.spec
    mode = lambda column: column.sub.rpartition(" ")[0]
    modes = list(dict.fromkeys(mode(c) for c in spec.columns))
    heads = [_row_label(r) for r in spec.rows]
    heads += [f"{m or 'all'}: won / tied / lost" for m in modes] + ["lost"]
    lines = [
        "Verdict in short: columns won / tied / lost under each scoring, best and last round "
        "together, and the columns lost, by how much and to which row:",
        "",
        _md_row(heads),
        _md_row(["---"] * len(heads)),
    ]
    for key, row in verdicts.items():
        counts = {m: {"win": 0, "tie": 0, "loss": 0} for m in modes}
        lost = []
        for column, text in zip(spec.columns, row, strict=True):
            if text is None:
                continue
            word, rest = text.split(" ", 1)
            counts[mode(column)][word] += 1
            if word == "loss":
                lost.append(f"{_column_label(column)} {rest}")
        cells = [
            f"{c['win']} / {c['tie']} / {c['loss']}" if sum(c.values()) else "—"
            for c in counts.values()
        ]
        lines.append(_md_row([_fmt_value(v) for v in key] + cells + ["; ".join(lost) or "—"]))
    return [*lines, ""]


def _verdict_lines(table: Table) -> list[str]:
    """A Markdown table of `verdict` for every judged row and column, after its summary."""
    spec = table.spec
    judged = [k for k in table.row_keys if k[-1] in spec.verdict_for and table.seeds_found[k]]
    if not judged:
        return []
    verdicts = {key: [verdict(table, key, j) for j in range(len(spec.columns))] for key in judged}
    heads = [_row_label(r) for r in spec.rows] + [_column_label(c) for c in spec.columns]
    lines = [
        *_verdict_summary(table, verdicts),
        f"Verdict for {', '.join(spec.verdict_for)} against the best other row (win or loss: "
        "the difference exceeds the larger of the two stds; tie otherwise):",
        "",
        _md_row(heads),
        _md_row(["---"] * len(heads)),
    ]
    for key, row in verdicts.items():
        lines.append(_md_row([_fmt_value(v) for v in key] + [text or "—" for text in row]))
    return lines


def _notes(table: Table) -> list[tuple[str, list[str]]]:
    """The non-empty notes under a table: rows with expected seeds (or the whole row) absent from
    the ledger, and the `select_on` values each row chose on validation, per mode."""
    spec, missing, chosen = table.spec, [], []
    by_group: dict[tuple, list[tuple]] = {}
    for key in table.row_keys:
        by_group.setdefault(key[:-1], []).append(key)
    empty_groups = {
        group
        for group, keys in by_group.items()
        if len(keys) > 1 and not any(table.seeds_found[k] for k in keys)
    }
    for group in sorted(empty_groups, key=lambda g: table.row_keys.index(by_group[g][0])):
        where = _assignments(spec.rows[:-1], group)
        missing.append(f"{where}: no run yet (all {len(by_group[group])} rows)")
    for key in table.row_keys:
        if key[:-1] in empty_groups:
            continue
        where, found = _assignments(spec.rows, key), table.seeds_found[key]
        absent = [s for s in spec.seeds or () if s not in found]
        if absent:
            missing.append(f"{where}: seed(s) {', '.join(map(str, absent))}")
        elif spec.seeds is None and not found:
            missing.append(f"{where}: all seeds")
        picks = []
        for (k, path), values in table.selected.items():
            if k != key:
                continue
            mode = path.removesuffix("best.val").strip(".").removeprefix("modes.")
            named = zip(spec.select_on, values, strict=True)  # a row has only its own options
            chosen_on = ", ".join(
                f"{_row_label(p)}={_fmt_value(v)}" for p, v in named if v is not None
            )
            picks.append(f"{mode or 'personalized'}: {chosen_on}")
        if picks:
            chosen.append(f"{where}: {'; '.join(picks)}")
    notes = [("Missing runs", missing), ("Selected on validation", chosen)]
    return [(heading, lines) for heading, lines in notes if lines]


def _reference_cells(table: Table, key: tuple) -> list[str]:
    """The row's published figure (a list of one cell; empty when the spec has no reference)."""
    reference = table.spec.reference
    if reference is None:
        return []
    figure = reference.lookup(table.spec.rows, key)
    return ["—" if figure is None else f"{figure:.1f}"]


def _caption(table: Table) -> str:
    spec = table.spec
    within = [_row_label(k) for k in _compare_keys(spec)]
    scope = f"within each ({', '.join(within)})" if within else "over all rows"
    return (
        f"Accuracy (%): mean ± population std (numpy std, ddof=0) over seeds; "
        f"n = seeds per row{' (found/expected)' if spec.seeds is not None else ''}. "
        f"Bold: best mean of the column {scope}. {spec.note}"
        + (f" {spec.reference.note}" if spec.reference else "")
    ).strip()


def to_markdown(table: Table) -> str:
    """The table as GitHub Markdown, with caption, missing runs and the query under it."""
    spec = table.spec
    headers = [_row_label(r) for r in spec.rows] + ["n"]
    headers += [_column_label(c) for c in spec.columns]
    headers += [spec.reference.label] if spec.reference else []
    align = ["---"] * len(spec.rows) + ["---:"] * (len(headers) - len(spec.rows))
    lines = [f"**{_md_escape(spec.title)}**", "", _md_row(headers), _md_row(align)]
    for key in table.row_keys:
        cells = [_fmt_value(v) for v in key] + [_n_text(table, key)]
        for j in range(len(spec.columns)):
            text = _cell_text(table, key, j)
            cells.append(f"**{text}**" if (key, j) in table.bold else text)
        cells += _reference_cells(table, key)
        lines.append(_md_row([_md_escape(c) for c in cells]))
    lines += ["", _md_escape(_caption(table))]
    if spec.cost:
        runs, hours = table.cost
        lines += ["", f"Cost: {runs} runs, {hours:.1f} hours of run wall time summed."]
        if table.group_cost:
            labels = ", ".join(_row_label(r) for r in spec.rows[:-1])
            parts = [
                f"{', '.join(map(_fmt_value, group))}: {n} runs, {h:.1f} h"
                for group, (n, h) in table.group_cost.items()
            ]
            lines += [f"By {labels}: {'; '.join(parts)}."]
    for heading, notes in _notes(table):
        lines += ["", f"{heading}:", *(f"- {_md_escape(n)}" for n in notes)]
    verdicts = _verdict_lines(table)
    if verdicts:
        lines += ["", *verdicts]
    lines += ["", f"Query: `{table.query}`", ""]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "--",
}


def latex_escape(text: str) -> str:
    """Text made safe for LaTeX (special characters escaped, one pass)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """The table as a booktabs LaTeX float; missing runs and the query follow as comments."""
    spec = table.spec
    n_keys = len(spec.rows) + 1
    n_reference = 1 if spec.reference else 0
    caption = latex_escape(f"{spec.title}. {_caption(table)}").replace("±", r"$\pm$")
    lines = [
        f"% Table {spec.name!r}, generated from the results ledger; do not edit by hand.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{latex_escape(spec.name)}}}",
        r"\begin{tabular}{"
        + "l" * len(spec.rows)
        + "r"
        + "c" * len(spec.columns)
        + "r" * n_reference
        + "}",
        r"\toprule",
    ]
    row_labels = [latex_escape(_row_label(r)) for r in spec.rows] + ["$n$"]
    spans = [(g, len(list(cols))) for g, cols in itertools.groupby(spec.columns, lambda c: c.group)]
    two_levels = any(c.sub for c in spec.columns)
    if two_levels:
        top, rules, start = [""] * n_keys, [], n_keys + 1
        for group, width in spans:
            top.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
            if width > 1:
                rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        top += [""] * n_reference
        lines += [" & ".join(top) + r" \\", "".join(rules)]
    headers = [latex_escape(c.sub if two_levels else c.group) for c in spec.columns]
    headers += [latex_escape(spec.reference.label)] if spec.reference else []
    lines += [" & ".join(row_labels + headers) + r" \\", r"\midrule"]
    idx = _compare_indices(spec)
    previous = None
    for key in table.row_keys:
        group = tuple(key[i] for i in idx)
        if previous is not None and group != previous:
            lines.append(r"\midrule")
        previous = group
        cells = [latex_escape(_fmt_value(v)) for v in key] + [_n_text(table, key)]
        for j in range(len(spec.columns)):
            text = latex_escape(_cell_text(table, key, j)).replace("±", r"$\pm$")
            cells.append(rf"\textbf{{{text}}}" if (key, j) in table.bold else text)
        cells += [latex_escape(c) for c in _reference_cells(table, key)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    for heading, notes in _notes(table):
        lines += [f"% {heading}:", *(f"%   {n}" for n in notes)]
    lines += [f"% Query: {table.query}", ""]
    return "\n".join(lines)


def table_spec(config: ml_collections.ConfigDict, name: str = "table") -> TableSpec:
    """The table a sweep config names in its `table` field (spec fields of
    `spec_from_dict`, plus the figure fields `plot` and `series`), with defaults from its
    track and grid seeds."""
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
    return spec_from_dict(table)
