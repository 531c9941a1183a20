"""Table configs are valid sweeps, --quick shrinks them, and `--mode=reproduce --quick`
regenerates the digits table end to end."""

import os
import pathlib
import subprocess
import sys

import pytest

import fedjax_syn.runs.ledger as ledger_lib
from experiments import configs
from fedjax_syn.core.errors import UserError
from fedjax_syn.report import reproduce
from fedjax_syn.report.specs import table_spec
from fedjax_syn.runs import sweep
from fedjax_syn.runs.config import run_id
from fedjax_syn.runs.grid import grid_configs

REPO = pathlib.Path(__file__).resolve().parents[1]
TABLES = (
    "digits_table",
    "vision_alpha_sweep",
    "graph_seen",
    "graph_generalization",
    "condense_table",
    "ablations",
    "fedlog_components",
)


@pytest.mark.parametrize("table", TABLES)
def test_every_table_config_expands_into_runs_and_a_table(table):
    name, config = configs.load(table)
    points = grid_configs(config)
    assert len(points) > 1 and len({run_id(p) for p in points}) == len(points)
    spec = table_spec(config, name)
    assert spec.name == table and spec.seeds == tuple(config.grid.seed)
    assert sum(len(job.run_ids) for job in sweep.plan(points)) == len(points)


def test_the_tables_name_their_grids():
    alphas = configs.load("vision_alpha_sweep")[1].grid.alpha
    assert alphas == (0.05, 0.1, 0.3, 1.0, 10.0)
    graph = configs.load("graph_generalization")[1].grid
    assert graph.setting == ("closeset", "openset") and graph.num_clients == (3, 5, 10)
    assert "fedlog" in graph.algorithm


def test_quick_keeps_the_compared_axes_and_shrinks_the_rest():
    _, config = configs.load("graph_seen")
    quick = reproduce.shrink(config)
    assert quick.rounds == reproduce.QUICK_ROUNDS and config.rounds == 100
    assert quick.grid.seed == (0,) and quick.grid.dataset == ("cora",)
    assert quick.grid.num_clients == (3,)
    assert quick.grid.algorithm == config.grid.algorithm
    assert quick.fedlog.pretrain_epochs == reproduce.QUICK_FEDLOG["pretrain_epochs"]
    condense = reproduce.shrink(configs.load("condense_table")[1])
    assert condense.iterations == 2 and condense.grid.ipc == (1,)


def _reproduce(table, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    mode = ["-m", "experiments.main", "--mode=reproduce", f"--table={table}"]
    command = [sys.executable, *mode, *args, "--noprogress"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_unknown_table_is_a_one_line_error(tmp_path):
    done = _reproduce("nope", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: unknown table 'nope'") and "digits_table" in line


@pytest.mark.parametrize(
    "table, fragment",
    [({"plot": "alfa"}, "unknown table plot 'alfa'"), ({"metric": "bset"}, "metric set 'bset'")],
)
def test_a_bad_table_fails_before_any_data_is_loaded_or_run(table, fragment, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("started before the table was checked")

    monkeypatch.setattr(reproduce, "describe_data", never)
    monkeypatch.setattr(sweep, "run_sweep", never)
    name, config = configs.load("digits_table")
    config.table = {**config.table.to_dict(), **table}
    with pytest.raises(UserError, match=fragment):
        reproduce.reproduce(name, config, out=tmp_path, log=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_quick_reproduce_of_the_digits_table_end_to_end(tmp_path):
    out = tmp_path / "out"
    done = _reproduce(
        "digits_table", "--quick", "--grid=algorithm=fedavg,local", f"--out={out}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout
    for path in (
        out / "ledger.jsonl",
        out / "tables" / "digits_table.md",
        out / "tables" / "digits_table.tex",
        out / "figures" / "digits_table_alpha.png",
        out / "figures" / "digits_table_alpha.pdf",
    ):
        assert path.is_file() and str(path) in printed
    splits = sorted(p.name for p in (out / "splits").iterdir())
    assert len(splits) == 2 and all("seed=0" in s for s in splits)  # alpha 0.1 and 1.0
    records = ledger_lib.read_ledger(out / "ledger.jsonl")
    assert sorted((r["algorithm"], r["protocol"]["alpha"]) for r in records) == [
        ("fedavg", 0.1),
        ("fedavg", 1.0),
        ("local", 0.1),
        ("local", 1.0),
    ]
    assert all(r["eval_rounds"] == [1, 2, 3] and r["seed"] == 0 for r in records)
    table = (out / "tables" / "digits_table.md").read_text()
    assert table in printed and table.count("| 1/1 |") == 4


def test_graph_splits_are_written_once_per_distinct_split(tmp_path, data_dir):
    _, config = configs.load("graph_seen")
    config.grid = {"dataset": ("cora",), "num_clients": (3,), "algorithm": ("local", "fedavg")}
    points = grid_configs(config)
    for point in points:
        point.data_dir = str(data_dir)
    (path,) = reproduce.write_splits(points, tmp_path, cache={})  # both algorithms, one split
    text = path.read_text()
    assert path.name.startswith("cora_") and "num_clients=3" in path.name
    assert text == reproduce.write_splits(points[:1], tmp_path / "again", cache={})[0].read_text()
