"""Figures of local overfitting (FedLoG, Kim et al., ICLR 2025), drawn from ledger records only.

(a) accuracy vs Dirichlet alpha, one panel per setting: how breadth (Global, Missing Class, New
    Client) collapses as clients get more skewed, per algorithm;
(b) per-round curves: Seen against the settings a client has not seen, showing the gap open up as
    personalised models overfit their local data;
(c) best-validation minus last-round accuracy per algorithm and setting: how much is lost by not
    stopping at the best round;
(d) a comparison table's verdict: the judged rows (FedLoG) against the best other row of each
    complete cell, one panel per scoring and setting.

Figures are `matplotlib.figure.Figure`s (no pyplot, no global backend state), so that notebooks and
headless jobs alike can import this module. Every function returns the Figure and saves it
atomically to any paths it is given (the format follows each path's suffix).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fedjax_syn.core.errors import UserError, check
from fedjax_syn.report.render import fmt_value, row_label
from fedjax_syn.report.specs import scoring_of
from fedjax_syn.report.tables import Table, best_other, complete_groups, verdict
from fedjax_syn.runs.ledger import write_atomic
from fedjax_syn.runs.records import SETTING_LABELS, Stats, group_runs, lookup, seed_stats

_SETTING_STYLE = {
    "seen": ("tab:blue", "-"),
    "global": ("tab:orange", "--"),
    "unseen_node": ("tab:orange", "--"),
    "missing_class": ("tab:red", "--"),
    "new_client": ("tab:green", ":"),
}


def save_figure(fig: Figure, paths: Iterable[str | os.PathLike]) -> list[str]:
    """Saves `fig` to each path atomically; returns the paths written."""
    written = []
    for path in paths:
        fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
        check(fmt in ("png", "pdf", "svg"), f"figure path {path} must end in .png, .pdf or .svg")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        write_atomic(path, buffer.getvalue())
        written.append(os.fspath(path))
    return written


def _label(setting: str) -> str:
    return SETTING_LABELS.get(setting, setting)


def _panels(n: int, width: float = 4.0, height: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


def _stats(values: Sequence, scale: float) -> Stats | None:
    """Mean and population std over the seeds that have a value, scaled."""
    return seed_stats([v * scale for v in values if v is not None])


def _gap(record: dict, setting: str) -> float | None:
    best, last = record["best"].get(setting), record["last"].get(setting)
    return None if best is None or last is None else best - last


def plot_accuracy_vs_alpha(
    records: Sequence[dict],
    settings: Sequence[str],
    metric: str = "best",
    alpha_key: str = "protocol.alpha",
    series_key: str = "algorithm",
    scale: float = 100.0,
    paths: Iterable[str | os.PathLike] = (),
) -> Figure:
    """Accuracy vs alpha (log x), one panel per setting, mean ± population std band per series."""
    check(len(records) > 0, "no runs to plot: the ledger query matched nothing")
    groups = group_runs(records, (series_key, alpha_key))
    series = sorted({k[0] for k in groups}, key=str)
    all_alphas = sorted({float(a) for _, a in groups})
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings, strict=True):
        for name in series:
            alphas = sorted(a for s, a in groups if s == name)
            path = f"{metric}.{setting}"
            stats = [
                _stats([lookup(r, path, None) for r in groups[name, a]], scale) for a in alphas
            ]
            points = [(a, s) for a, s in zip(alphas, stats, strict=True) if s is not None]
            if not points:
                continue
            x = np.array([a for a, _ in points], dtype=float)
            mean = np.array([s.mean for _, s in points])
            std = np.array([s.std for _, s in points])
            (line,) = ax.plot(x, mean, marker="o", label=str(name))
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xscale("log")
        ax.set_xticks(all_alphas, [f"{a:g}" for a in all_alphas])
        ax.minorticks_off()
        ax.set_title(_label(setting))
        ax.set_xlabel("Dirichlet alpha (log scale; smaller = more skewed)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"accuracy (%), {metric} round")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6))
    fig.suptitle(f"Accuracy vs heterogeneity ({metric} round; band = ± population std over seeds)")
    save_figure(fig, paths)
    return fig


def plot_round_curves(
    records: Sequence[dict],
    settings: Sequence[str] = ("seen", "global", "missing_class"),
    series_key: str = "algorithm",
    scale: float = 100.0,
    paths: Iterable[str | os.PathLike] = (),
) -> Figure:
    """Per-round accuracy of each setting, one panel per series, mean ± std band over seeds.

    The first setting (Seen) is the reference; the legend gives each other setting's gap to it at
    the last round, and dotted vertical lines mark each run's best-validation round.
    """
    check(len(records) > 0, "no runs to plot: the ledger query matched nothing")
    groups = group_runs(records, (series_key,))
    fig, axes = _panels(len(groups), width=4.5, height=3.4)
    for ax, ((name,), runs) in zip(
        axes, sorted(groups.items(), key=lambda kv: str(kv[0])), strict=True
    ):
        lengths = {len(r["curves"][settings[0]]) for r in runs}
        if len(lengths) != 1:
            raise UserError(
                f"runs of {series_key}={name} have curves of different lengths {lengths}"
            )
        rounds = runs[0].get("eval_rounds")
        x = np.asarray(rounds if rounds is not None else np.arange(1, lengths.pop() + 1), float)
        finals = {}
        for setting in settings:
            curves = np.array(
                [[np.nan if v is None else v * scale for v in r["curves"][setting]] for r in runs]
            )
            with warnings.catch_warnings():  # a round where no run has the setting stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            finals[setting] = mean[-1]
            color, style = _SETTING_STYLE.get(setting, (None, "-"))
            gap = (
                ""
                if setting == settings[0]
                else f" (Δ at end {mean[-1] - finals[settings[0]]:+.1f})"
            )
            ax.plot(x, mean, color=color, linestyle=style, label=_label(setting) + gap)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        for r in runs:
            if "best" in r:
                ax.axvline(r["best"]["round"], color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{name} (n={len(runs)})")
        ax.set_xlabel("round (dotted: best-validation round)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    axes[0].set_ylabel("accuracy (%)")
    fig.suptitle(f"Local overfitting: {_label(settings[0])} vs unseen settings over rounds")
    save_figure(fig, paths)
    return fig


def plot_best_last_gap(
    records: Sequence[dict],
    settings: Sequence[str],
    series_key: str = "algorithm",
    scale: float = 100.0,
    paths: Iterable[str | os.PathLike] = (),
) -> Figure:
    """Grouped bars of best-validation minus last-round accuracy, mean ± population std."""
    check(len(records) > 0, "no runs to plot: the ledger query matched nothing")
    groups = group_runs(records, (series_key,))
    names = sorted((k[0] for k in groups), key=str)
    fig, (ax,) = _panels(1, max(5.0, 1.6 * len(settings) + 0.4 * len(names)), 3.6)
    width = 0.8 / len(names)
    x = np.arange(len(settings))
    for i, name in enumerate(names):
        stats = [_stats([_gap(r, s) for r in groups[(name,)]], scale) for s in settings]
        means = [np.nan if s is None else s.mean for s in stats]
        stds = [np.nan if s is None else s.std for s in stats]
        offset = (i - (len(names) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=str(name))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [_label(s) for s in settings])
    ax.set_ylabel("best-val − last round (points)")
    ax.set_title("Accuracy lost by training to the last round (> 0: the last round is worse)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, paths)
    return fig


# How a judged row's marker shows its verdict against the best other row of its cell.
_VERDICT_MARKERS = {"win": "^", "tie": "o", "loss": "v"}


def _columns_by_scoring(table: Table) -> dict[tuple[str, str, str], int]:
    """(mode, round, setting) -> column index of an accuracy table (`specs.scoring_of`)."""
    scorings = ((scoring_of(c.path), j) for j, c in enumerate(table.spec.columns))
    return {scoring: j for scoring, j in scorings if scoring is not None}


def _cell_label(paths: Sequence[str], values: tuple) -> str:
    """A name is shown as it is, a number with its row label: "cora / K=3"."""
    return " / ".join(
        str(v) if isinstance(v, str) else f"{row_label(p)}={fmt_value(v)}"
        for p, v in zip(paths, values, strict=True)
    )


def plot_verdict(
    table: Table,
    modes: Sequence[str] | None = None,
    metric: str = "best",
    paths: Iterable[str | os.PathLike] = (),
) -> Figure:
    """The judged rows (the table's `verdict_for`, e.g. FedLoG's two presets) against the best
    other row of each complete cell: one panel per evaluation mode (rows) and setting (columns),
    mean ± population std over seeds; the marker's shape is the table's verdict for that column
    (win or loss beyond the larger std, tie otherwise) and the best other row is named."""
    spec = table.spec
    check(
        bool(spec.verdict_for),
        f"table spec {spec.name!r} judges no rows (its verdict_for is empty); a verdict figure "
        "needs a spec that names them, e.g. experiments/configs/comparison.py",
    )
    index = _columns_by_scoring(table)
    scorings = {(m, r) for m, r, _ in index}
    modes = list(dict.fromkeys(m for m, _, _ in index)) if modes is None else list(modes)
    for mode in modes:
        check(
            (mode, metric) in scorings,
            f"table {spec.name!r} has no {metric!r} columns scored {mode!r}; "
            f"it has (mode, round) {sorted(scorings)}",
        )
    cells = list(complete_groups(table).items())
    check(
        len(cells) > 0,
        f"table {spec.name!r} has no complete cell yet (every row with all its runs) to judge",
    )
    settings = list(dict.fromkeys(s for m, r, s in index if m in modes and r == metric))
    fig = Figure(figsize=(3.2 * len(settings), 2.9 * len(modes) + 0.8), layout="constrained")
    axes = fig.subplots(len(modes), len(settings), squeeze=False, sharex=True)
    judged = list(spec.verdict_for)
    width = 0.6 / len(judged)
    compare_paths = spec.compare_keys
    for (mode, setting), ax in zip(
        [(m, s) for m in modes for s in settings], axes.flat, strict=True
    ):
        j = index[mode, metric, setting]
        for x, (_, keys) in enumerate(cells):
            other = best_other(table, keys[0], j)
            if other is not None:
                best, name = other
                ax.errorbar(x + 0.35, best.mean, best.std, fmt="s", color="black", capsize=2)
                ax.annotate(
                    str(name),
                    (x + 0.35, best.mean),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize="x-small",
                    rotation=90,
                    va="bottom",
                )
            for i, row in enumerate(judged):
                key = next((k for k in keys if k[-1] == row), None)
                stats = table.cells.get((key, j))
                if stats is None:
                    continue
                word = (verdict(table, key, j) or "tie").split(" ")[0]
                ax.errorbar(
                    x - 0.3 + (i + 0.5) * width,
                    stats.mean,
                    stats.std,
                    fmt=_VERDICT_MARKERS[word],
                    color=f"C{i}",
                    capsize=2,
                    label=str(row) if x == 0 else None,
                )
        ax.set_title(f"{_label(setting)}, scored {mode}", fontsize="medium")
        ax.set_xticks(
            range(len(cells)),
            [_cell_label(compare_paths, cell) for cell, _ in cells],
            rotation=60,
            ha="right",
            fontsize="small",
        )
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"accuracy (%), {metric} round")
    handles = [
        *(
            Line2D([], [], color=f"C{i}", marker="o", linestyle="", label=str(row))
            for i, row in enumerate(judged)
        ),
        Line2D([], [], color="black", marker="s", linestyle="", label="best other row (named)"),
        *(
            Line2D([], [], color="gray", marker=m, linestyle="", label=word)
            for word, m in _VERDICT_MARKERS.items()
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    fig.suptitle(
        f"{spec.title}: verdict per cell ({metric} round; bars = ± population std over seeds; "
        "win or loss = beyond the larger std)",
        fontsize="medium",
    )
    save_figure(fig, paths)
    return fig
