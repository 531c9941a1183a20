"""Figures of local overfitting (FedLoG, Kim et al., ICLR 2025), drawn from ledger records only.

(a) accuracy vs Dirichlet alpha, one panel per setting: how breadth (Global, Missing Class, New
    Client) collapses as clients get more skewed, per algorithm;
(b) per-round curves: Seen against the settings a client has not seen, showing the gap open up as
    personalised models overfit their local data;
(c) best-validation minus last-round accuracy per algorithm and setting: how much is lost by not
    stopping at the best round.

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

from fedjax_syn.core.errors import UserError, check
from fedjax_syn.runs.ledger import (
    SETTING_LABELS,
    Stats,
    group_runs,
    lookup,
    seed_stats,
    write_atomic,
)

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
