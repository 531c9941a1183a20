"""Paper-style tables computed from the results ledger, never typed by hand.

`build_table` fills a `specs.TableSpec` from ledger records: every cell is the mean ± population
standard deviation (ddof=0, as PROTOCOL.md asks) over seeds; the best mean of each column within a
comparison group is bold; runs that the spec expects but the ledger lacks are kept as missing,
never dropped; and the query that produced the table is kept with it. `verdict` judges a row's
cell against the best other row of its group. `render` writes the result as Markdown or LaTeX.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from fedjax_syn.report.specs import TableSpec
from fedjax_syn.runs.records import Stats, group_runs, lookup, seed_stats, select


class Cost(NamedTuple):
    """What some runs cost, read from their records: how many, their summed wall hours, and
    their summed CPU hours over the `cpu_runs` of them whose records measure CPU time."""

    runs: int = 0
    wall_hours: float = 0.0
    cpu_runs: int = 0
    cpu_hours: float = 0.0

    @classmethod
    def of(cls, records: Sequence[dict]) -> Cost:
        cpu = [r["cpu_time_s"] for r in records if r.get("cpu_time_s") is not None]
        wall = sum(r.get("wall_time_s") or 0.0 for r in records)
        return cls(len(records), wall / 3600, len(cpu), sum(cpu) / 3600)


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
    cost: Cost = dataclasses.field(default_factory=Cost)  # what the matched runs cost
    # The same per group of rows (every row key but the last; e.g. per dataset and K), in row order.
    group_cost: dict[tuple, Cost] = dataclasses.field(default_factory=dict)
    # Per row tuned on `select_on`: the seeds found for each combination of its tuned values.
    tuned_seeds: dict[tuple, dict[tuple, tuple]] = dataclasses.field(default_factory=dict)


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
    tuned_seeds = {
        key: {k[len(k) - n_select :]: tuple(r.get("seed") for r in runs) for k, runs in members}
        for key, members in groups.items()
        if n_select
    }
    return Table(
        spec, row_keys, seeds_found, cells, bold, query, selected, cost, group_cost, tuned_seeds
    )


def absent_tuned_runs(table: Table, key: tuple) -> list[tuple[tuple, tuple]]:
    """(tuned values, absent seeds) for each combination of the `select_on` values a row is
    tuned on that lacks some seed: the spec's `select_values` where given, else the values
    found. A path is tuned on by a row when one of its runs has it (FedLoG's beta, not MOON's)."""
    spec, found = table.spec, table.tuned_seeds.get(key, {})
    if not found:
        return []
    seeds = spec.seeds or tuple(sorted({s for got in found.values() for s in got}, key=str))
    axes = []
    for i, path in enumerate(spec.select_on):
        values = list(dict.fromkeys(v[i] for v in found if v[i] is not None))
        axes.append(tuple(spec.select_values.get(path, values)) if values else (None,))
    return [
        (values, absent)
        for values in itertools.product(*axes)
        if (absent := tuple(s for s in seeds if s not in found.get(values, ())))
    ]


def is_complete(table: Table, key: tuple) -> bool:
    """Whether a row has every expected seed, for every value it is tuned over."""
    found = table.seeds_found[key]
    has_seeds = all(s in found for s in table.spec.seeds) if table.spec.seeds else bool(found)
    return has_seeds and not absent_tuned_runs(table, key)


def comparison_groups(table: Table) -> dict[tuple, list[tuple]]:
    """Row keys per comparison group (e.g. per dataset and K), in row order."""
    groups: dict[tuple, list[tuple]] = {}
    for key in table.row_keys:
        groups.setdefault(tuple(key[i] for i in table.spec.compare_indices), []).append(key)
    return groups


def complete_groups(table: Table) -> dict[tuple, list[tuple]]:
    """The comparison groups whose every row is complete: a group still running would be
    judged against a partial field."""
    return {
        group: keys
        for group, keys in comparison_groups(table).items()
        if all(is_complete(table, k) for k in keys)
    }


def _costs(matched: list[dict], rows: Sequence[str], row_keys: Sequence[tuple]):
    """The cost of all matched runs, and of each group of rows (all row keys but the last) that
    has runs, in row order: what each part of a sweep cost."""
    if len(rows) < 2:
        return Cost.of(matched), {}
    by_group: dict[tuple, list[dict]] = {}
    for record in matched:
        by_group.setdefault(tuple(lookup(record, k, None) for k in rows[:-1]), []).append(record)
    order = list(dict.fromkeys(key[:-1] for key in row_keys))
    groups = {g: Cost.of(by_group[g]) for g in order if g in by_group}
    return Cost.of(matched), groups


def _sort_key(key: tuple) -> tuple:
    """Orders mixed-type row keys: numbers numerically, everything else as text."""
    return tuple(
        (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
        for v in key
    )


def _bold_cells(spec: TableSpec, row_keys: Sequence[tuple], cells: Mapping) -> frozenset:
    """Cells holding the highest mean, as displayed, of their column within their group."""
    idx = spec.compare_indices
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


def best_other(table: Table, key: tuple, j: int) -> tuple[Stats, str] | None:
    """(stats, last row key value) of the best mean in column j among the rows of `key`'s
    comparison group that are not judged themselves (the `verdict_for` rows); None if none has
    the column."""
    spec, idx = table.spec, table.spec.compare_indices
    others = [
        (table.cells[k, j], k[-1])
        for k in table.row_keys
        if [k[i] for i in idx] == [key[i] for i in idx]
        and k[-1] not in spec.verdict_for
        and (k, j) in table.cells
    ]
    return max(others, key=lambda other: other[0].mean) if others else None


def verdict(table: Table, key: tuple, j: int) -> str | None:
    """`key`'s cell j against `best_other`: 'win +d', 'tie +d' (|d| within the larger std) or
    'loss -d (<best row>)'."""
    mine, other = table.cells.get((key, j)), best_other(table, key, j)
    if mine is None or other is None:
        return None
    best, name = other
    diff = mine.mean - best.mean
    word = "tie" if abs(diff) <= max(mine.std, best.std) else "win" if diff > 0 else "loss"
    return f"{word} {diff:+.{table.spec.digits}f}" + ("" if word == "win" else f" ({name})")
