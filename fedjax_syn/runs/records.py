"""Reading results records: fields by dotted path, selection by filters, the best and last
round of a run's curves, and statistics over seeds.

The ledger (`ledger.py`) stores records; tables and plots select, group and average them through
these pure functions. Other readers still take fields by name themselves (the run summary in
`sweep.summary_line`, cost estimates in `progress`, the cost lines of `report.tables`, the gap plot
of `report.plots`, `report.reproduce`), so a change to the schema must be followed there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedjax_syn.core.errors import UserError, check

SETTING_LABELS = {
    "seen": "Seen",
    "global": "Global",
    "unseen_node": "Unseen Node",
    "missing_class": "Missing Class",
    "new_client": "New Client",
    "val": "Validation",
}


_MISSING = object()  # a path absent from a record
_RAISE = object()  # lookup default: raise KeyError


def lookup(record: Mapping[str, Any], dotted: str, default: Any = _RAISE) -> Any:
    """`record["a"]["b"]` for `dotted="a.b"`; `default` (or KeyError) when absent."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            if default is _RAISE:
                raise KeyError(dotted)
            return default
        value = value[part]
    return value


def select(records: Iterable[dict], **filters: Any) -> list[dict]:
    """Records whose fields equal the filters; keys may be dotted paths ("protocol.alpha").

    Pass dotted keys as `select(records, **{"protocol.alpha": 0.1})`. A list, tuple or set value
    matches any of its members. A record lacking a filtered field does not match.
    """
    return [r for r in records if all(_matches(r, k, w) for k, w in filters.items())]


def _matches(record: Mapping[str, Any], key: str, wanted: Any) -> bool:
    value = lookup(record, key, _MISSING)
    if value is _MISSING:
        return False
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return value in wanted
    return value == wanted


# Evaluation modes (core/interface.py). A record's curves name the personalised models' settings
# plainly ("seen") and the other modes' with a prefix ("local/seen"); its "best" and "last" are
# the personalised models', and "modes" holds the others' {"best", "last"}.
MODES = ("personalized", "local", "global")


def curve_name(mode: str, setting: str) -> str:
    return setting if mode == "personalized" else f"{mode}/{setting}"


def curves_of_mode(curves: Mapping[str, Sequence[float]], mode: str) -> dict:
    """One mode's evaluation curves {setting: values} (training curves left out)."""
    if mode == "personalized":
        return {k: v for k, v in curves.items() if "/" not in k and not k.startswith("train_")}
    prefix = f"{mode}/"
    return {k[len(prefix) :]: v for k, v in curves.items() if k.startswith(prefix)}


def summarize_curves(
    curves: Mapping[str, Sequence[float]], val_key: str = "val"
) -> tuple[dict, dict]:
    """(best, last) rows of per-round curves: best = highest validation, ties -> later round.

    Each row is {"round": i, <curve name>: value, ...} with i the index into the curves (map it
    through the record's eval_rounds). NaN validation counts as worst.
    """
    check(val_key in curves, f"curves lack the validation curve {val_key!r}; have {sorted(curves)}")
    lengths = {k: len(v) for k, v in curves.items()}
    check(
        len(set(lengths.values())) == 1 and lengths[val_key] > 0,
        f"curves must be non-empty and of equal length; got lengths {lengths}",
    )
    val = np.asarray(curves[val_key], dtype=np.float64)
    val = np.where(np.isnan(val), -np.inf, val)
    best = len(val) - 1 - int(np.argmax(val[::-1]))  # argmax returns the first maximum: flip

    def row(i: int) -> dict:
        return {"round": i, **{k: _to_python(v[i]) for k, v in curves.items()}}

    return row(best), row(len(val) - 1)


def _to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclasses.dataclass(frozen=True)
class Stats:
    """Mean and population standard deviation (ddof=0) of one metric over seeds."""

    mean: float
    std: float
    n: int


def seed_stats(values: Sequence[float]) -> Stats | None:
    """`Stats` of the values, or None when there are none."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return Stats(float(arr.mean()), float(arr.std(ddof=0)), len(arr))


def group_runs(
    records: Iterable[dict],
    keys: Sequence[str],
    optional: Sequence[str] = (),
) -> dict[tuple, list[dict]]:
    """Runs grouped by the values of `keys`, in first-seen order, for aggregation over seeds.

    A rerun with the same run_id replaces the earlier record. Two different runs with the same seed
    in one group mean the keys do not identify the runs (e.g. an unfiltered learning rate), which
    would silently mix configurations: that raises a `UserError`. `optional` keys follow `keys`
    and are None where a record lacks them (e.g. an option only some algorithms have).
    """
    latest: dict[Any, dict] = {}
    for i, record in enumerate(records):
        latest[record.get("run_id", ("no run_id", i))] = record
    groups: dict[tuple, list[dict]] = {}
    for record in latest.values():
        try:
            key = tuple(lookup(record, k) for k in keys)
            key += tuple(lookup(record, k, None) for k in optional)
        except KeyError as e:
            raise UserError(
                f"run {record.get('run_id')} lacks the field {e.args[0]!r} used to group rows"
            ) from None
        groups.setdefault(key, []).append(record)
    for key, runs in groups.items():
        seeds = [r.get("seed") for r in runs]
        dupes = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if dupes:
            ids = [r.get("run_id") for r in runs if r.get("seed") in dupes]
            ids = ids if len(ids) <= 4 else [*ids[:4], f"... {len(ids) - 4} more"]
            where = dict(zip((*keys, *optional), key, strict=True))
            raise UserError(
                f"{where} has several runs for seed(s) {dupes} (run_ids {ids}); "
                "add filters or row keys that tell them apart"
            )
    return groups
