"""Results ledger: crash- and concurrency-safe appends, strict reading, ids, versions, atomic writes."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

import fedjax_syn.runs.ledger as ledger_lib
from fedjax_syn.core.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_append_then_read_roundtrip_adds_created_and_converts_numpy(tmp_path):
    ledger = tmp_path / "sub" / "ledger.jsonl"
    ledger_lib.append_record(ledger, {"run_id": "a", "seed": np.int64(1), "acc": np.float32(0.5)})
    ledger_lib.append_record(ledger, {"run_id": "b", "curve": np.arange(3), "created": "fixed"})
    first, second = ledger_lib.read_ledger(ledger)
    assert first["seed"] == 1 and first["acc"] == 0.5
    assert first["created"].endswith("+00:00")  # UTC ISO timestamp
    assert second["curve"] == [0, 1, 2] and second["created"] == "fixed"
    assert ledger.read_bytes().count(b"\n") == 2


def test_concurrent_appends_from_several_processes_keep_every_line(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    writer = textwrap.dedent(
        f"""
        import sys
        from fedjax_syn.runs.ledger import append_record
        proc = int(sys.argv[1])
        for i in range(40):
            # ~100 kB lines: far beyond any single-write atomicity a file system might offer
            append_record({str(ledger)!r}, {{"proc": proc, "i": i, "pad": "x" * 100_000}})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(p)], env=env) for p in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    lines = ledger.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 161
    records = [json.loads(line) for line in lines[:-1]]  # every line is complete JSON
    assert sorted((r["proc"], r["i"]) for r in records) == [
        (p, i) for p in range(4) for i in range(40)
    ]
    for p in range(4):  # each writer's records appear in its own order
        assert [r["i"] for r in records if r["proc"] == p] == list(range(40))


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger_lib.append_record(ledger, {"run_id": "a"})
    ledger_lib.append_record(ledger, {"run_id": "b"})
    with open(ledger, "ab") as f:
        f.write(b'{"run_id": "c", "best": {"se')  # a writer killed mid-line
    with pytest.warns(UserWarning, match="truncated last line 3"):
        records = ledger_lib.read_ledger(ledger)
    assert [r["run_id"] for r in records] == ["a", "b"]


def test_append_after_interrupted_write_removes_the_partial_line(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger_lib.append_record(ledger, {"run_id": "a"})
    with open(ledger, "ab") as f:
        f.write(b'{"run_id": "torn", "va')
    with pytest.warns(UserWarning, match="removed a partial last line of 22 bytes"):
        ledger_lib.append_record(ledger, {"run_id": "b"})
    assert [r["run_id"] for r in ledger_lib.read_ledger(ledger)] == ["a", "b"]


def test_append_keeps_a_complete_last_record_that_lacks_its_newline(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"run_id": "hand-written"}')
    ledger_lib.append_record(ledger, {"run_id": "b"})
    assert [r["run_id"] for r in ledger_lib.read_ledger(ledger)] == ["hand-written", "b"]


def test_append_new_records_appends_only_run_ids_the_ledger_lacks(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    assert ledger_lib.append_new_records(ledger, [{"run_id": "a", "v": 1}]) == [
        {"run_id": "a", "v": 1}
    ]
    new = ledger_lib.append_new_records(ledger, [{"run_id": "a", "v": 2}, {"run_id": "b"}])
    assert [r["run_id"] for r in new] == ["b"]
    assert [(r["run_id"], r.get("v")) for r in ledger_lib.read_ledger(ledger)] == [
        ("a", 1),
        ("b", None),
    ]


def test_processes_appending_the_same_runs_at_once_write_each_once(tmp_path):
    """Two sweeps whose plans put one run in different programs both finish it: the check for
    its id and the write happen under one lock, so the ledger holds it once."""
    ledger = tmp_path / "ledger.jsonl"
    writer = textwrap.dedent(
        f"""
        import sys
        from fedjax_syn.runs.ledger import append_new_records
        for i in range(30):
            append_new_records({str(ledger)!r}, [{{"run_id": str(i), "by": sys.argv[1]}}])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(p)], env=env) for p in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert sorted(int(r["run_id"]) for r in ledger_lib.read_ledger(ledger)) == list(range(30))


@pytest.mark.parametrize(
    "text",
    [
        '{"run_id": "a"}\n{"run_id": oops}\n{"run_id": "c"}\n',
        # Last, but ending in its newline: a torn write never does, and the next append would
        # leave the line mid-file, so it is corruption too.
        '{"run_id": "a"}\n{"run_id": oops}\n',
    ],
    ids=["mid-file", "last-with-newline"],
)
def test_corrupt_line_raises_naming_file_and_line(tmp_path, text):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(text)
    with pytest.raises(UserError, match=r"ledger\.jsonl line 2 is corrupt"):
        ledger_lib.read_ledger(ledger)


def test_non_object_line_and_missing_file_are_user_errors(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('[1, 2]\n{"run_id": "b"}\n')
    with pytest.raises(UserError, match="line 1 is a JSON list"):
        ledger_lib.read_ledger(ledger)
    with pytest.raises(UserError, match="does not exist"):
        ledger_lib.read_ledger(tmp_path / "absent.jsonl")


def test_run_id_ignores_key_order_and_numpy_types_but_not_values():
    config = {"algorithm": "fedavg", "protocol": {"alpha": 0.1, "num_clients": 10}, "seed": 0}
    reordered = {
        "seed": np.int64(0),
        "protocol": {"num_clients": 10, "alpha": 0.1},
        "algorithm": "fedavg",
    }
    assert ledger_lib.run_id(config) == ledger_lib.run_id(reordered)
    assert ledger_lib.run_id(config) == ledger_lib.run_id(ml_collections.ConfigDict(config))
    changed = {**config, "protocol": {"alpha": 0.3, "num_clients": 10}}
    assert ledger_lib.run_id(changed) != ledger_lib.run_id(config)
    assert len(ledger_lib.run_id(config)) == 16


def test_run_id_is_stable_across_processes():
    code = (
        "from fedjax_syn.runs.ledger import run_id; print(run_id({'b': [1, 2.5], 'a': {'x': 'y'}}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == ledger_lib.run_id({"a": {"x": "y"}, "b": [1, 2.5]})


def test_versions_names_libraries_machine_and_backend():
    v = ledger_lib.versions()
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "platform", "cpu", "backend"):
        assert v[key], key
    json.dumps(v)


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "table.md"
    ledger_lib.write_atomic(target, "old")
    ledger_lib.write_atomic(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]
    assert target.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600
