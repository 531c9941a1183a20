"""A condensation run through the sweep runner: its record fills the condensation table, and a
rerun finds it in the ledger."""

import time

import jax
import pytest

import fedjax_syn.runs.ledger as ledger_lib
from fedjax_syn.core.errors import UserError
from fedjax_syn.report import specs, tables
from fedjax_syn.runs import condense, sweep


def test_condensation_sweep_writes_a_table_record_and_skips_it_when_rerun(tmp_path):
    config = condense.default_config()
    config.update(dict(model="mlp", iterations=2, eval_epochs=2, eval_nets=2, eval_batch_size=64))
    config.grid = {"ipc": (1,), "method": ("dm",)}
    ledger, checkpoints = tmp_path / "ledger.jsonl", tmp_path / "checkpoints"
    lines = []
    (record,) = sweep.run_sweep(
        config,
        ledger=str(ledger),
        checkpoint_dir=checkpoints,
        checkpoint_every=1,
        progress=False,
        log=lines.append,
    )
    assert not any(checkpoints.iterdir())  # a finished run leaves no checkpoints
    assert record["track"] == "condense" and (record["method"], record["ipc"]) == ("dm", 1)
    metrics = record["metrics"]
    assert len(metrics["syn_acc_per_net"]) == len(metrics["random_acc_per_net"]) == 2
    assert metrics["syn_acc"] == sum(metrics["syn_acc_per_net"]) / 2
    assert all(0.0 <= a <= 1.0 for a in metrics["syn_acc_per_net"] + metrics["random_acc_per_net"])
    assert any(line.startswith("digits dm ipc=1 seed=0 | syn_acc=") for line in lines)

    table = tables.build_table(ledger_lib.read_ledger(ledger), specs.table_spec(config, "condense"))
    assert table.seeds_found == {("digits", "dm", 1): (0,)}
    assert set(table.cells) == {(("digits", "dm", 1), 0), (("digits", "dm", 1), 1)}

    lines.clear()
    (again,) = sweep.run_sweep(config, ledger=str(ledger), progress=False, log=lines.append)
    assert again["run_id"] == record["run_id"] and lines == [
        f"skipping 1 of 1 runs already in {ledger}"
    ]
    assert len(ledger_lib.read_ledger(ledger)) == 1


class _Interrupted(Exception):
    pass


def test_an_interrupted_condensation_run_resumes_after_its_last_checkpoint(tmp_path):
    config = condense.default_config()
    config.update(dict(model="mlp", method="dm", iterations=4, eval_epochs=2, eval_nets=1))
    config.eval_batch_size = 64
    reference = condense.run(config)

    def interrupt(i: int, loss: float) -> None:
        if i == 2:  # the third iteration, before its checkpoint: the newest is after two
            raise _Interrupted

    cpu_start = time.process_time()
    with pytest.raises(_Interrupted):
        condense.run(config, on_iteration=interrupt, checkpoint_dir=tmp_path, checkpoint_every=2)
    wall_start = time.perf_counter()
    resumed = condense.run(config, checkpoint_dir=tmp_path, checkpoint_every=2)
    wall_now, cpu_both = time.perf_counter() - wall_start, time.process_time() - cpu_start
    assert reference["resumed_after"] is None and resumed["resumed_after"] == 2
    assert resumed["metrics"] == reference["metrics"]  # the same synthetic set, bit for bit
    # The time spent counts the interrupted process's share, kept in its checkpoint.
    assert resumed["wall_time_s"] > wall_now
    assert 0 < resumed["cpu_time_s"] <= cpu_both


def test_class_batching_auto_picks_by_backend_and_leaves_the_run_id_alone():
    config = condense.default_config()
    expected = "map" if jax.default_backend() == "cpu" else "vmap"
    assert config.class_batching == "auto" and condense._class_batching(config) == expected
    chosen = config.copy_and_resolve_references()
    chosen.class_batching = "vmap"
    assert condense.identity(chosen) == condense.identity(config)
    config.class_batching = "rows"
    with pytest.raises(UserError, match=r"'rows'.*auto"):
        condense._class_batching(config)


def test_auto_convolution_is_xlas_own_only_for_distribution_matching():
    config = condense.default_config()
    config.method = "dm"
    assert condense._condensation_conv(config) == "xla"
    config.conv = "im2col"
    assert condense._condensation_conv(config) == "im2col"
    config.update(dict(method="gm", conv="auto"))
    assert condense._condensation_conv(config) == "auto"
