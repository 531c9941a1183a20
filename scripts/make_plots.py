"""Draws the local-overfitting figures from the results ledger, as PNG and PDF.

Usage:
  python scripts/make_plots.py --ledger=runs/ledger.jsonl --kind=alpha --track=vision --out=figures/
  python scripts/make_plots.py --kind=curves --filters='{"dataset": "digits", "seed": 0}'
  python scripts/make_plots.py --kind=gap --track=graph --filters='{"protocol.num_clients": 3}'

Kinds: alpha (accuracy vs Dirichlet alpha, one panel per setting), curves (per-round accuracy of
each setting, one panel per algorithm), gap (best-validation minus last-round accuracy). Files are
OUT/<name>.png and OUT/<name>.pdf; the script prints where it wrote them. Bad flags or input print
one line `error: ...` and exit with status 2.
"""

import json
import pathlib

from absl import flags

from fedjax_syn import cli, plots
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.results import GRAPH_SETTINGS, VISION_SETTINGS, read_ledger, select

_LEDGER = flags.DEFINE_string("ledger", "runs/ledger.jsonl", "Results ledger (JSON lines).")
_KIND = flags.DEFINE_enum("kind", "alpha", ["alpha", "curves", "gap"], "Which figure.")
_TRACK = flags.DEFINE_enum("track", "vision", ["vision", "graph"], "Track: selects runs, settings.")
_FILTERS = flags.DEFINE_string(
    "filters", "{}", 'Extra ledger filters as JSON, dotted keys allowed: {"dataset": "digits"}.'
)
_SETTINGS = flags.DEFINE_list("settings", None, "Settings to plot (default: the track's).")
_METRIC = flags.DEFINE_enum("metric", "best", ["best", "last"], "Round reported by --kind=alpha.")
_OUT = flags.DEFINE_string("out", "figures", "Output folder.")
_NAME = flags.DEFINE_string("name", None, "File name stem (default: <track>_<kind>).")


def _filters() -> dict:
    try:
        filters = json.loads(_FILTERS.value)
    except json.JSONDecodeError as e:
        raise UserError(f"--filters is not valid JSON: {e}") from None
    check(isinstance(filters, dict), f"--filters must be a JSON object, got {_FILTERS.value}")
    return {"track": _TRACK.value, **filters}


def main(argv: list[str]) -> None:
    del argv
    default = VISION_SETTINGS if _TRACK.value == "vision" else GRAPH_SETTINGS
    settings = tuple(_SETTINGS.value or default)
    stem = _NAME.value or f"{_TRACK.value}_{_KIND.value}"
    paths = [pathlib.Path(_OUT.value) / f"{stem}.{ext}" for ext in ("png", "pdf")]
    try:
        records = select(read_ledger(_LEDGER.value), **_filters())
        if _KIND.value == "alpha":
            plots.plot_accuracy_vs_alpha(records, settings, metric=_METRIC.value, paths=paths)
        elif _KIND.value == "curves":
            curve_settings = settings if _SETTINGS.value else settings[:3]
            plots.plot_round_curves(records, curve_settings, paths=paths)
        else:
            plots.plot_best_last_gap(records, settings, paths=paths)
    except UserError as e:
        cli.fail(str(e))
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
