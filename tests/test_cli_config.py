"""Command-line flags do what they say: a `--config.FIELD` override narrows the grid axis it sets.
No training runs here."""

import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from experiments.configs import digits_table
from fedjax_syn import experiment, sweep
from fedjax_syn.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = "experiments/configs/digits_table.py"


def _runs(config, overrides, grid=""):
    """The runs an entry point would start for this command line."""
    sweep.apply_command_line(config, overrides, grid)
    return sweep.grid_configs(config)


def test_config_flag_reports_only_the_fields_given_on_the_command_line():
    argv = ["main", f"--config={REPO / DIGITS}", "--config.algorithm=fedprox"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    assert config_flags.get_override_values(values["config"]) == {"algorithm": "fedprox"}


def test_algorithm_override_narrows_the_grid_to_that_algorithm():
    runs = _runs(digits_table.get_config(), {"algorithm": "fedprox"})
    assert {r.algorithm for r in runs} == {"fedprox"}
    assert sorted((r.alpha, r.seed) for r in runs) == [(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]


def test_seed_override_narrows_the_grid_to_that_seed():
    runs = _runs(digits_table.get_config(), {"seed": 1})
    assert {r.seed for r in runs} == {1}
    assert len(runs) == 8  # 4 algorithms x 2 alphas


def test_nested_override_narrows_a_nested_axis():
    config = experiment.default_config()
    config.grid = {"fedlog": {"beta": (0.1, 1.0)}, "seed": (0, 1)}
    runs = _runs(config, {"fedlog.beta": 0.1})
    assert [(r.fedlog.beta, r.seed) for r in runs] == [(0.1, 0), (0.1, 1)]


def test_override_and_grid_on_one_axis_is_an_error():
    with pytest.raises(UserError, match="and --grid both set seed"):
        _runs(digits_table.get_config(), {"seed": 1}, "seed=0,1")
