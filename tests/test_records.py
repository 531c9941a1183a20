"""Reading records: selection by dotted filters, the best and last round of curves, grouping runs
over seeds and their statistics."""

import numpy as np
import pytest

import fedjax_syn.runs.records as records_lib
from fedjax_syn.core.errors import UserError


def test_select_top_level_dotted_and_any_of():
    records = [
        {"algorithm": "fedavg", "protocol": {"alpha": 0.1}},
        {"algorithm": "fedlog", "protocol": {"alpha": 0.1}},
        {"algorithm": "fedlog", "protocol": {"alpha": 1.0}},
        {"algorithm": "fedlog"},
    ]
    assert records_lib.select(records, algorithm="fedlog") == records[1:]
    assert records_lib.select(records, **{"protocol.alpha": 0.1}) == records[:2]
    assert records_lib.select(records, algorithm="fedlog", **{"protocol.alpha": [1.0, 10.0]}) == [
        records[2]
    ]
    assert records_lib.select(records) == records


def test_summarize_curves_ties_go_to_the_later_round():
    curves = {"val": [0.2, 0.5, 0.4, 0.5, 0.3], "seen": [0.1, 0.6, 0.7, 0.8, 0.9]}
    best, last = records_lib.summarize_curves(curves)
    assert best == {"round": 3, "val": 0.5, "seen": 0.8}
    assert last == {"round": 4, "val": 0.3, "seen": 0.9}


def test_summarize_curves_matches_numpy_and_treats_nan_as_worst():
    rng = np.random.default_rng(0)
    val = rng.uniform(size=20).round(1)  # rounding makes ties likely
    val[[3, 7]] = np.nan
    best, _ = records_lib.summarize_curves({"val": val.tolist(), "seen": list(range(20))})
    expected = max(i for i in range(20) if val[i] == np.nanmax(val))
    assert best["round"] == expected and best["seen"] == expected


def test_summarize_curves_rejects_ragged_or_missing_curves():
    with pytest.raises(UserError, match="equal length"):
        records_lib.summarize_curves({"val": [0.1, 0.2], "seen": [0.1]})
    with pytest.raises(UserError, match="lack the validation curve"):
        records_lib.summarize_curves({"seen": [0.1]})


def test_group_runs_replaces_reruns_and_refuses_mixed_configs():
    a0 = {"run_id": "x", "algorithm": "a", "seed": 0, "v": 1}
    a0_rerun = {"run_id": "x", "algorithm": "a", "seed": 0, "v": 2}
    a1 = {"run_id": "y", "algorithm": "a", "seed": 1, "v": 3}
    groups = records_lib.group_runs([a0, a1, a0_rerun], ["algorithm"])
    assert [r["v"] for r in groups["a",]] == [2, 3]
    other_lr = {"run_id": "z", "algorithm": "a", "seed": 1, "v": 4}
    with pytest.raises(UserError, match=r"several runs for seed\(s\) \[1\]"):
        records_lib.group_runs([a0, a1, other_lr], ["algorithm"])
    with pytest.raises(UserError, match=r"lacks the field 'protocol\.alpha'"):
        records_lib.group_runs([a0], ["protocol.alpha"])


def test_seed_stats_is_population_std():
    stats = records_lib.seed_stats([0.5, 0.7, 0.9])
    assert stats.n == 3
    assert stats.mean == pytest.approx(np.mean([0.5, 0.7, 0.9]))
    assert stats.std == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=0))
    assert records_lib.seed_stats([]) is None
