"""A filled `tables.Table` written out: GitHub Markdown or a booktabs LaTeX float, each with its
caption, the runs still missing, the values chosen on validation, the verdict lines and the query
that produced it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from fedjax_syn.report.specs import Column, scoring_of
from fedjax_syn.report.tables import (
    Table,
    absent_tuned_runs,
    comparison_groups,
    complete_groups,
    verdict,
)

ROW_LABELS = {"protocol.num_clients": "K", "protocol.alpha": "alpha", "ipc": "IPC"}


def fmt_value(value: Any) -> str:
    """A row key value as shown: floats without trailing zeros (0.1, 1), the rest as text."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def row_label(path: str) -> str:
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
    return ", ".join(f"{n}={fmt_value(v)}" for n, v in zip(names, values, strict=True))


def _column_label(column: Column) -> str:
    """A column's Markdown header: its group, with its sub-header in parentheses."""
    return f"{column.group} ({column.sub})" if column.sub else column.group


def _scoring_mode(column: Column) -> str:
    """The evaluation mode a column is scored under (`specs.scoring_of`: read from its path,
    since a sub-header may name the round only, or nothing); "" for a column of no mode."""
    scoring = scoring_of(column.path)
    return scoring[0] if scoring else ""


def _verdict_summary(table: Table, verdicts: dict[tuple, list[str | None]]) -> list[str]:
    """Per judged row, the columns it wins, ties and loses under each scoring (local, global,
    personalized; one "all" count in a table of one scoring), and the columns it loses: the
    verdict table folded into one line a row."""
    spec = table.spec
    modes = list(dict.fromkeys(_scoring_mode(c) for c in spec.columns))
    heads = [row_label(r) for r in spec.rows]
    heads += [f"{m if len(modes) > 1 else 'all'}: won / tied / lost" for m in modes] + ["lost"]
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
            counts[_scoring_mode(column)][word] += 1
            if word == "loss":
                lost.append(f"{_column_label(column)} {rest}")
        cells = [
            f"{c['win']} / {c['tie']} / {c['loss']}" if sum(c.values()) else "—"
            for c in counts.values()
        ]
        lines.append(_md_row([fmt_value(v) for v in key] + cells + ["; ".join(lost) or "—"]))
    return [*lines, ""]


def _verdict_lines(table: Table) -> list[str]:
    """A Markdown table of `verdict` for every judged row and column, after its summary."""
    spec, complete = table.spec, complete_groups(table)
    judged = [k for keys in complete.values() for k in keys if k[-1] in spec.verdict_for]
    pending = [group for group in comparison_groups(table) if group not in complete]
    waiting = [
        "Not judged until every row of the cell has all its runs (`Missing runs`): "
        + "; ".join(_assignments(spec.compare_keys, group) for group in pending)
        + ".",
        "",
    ]
    if not judged:
        return waiting if pending and spec.verdict_for else []
    verdicts = {key: [verdict(table, key, j) for j in range(len(spec.columns))] for key in judged}
    heads = [row_label(r) for r in spec.rows] + [_column_label(c) for c in spec.columns]
    lines = [
        *(waiting if pending else []),
        *_verdict_summary(table, verdicts),
        f"Verdict for {', '.join(spec.verdict_for)} against the best other row (win or loss: "
        "the difference exceeds the larger of the two stds; tie otherwise):",
        "",
        _md_row(heads),
        _md_row(["---"] * len(heads)),
    ]
    for key, row in verdicts.items():
        lines.append(_md_row([fmt_value(v) for v in key] + [text or "—" for text in row]))
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
        where = _assignments(spec.rows, key)
        missing += _absent_runs(table, key, where)
        picks = []
        for (k, path), values in table.selected.items():
            if k != key:
                continue
            mode = path.removesuffix("best.val").strip(".").removeprefix("modes.")
            picks.append(f"{mode or 'personalized'}: {_named_values(spec.select_on, values)}")
        if picks:
            chosen.append(f"{where}: {'; '.join(picks)}")
    notes = [("Missing runs", missing), ("Selected on validation", chosen)]
    return [(heading, lines) for heading, lines in notes if lines]


def _absent_runs(table: Table, key: tuple, where: str) -> list[str]:
    """The runs a row lacks: per tuned value where the row is tuned ("..., beta=0.01: seed(s)
    1, 2"), else for the row."""
    seed_text = lambda seeds: f"seed(s) {', '.join(map(str, seeds))}"
    if key in table.tuned_seeds:
        return [
            f"{', '.join(filter(None, [where, _named_values(table.spec.select_on, values)]))}: "
            + seed_text(seeds)
            for values, seeds in absent_tuned_runs(table, key)
        ]
    found, expected = table.seeds_found[key], table.spec.seeds
    absent = [s for s in expected or () if s not in found]
    if absent:
        return [f"{where}: {seed_text(absent)}"]
    return [f"{where}: all seeds"] if expected is None and not found else []


def _named_values(paths: Sequence[str], values: Sequence) -> str:
    """Tuned values by their labels, skipping the paths a row lacks (a row has only its own
    options): "beta=0.1"."""
    named = zip(paths, values, strict=True)
    return ", ".join(f"{row_label(p)}={fmt_value(v)}" for p, v in named if v is not None)


def _reference_cells(table: Table, key: tuple) -> list[str]:
    """The row's published figure (a list of one cell; empty when the spec has no reference)."""
    reference = table.spec.reference
    if reference is None:
        return []
    figure = reference.lookup(table.spec.rows, key)
    return ["—" if figure is None else f"{figure:.1f}"]


def _caption(table: Table) -> str:
    spec = table.spec
    within = [row_label(k) for k in spec.compare_keys]
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
    headers = [row_label(r) for r in spec.rows] + ["n"]
    headers += [_column_label(c) for c in spec.columns]
    headers += [spec.reference.label] if spec.reference else []
    align = ["---"] * len(spec.rows) + ["---:"] * (len(headers) - len(spec.rows))
    lines = [f"**{_md_escape(spec.title)}**", "", _md_row(headers), _md_row(align)]
    for key in table.row_keys:
        cells = [fmt_value(v) for v in key] + [_n_text(table, key)]
        for j in range(len(spec.columns)):
            text = _cell_text(table, key, j)
            cells.append(f"**{text}**" if (key, j) in table.bold else text)
        cells += _reference_cells(table, key)
        lines.append(_md_row([_md_escape(c) for c in cells]))
    lines += ["", _md_escape(_caption(table))]
    if spec.cost:
        cost = table.cost
        cpu = (
            f"; {cost.cpu_hours:.1f} CPU hours over the {cost.cpu_runs} runs that measure it"
            if cost.cpu_runs
            else ""
        )
        lines += [
            "",
            f"Cost: {cost.runs} runs, {cost.wall_hours:.1f} hours of run wall time summed{cpu}.",
        ]
        if table.group_cost:
            labels = ", ".join(row_label(r) for r in spec.rows[:-1])
            parts = [
                f"{', '.join(map(fmt_value, group))}: {c.runs} runs, {c.wall_hours:.1f} h"
                + (f" ({c.cpu_hours:.1f} CPU h over {c.cpu_runs})" if c.cpu_runs else "")
                for group, c in table.group_cost.items()
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
    row_labels = [latex_escape(row_label(r)) for r in spec.rows] + ["$n$"]
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
    idx = spec.compare_indices
    previous = None
    for key in table.row_keys:
        group = tuple(key[i] for i in idx)
        if previous is not None and group != previous:
            lines.append(r"\midrule")
        previous = group
        cells = [latex_escape(fmt_value(v)) for v in key] + [_n_text(table, key)]
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
