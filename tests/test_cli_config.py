"""Command-line flags do what they say: a `--config.FIELD` override narrows the grid axis it sets,
and every run of the grid is validated before the first one starts. No training runs here."""

import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments.configs import digits_table, fedlog_ablations, graph_seen
from fedjax_syn.core.errors import UserError
from fedjax_syn.runs import validate
from fedjax_syn.runs.grid import apply_command_line

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = "experiments/configs/digits_table.py"


def _runs(config, overrides, grid=""):
    """The runs an entry point would start for this command line."""
    apply_command_line(config, overrides, grid)
    return validate.validate_config(config)


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
    assert len(runs) == 10  # 5 algorithms x 2 alphas


def test_nested_override_narrows_a_nested_axis():
    config = graph_seen.get_config()
    config.grid = {"algorithm": ("fedlog",), "fedlog": {"beta": (0.1, 1.0)}, "seed": (0, 1)}
    config.dataset = "cora"
    runs = _runs(config, {"fedlog.beta": 0.1})
    assert [(r.fedlog.beta, r.seed) for r in runs] == [(0.1, 0), (0.1, 1)]


def test_an_override_a_swept_variant_would_undo_is_refused():
    config = fedlog_ablations.get_config()
    config.fedlog.beta = 0.1  # what --config.fedlog.beta=0.1 sets before the grid is applied
    with pytest.raises(UserError, match=r"--config.fedlog.beta is also set by variant 'beta_0p1'"):
        _runs(config.copy_and_resolve_references(), {"fedlog.beta": 0.1})
    # Without such a variant among the runs, the override holds at every point.
    runs = _runs(config, {"fedlog.beta": 0.1}, grid="variant=default,s_5;seed=0")
    assert [(r.variant, r.fedlog.beta) for r in runs] == [("default", 0.1), ("s_5", 0.1)]


def test_options_of_other_algorithms_do_not_multiply_runs():
    config = graph_seen.get_config()
    config.grid = {"algorithm": ("fedavg", "fedlog"), "fedlog": {"beta": (0.1, 1.0)}, "seed": (0,)}
    config.dataset = "cora"
    runs = _runs(config, {})
    assert [(r.algorithm, r.fedlog.get("beta")) for r in runs] == [
        ("fedavg", None),
        ("fedlog", 0.1),
        ("fedlog", 1.0),
    ]


def test_sweeping_one_more_algorithms_option_leaves_the_other_runs_ids_alone():
    from fedjax_syn.runs.config import run_id

    def ids(grid):
        config = graph_seen.get_config()
        config.dataset = "cora"
        config.grid = grid
        return {(r.algorithm, r.get("moon", {}).get("mu")): run_id(r) for r in _runs(config, {})}

    base = {"algorithm": ("fedavg", "fedlog", "moon"), "fedlog": {"beta": (0.1,)}, "seed": (0,)}
    before = ids(base)
    after = ids({**base, "moon": {"mu": (0.1, 1.0)}})
    assert after[("fedavg", None)] == before[("fedavg", None)]
    assert after[("fedlog", None)] == before[("fedlog", None)]
    assert {k for k in after if k[0] == "moon"} == {("moon", 0.1), ("moon", 1.0)}


def test_override_and_grid_on_one_axis_is_an_error():
    with pytest.raises(UserError, match="and --grid both set seed"):
        _runs(digits_table.get_config(), {"seed": 1}, "seed=0,1")


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ("rounds=None", "rounds must be an integer, got None"),
        ("batch_size=True", "batch_size must be an integer, got True"),
        ("alpha=0.5,0", "alpha must be a finite number > 0, got 0"),
        ("dataset=nope", "unknown vision dataset 'nope'"),
        ("dataset=cora", "dataset 'cora' is a graph dataset but this config is for the vision"),
        ("model=sage", "unknown model 'sage'"),
        ("algorithm=fedavg,fedlog", "algorithm 'fedlog' does not run on the vision track"),
    ],
)
def test_every_grid_point_is_validated(grid, fragment):
    with pytest.raises(UserError, match=fragment):
        _runs(digits_table.get_config(), {}, grid)


def test_a_bad_client_chunk_reads_the_same_before_and_when_a_run_starts():
    from fedjax_syn.runs.config import engine_config

    config = digits_table.get_config()
    config.client_chunk = -2
    message = r"client_chunk must be >= 1, 0 \(all clients vmapped\) or -1 \(measured\), got -2"
    with pytest.raises(UserError, match=message):
        _runs(config, {})
    with pytest.raises(UserError, match=message):
        engine_config(config)


def test_a_dataset_of_the_other_track_names_a_config_that_takes_it():
    from experiments.configs import graph_seen, vision_alpha_sweep

    with pytest.raises(UserError, match=r"configs/vision_alpha_sweep\.py --config\.dataset=mnist"):
        _runs(graph_seen.get_config(), {}, "dataset=mnist")
    with pytest.raises(UserError, match=r"configs/graph_seen\.py --config\.dataset=cora"):
        _runs(digits_table.get_config(), {}, "dataset=cora")
    for module, dataset in ((graph_seen, "cora"), (vision_alpha_sweep, "mnist")):
        config = module.get_config()  # the configs the errors name take those datasets
        config.dataset = dataset  # what --config.dataset sets, then narrows the grid to
        assert {r.dataset for r in _runs(config, {"dataset": dataset})} == {dataset}


def test_algorithm_options_of_every_grid_point_are_validated():
    """A bad FedLoG option in the last point of a grid is refused before the first run."""
    from experiments.configs import graph_seen

    config = graph_seen.get_config()
    assert len(_runs(config, {}, "algorithm=fedavg,fedlog;fedlog.beta=0.1,1.0")) > 1
    with pytest.raises(UserError, match=r"fedlog beta must be >= 0, got -1\.0"):
        _runs(graph_seen.get_config(), {}, "algorithm=fedavg,fedlog;fedlog.beta=0.1,-1.0")
    with pytest.raises(UserError, match="unknown fedlog_vision option"):
        _runs(digits_table.get_config(), {}, "algorithm=fedlog_vision;fedlog.gamma=2.0")


def test_condensation_runs_are_validated_with_their_own_fields():
    from experiments.configs import condense_table

    assert len(_runs(condense_table.get_config(), {"method": "dm", "ipc": 1})) == 3 * 2 * 3
    runs = _runs(condense_table.get_config(), {}, "method=gm;dsa=true,False;ipc=1;seed=0")
    assert sorted(r.dsa for r in runs) == [False] * 3 + [True] * 3  # mnist, mnist_5k, fashion
    with pytest.raises(UserError, match="ipc must be >= 1, got 0"):
        _runs(condense_table.get_config(), {"ipc": 0})


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"test_size": -1}, "test_size must be >= 0, got -1"),
        ({"depth": 0}, "depth must be >= 1, got 0"),
        ({"init": "zeros"}, "unknown synthetic init 'zeros'"),
        ({"batch_real": 0}, "batch_real must be >= 1, got 0"),
        ({"method": "gm", "ipc": 5}, "no default outer/inner loop for ipc=5"),
        ({"method": "gm", "outer_loop": -1}, "need outer_loop >= 1, inner_loop >= 0: -1"),
        ({"class_batching": "fast"}, "unknown class_batching 'fast'"),
    ],
)
def test_condensation_options_are_validated_before_any_data_is_loaded(
    fields, fragment, monkeypatch
):
    """As `--config.FIELD=v` sets them: on the config, narrowing any axis they sweep."""
    from experiments.configs import condense_table
    from fedjax_syn.data import vision

    def no_data(*args, **kwargs):
        raise AssertionError("validation loaded data")

    monkeypatch.setattr(vision, "load_vision", no_data)
    config = condense_table.get_config()
    config.update(fields)
    with pytest.raises(UserError, match=fragment):
        _runs(config, fields)


@pytest.mark.parametrize(
    "command, fragment",
    [
        (
            ["-m", "experiments.main", "--config.alpha=-1"],
            "alpha must be a finite number > 0, got -1.0",
        ),
        (["-m", "experiments.main", "--config.algorithm=fedfoo"], "'fedfoo'"),
        (["-m", "experiments.main", "--config.rounds=abc"], "'abc'"),
        (  # the default config: parsed when the flag is defined
            ["-m", "experiments.main", "--config.fedlog.beta=0.1"],
            "(--config.fedlog.beta=0.1: ",
        ),
        (  # a named config: parsed with the other flags
            [
                "-m",
                "experiments.main",
                "--config=experiments/configs/comparison.py",
                "--config.fedlog.beta=0.1",
            ],
            "--grid='fedlog.beta=VALUE'",
        ),
        (["-m", "experiments.main", "--mode=reproduce", "--table=nope"], "unknown table 'nope'"),
        (["-m", "experiments.main", "--max_batch=-1"], "--max_batch must be >= 0 (0: no limit)"),
        (
            ["-m", "experiments.main", "--checkpoint_every=-1"],
            "--checkpoint_every must be >= 0 (0: never), got -1",
        ),
        (
            ["-m", "experiments.main", "--compilation_cache_max_gb=0"],
            "--compilation_cache_max_gb must be > 0, got 0.0",
        ),
    ],
)
def test_bad_flag_is_one_line_and_exit_2_before_any_run(command, fragment, tmp_path):
    done = subprocess.run(
        [sys.executable, *command, "--noprogress", f"--ledger={tmp_path / 'ledger.jsonl'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], done.stderr
    assert not (tmp_path / "ledger.jsonl").exists()


def test_a_bad_table_fails_before_any_run(tmp_path):
    """The table a config names is built before its sweep: a typo costs seconds, not the sweep."""
    config = tmp_path / "typo.py"
    config.write_text(
        "from experiments.configs.digits_table import get_config as digits\n\n\n"
        "def get_config():\n"
        "    config = digits()\n"
        "    config.table.metric = 'bset'\n"
        "    return config\n"
    )
    ledger = tmp_path / "ledger.jsonl"
    command = ["-m", "experiments.main", f"--config={config}", f"--ledger={ledger}"]
    done = subprocess.run(
        [sys.executable, *command, "--noprogress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "unknown metric set 'bset'" in done.stderr, done.stderr
    assert not ledger.exists()


def test_grid_sets_options_of_algorithms_whose_group_the_config_lacks():
    runs = _runs(digits_table.get_config(), {}, "algorithm=moon;moon.mu=0.5,5.0;seed=0;alpha=0.1")
    assert [r.moon.mu for r in runs] == [0.5, 5.0]
    with pytest.raises(UserError, match="unknown moon option"):
        _runs(digits_table.get_config(), {}, "algorithm=moon;moon.nu=1.0;seed=0;alpha=0.1")


def test_cache_entries_written_without_a_bound_are_dated_so_bounded_writes_work(tmp_path):
    """JAX's bounded cache (what the entry points set) reads an access time beside every entry
    to evict; entries an unbounded cache wrote have none, and every bounded write then fails.
    The entry points date them by their modification time, so the oldest are evicted first."""
    from jax._src import lru_cache  # JAX's cache itself: the failure is its, not ours

    old, kept = tmp_path / "old-cache", tmp_path / "kept-cache"
    old.write_bytes(b"o" * 100)
    os.utime(old, ns=(1, 5_000_000_000))
    kept.write_bytes(b"k" * 100)
    (tmp_path / "kept-atime").write_bytes((7).to_bytes(8, "little"))
    bounded = lru_cache.LRUCache(str(tmp_path), max_size=250)
    with pytest.raises(FileNotFoundError):
        bounded.put("new", b"n" * 100)
    assert cli.adopt_unbounded_entries(tmp_path) == 1
    assert int.from_bytes((tmp_path / "old-atime").read_bytes(), "little") == 5_000_000_000
    assert int.from_bytes((tmp_path / "kept-atime").read_bytes(), "little") == 7
    bounded.put("new", b"n" * 100)  # over the bound: evicts the least recent, "kept"
    assert sorted(p.name for p in tmp_path.glob("*-cache")) == ["new-cache", "old-cache"]
    assert cli.adopt_unbounded_entries(tmp_path / "absent") == 0
