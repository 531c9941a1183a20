"""Client layouts chosen by measurement: the candidates, the stored choice (reused, rewritten
when corrupt, optional when the cache cannot be written) and a measured run computing what the
vmapped run computes."""

import json

import numpy as np

from fedjax_syn.engine import layout
from fedjax_syn.runs import layouts, program
from fedjax_syn.runs.config import default_config, run_id

ALL, ONE, FOUR, ONE_VMAPPED = (None, False), (1, False), (4, False), (1, True)


def test_candidates_are_vmapped_then_every_chunk_below_the_clients_and_a_vmap_of_one():
    assert layout.candidates(1) == (ALL,)
    assert layout.candidates(10) == (ALL, ONE, FOUR, ONE_VMAPPED)
    assert layout.candidates(1000) == (
        ALL,
        ONE,
        FOUR,
        (16, False),
        (64, False),
        (256, False),
        ONE_VMAPPED,
    )
    assert [layout.describe(c) for c in layout.candidates(10)] == ["None", "1", "4", "1 vmapped"]


def test_fastest_picks_the_smallest_time():
    assert layout.fastest({ALL: 0.3, ONE: 0.1, FOUR: 0.2}) == ONE
    assert layout.fastest({ALL: 0.1, ONE: 0.2}) == ALL


def _counting_rounds(calls):
    """round_for whose rounds record which layout ran; chunk 4 is made the slowest."""

    def round_for(chosen):
        def call():
            calls.append(chosen)
            return np.zeros(10_000_000 if chosen == FOUR else 1).sum()

        return call

    return round_for


def test_a_choice_is_measured_once_stored_and_then_reused(tmp_path):
    path = tmp_path / "layouts.json"
    calls = []
    chosen = layouts.choose_layout("k1", _counting_rounds(calls), 10, path)
    assert chosen != FOUR and set(calls) == {ALL, ONE, FOUR, ONE_VMAPPED}
    stored = json.loads(path.read_text())["k1"]
    assert (stored["chunk"], stored["vmap_single"]) == chosen
    assert set(stored["seconds"]) == {"None", "1", "4", "1 vmapped"}
    calls.clear()
    assert layouts.choose_layout("k1", _counting_rounds(calls), 10, path) == chosen
    assert calls == []  # reused, not timed again
    layouts.choose_layout("k2", _counting_rounds(calls), 2, path)
    assert set(json.loads(path.read_text())) == {"k1", "k2"}  # one file, both kept


def test_a_corrupt_or_unwritable_cache_is_measured_again_without_failing(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text('{"k1": {"chunk": "four"}')  # truncated JSON, and an invalid entry
    calls = []
    layouts.choose_layout("k1", _counting_rounds(calls), 2, path)
    assert calls and json.loads(path.read_text())["k1"]["chunk"] in (None, 1)
    path.write_text('{"k1": {"chunk": 1, "vmap_single": "yes"}}')
    calls.clear()
    layouts.choose_layout("k1", _counting_rounds(calls), 2, path)
    assert calls  # an entry with a bad vmap_single is measured again
    blocked = tmp_path / "file" / "layouts.json"
    (tmp_path / "file").write_text("not a folder")
    assert layouts.choose_layout("k1", _counting_rounds([]), 2, blocked) in layout.candidates(2)


def test_an_entry_stored_before_the_vmap_of_one_candidate_is_measured_again(tmp_path):
    path = tmp_path / "layouts.json"
    path.write_text('{"k1": {"chunk": 1, "seconds": {"1": 0.1}}}')
    calls = []
    chosen = layouts.choose_layout("k1", _counting_rounds(calls), 10, path)
    assert ONE_VMAPPED in calls and json.loads(path.read_text())["k1"]["vmap_single"] == chosen[1]


def test_a_measured_run_computes_what_the_vmapped_run_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDJAX_SYN_CACHE_DIR", str(tmp_path))
    cfg = default_config()
    cfg.update(dict(num_clients=5, hidden=(16,), batch_size=32, rounds=2))
    measured_cfg = cfg.copy_and_resolve_references()
    measured_cfg.client_chunk = layouts.AUTO
    vmapped, measured = program.run([cfg])[0], program.run([measured_cfg])[0]
    assert measured["run_id"] == vmapped["run_id"] == run_id(cfg)  # execution only
    for name, curve in vmapped["curves"].items():
        np.testing.assert_allclose(measured["curves"][name], curve, atol=1e-6)
    (entry,) = json.loads((tmp_path / "layouts.json").read_text()).values()
    assert set(entry["seconds"]) == {"None", "1", "4", "1 vmapped"}
