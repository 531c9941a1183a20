"""End-to-end vision runs on the embedded digits: sane accuracy, the local-overfitting effect the
toolkit exists to measure, determinism, and one-line errors for bad input."""

import gzip
import os
import subprocess
import sys

import pytest

from fedjax_syn.core.errors import UserError
from fedjax_syn.runs import program
from fedjax_syn.runs.config import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_config(**overrides):
    cfg = default_config()
    cfg.update(dict(rounds=8, num_clients=10, batch_size=10, lr=0.05, finetune_epochs=5))
    cfg.update(overrides)
    return cfg


def test_fedavg_on_digits_reaches_sane_global_accuracy():
    record = program.run([digits_config(algorithm="fedavg", alpha=1.0, rounds=10)])[0]
    assert record["best"]["global"] >= 0.85
    assert record["last"]["round"] == 10
    assert len(record["curves"]["global"]) == 10


def test_finetuning_locally_overfits_at_high_heterogeneity():
    """FedAvg-FT beats FedAvg on the clients' own test data and loses on the global test set."""
    fedavg = program.run([digits_config(algorithm="fedavg", alpha=0.1, rounds=15)])[0]
    fedavg_ft = program.run([digits_config(algorithm="fedavg_ft", alpha=0.1, rounds=15)])[0]
    assert fedavg_ft["last"]["seen"] > fedavg["last"]["seen"]
    assert fedavg_ft["last"]["global"] < fedavg["last"]["global"]
    assert fedavg_ft["last"]["missing_class"] < fedavg["last"]["missing_class"]


def test_same_config_and_seed_give_identical_metrics():
    a = program.run([digits_config(algorithm="fedprox", rounds=3, seed=4)])[0]
    b = program.run([digits_config(algorithm="fedprox", rounds=3, seed=4)])[0]
    assert a["curves"] == b["curves"]


def test_run_appends_one_ledger_record(tmp_path):
    import fedjax_syn.runs.ledger as ledger_lib

    ledger = tmp_path / "ledger.jsonl"
    (record,) = program.run([digits_config(algorithm="local", rounds=2)], ledger=str(ledger))
    (stored,) = ledger_lib.read_ledger(ledger)
    assert stored["run_id"] == record["run_id"]
    assert set(stored["best"]) == {"round", "val", "seen", "global", "missing_class", "new_client"}


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"dataset": "imagenet"}, "imagenet"),
        ({"algorithm": "fedsgd"}, "fedsgd"),
        ({"model": "resnet"}, "resnet"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"num_clients": 5000}, "too many"),
        ({"batch_size": 0}, "batch_size"),
        ({"rounds": 0}, "rounds"),
        ({"dataset": "fashion_mnist", "data_dir": "/no/such/dir"}, "/no/such/dir"),
        ({"partition": "pathological"}, "pathological"),
        ({"optimizer": "lbfgs"}, "lbfgs"),
    ],
)
def test_bad_input_is_a_one_line_user_error(overrides, fragment):
    with pytest.raises(UserError) as error:
        program.run([digits_config(**{"rounds": 1, **overrides})])[0]
    message = str(error.value)
    assert fragment in message
    assert "\n" not in message


def _launch(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", "--noprogress", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **(env or {})),
    )


def test_launcher_reports_bad_algorithm_in_one_line_without_traceback(tmp_path):
    out = _launch(
        "--config=experiments/configs/digits_table.py",
        "--grid=algorithm=nope",
        f"--ledger={tmp_path}/l.jsonl",
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown algorithm 'nope'")


def test_launcher_reports_corrupt_idx_file(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03garbage")
    out = _launch(
        "--config=experiments/configs/digits_table.py",
        "--config.dataset=fashion_mnist",
        f"--config.data_dir={tmp_path}",
        "--grid=algorithm=fedavg",
        f"--ledger={tmp_path}/l.jsonl",
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "fashion_mnist" in last
