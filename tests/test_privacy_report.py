"""The privacy benchmark's plan (noise 0 is the plain run, unchanged) and its table."""

from experiments.configs import privacy
from fedjax_syn.privacy import benchmark, report
from fedjax_syn.runs import grid
from fedjax_syn.runs.config import run_id


def test_every_algorithm_at_every_noise_level_and_noise_zero_is_the_plain_run():
    config = privacy.get_config()
    planned = benchmark.runs(config)
    levels = len(config.noise_multipliers)
    assert len(planned) == sum(len(a) for a in privacy.ALGORITHMS.values()) * levels
    plain = [c for c in planned if "dp" not in c]
    assert len(plain) == len(planned) // levels
    base = grid.grid_configs(config.benchmarks["digits"])[0]
    assert run_id(base) in {run_id(c) for c in plain}
    noisy = [c for c in planned if "dp" in c and c.dataset == "cora"]
    assert {c.dp.noise_multiplier for c in noisy} == {0.5, 1.0, 2.0}
    assert all(c.dp.clip_norm == config.clip.cora.clip_norm for c in noisy)


def _record(algorithm: str, noise: float | None, epsilon: float | None) -> dict:
    return {
        "dataset": "digits",
        "algorithm": algorithm,
        "seed": 0,
        "protocol": {"num_clients": 5},
        "config": {"rounds": 20},
        "settings": ["seen", "global"],
        "best": {"seen": 0.9, "global": 0.8},
        "last": {"seen": 0.7, "global": None},
        "privacy": {
            "noise_multiplier": noise,
            "epsilon": epsilon,
            "loss_auc": 0.61,
            "dcr_median": 0.0,
        },
    }


def test_the_table_has_a_row_per_run_in_noise_order():
    records = [_record("fedavg", 2.0, 12.3), _record("fedavg", None, None)]
    text = report.to_markdown(records)
    rows = [line for line in text.splitlines() if line.startswith("| fedavg")]
    assert rows[0] == "| fedavg | none | inf | 0.90 / 0.70 | 0.80 / - | 0.61 | 0.00 |"
    assert rows[1].startswith("| fedavg | 2.0 | 12.3 |")
    assert report.max_membership_auc(records[0]["privacy"]) == 0.61
