"""The benchmark harness: its timers, its reference loop, and the BENCHMARKS.md rewriter."""

import time

import jax
import numpy as np
import pytest

from benchmarks import condense, end_to_end, hand_written, harness, report, rounds, tables
from fedjax_syn.engine.round import init_states, make_round
from fedjax_syn.runs.config import default_config
from tests.engine_fixtures import algorithm, make_federation


def test_timer_orders_its_figures_and_keeps_warmup_apart():
    calls = []

    def step(n):
        time.sleep(0.2 if n == 0 else 0.001 * (n % 3 + 1))
        calls.append(n)
        return n + 1

    final, timing = harness.time_calls(step, 0, repeats=5)
    assert final == 6 and calls == list(range(6))
    assert len(timing.warmup_s) == 1 and len(timing.wall_s) == len(timing.cpu_s) == 5
    assert timing.first_s >= 0.2 > timing.max_s
    assert timing.min_s <= timing.median_s <= timing.max_s
    assert timing.summary()["repeats"] == 5


def test_interleaved_timer_calls_runners_round_robin():
    calls = []
    runner = lambda name: (lambda state: calls.append(name) or state, None)
    _, timings = harness.time_interleaved({"a": runner("a"), "b": runner("b")}, repeats=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert set(timings) == {"a", "b"}


@pytest.mark.parametrize("name", ["fedavg", "fedper"])
def test_loop_round_equals_vmapped_round(name):
    alg = algorithm(name, steps=2)
    fed = make_federation()
    server, clients = init_states(alg, fed, jax.random.key(0))
    key = jax.random.key(1)
    loop = harness.loop_round(alg, fed, key)
    loop_server, loop_states = loop(harness.loop_carry(server, clients, fed.num_clients))
    vmap_server, vmap_clients, _ = make_round(alg)(server, clients, fed, key, evaluate=False)
    for a, b in zip(jax.tree.leaves(loop_server), jax.tree.leaves(vmap_server)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(harness.stack(loop_states)), jax.tree.leaves(vmap_clients)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_round_comparison_renders_a_table(tmp_path):
    setup = rounds.RoundSetup(
        "mlp", 4, (5,), hidden=(3,), steps=2, batch=2, examples=4, unroll=False
    )
    result = rounds.compare(setup, repeats=1, chunks=(2,), peak=1e9)
    assert set(result["modes"]) == {"loop", rounds.PLAIN_LOOP, "vmapped", "chunk=2"}
    assert all(m["diff_vs_loop"] < 1e-5 for m in result["modes"].values())
    loops = [result["modes"][mode] for mode in rounds.LOOPS]  # the faster loop is the reference
    assert max(m["vs_loop"] for m in loops) == 1.0 and min(m["vs_loop"] for m in loops) <= 1.0
    payload = {"kind": "rounds", "peak_gflops": 1.0, "peak_size": 8, "configs": [result]}
    record = harness.read_result(harness.write_result("tiny", payload, tmp_path))
    assert record["machine"]["cores"] >= 1
    table = tables.render(record)
    assert "benchmarks/results/tiny.json" in table and table.count("| MLP 5-3-10") == 4
    assert result["fastest_layout"] in ("vmapped", "chunk=2")
    assert f"Fastest engine layout, MLP 5-3-10, 2 steps of 2: {result['fastest_layout']}" in table


def test_run_workload_is_timed_part_by_part_and_against_the_loop(tmp_path):
    cfg = default_config()
    cfg.update(dict(num_clients=3, hidden=(8,), batch_size=32, rounds=2))
    figures = end_to_end.measure(cfg, eval_repeats=1)
    assert figures["rounds"] == 2 and figures["evaluated_rounds"] == 2
    versus = figures["round_vs_loop"]
    assert versus["diff_vs_loop"] < 1e-5  # the same round, computed two ways
    assert versus["vs_loop"] > 0 and versus["loop"]["repeats"] == 1
    record = harness.read_result(harness.write_result("run", {"kind": "run", **figures}, tmp_path))
    table = tables.render(record)
    assert (
        "the same round as the per-client loop" in table
        and "**run, compilation included**" in table
    )


def test_condensation_table_gives_flops_and_share_of_peak(tmp_path):
    rows = [
        dict(
            ipc=10,
            conv="im2col",
            variant=name,
            first_s=1.0,
            median_s=median,
            flops=flops,
            peak_gflops=100.0,
            peak_rss_mib=1.0,
            data="random",
        )
        for name, median, flops in (("match_loop", 2.0, 100e9), ("epoch", 0.1, 4e9))
    ]
    payload = {
        "kind": "condense",
        "width": 8,
        "batch_real": 4,
        "data": "random",
        "rows": rows,
        "composed": condense.composed(rows),
    }
    (iteration,) = payload["composed"]
    assert (
        iteration["flops"] == 10 * 100e9 + 9 * 50 * 4e9
    )  # outer x match + (outer - 1) x inner x epoch
    table = tables.render(harness.read_result(harness.write_result("c", payload, tmp_path)))
    assert "| 10 | im2col | match_loop | 1.00 | 2.00 | 100.0 | 50.0 | 50 | 1 |" in table
    assert "GFLOP/s" in table and "% of peak" in table


def test_a_mapped_program_is_credited_with_its_vmapped_twins_work():
    row = lambda variant, ipc, flops: dict(ipc=ipc, conv="xla", variant=variant, flops=flops)
    rows = [row("dm_vmap", 1, 100e9), row("dm_map", 1, 10e9), row("dm_map", 10, 12e9)]
    condense.count_mapped_work(rows)
    assert rows[1]["flops"] == 100e9 and rows[1]["flops_from_twin"]
    assert rows[2]["flops"] == 12e9 and "flops_from_twin" not in rows[2]  # no twin measured


def test_a_whole_iteration_is_credited_with_its_mapped_composition():
    row = lambda variant, median, flops: dict(
        ipc=10, conv="im2col", variant=variant, median_s=median, flops=flops
    )
    rows = [row("match_map", 2.0, 100e9), row("epoch", 0.1, 4e9), row("iteration", 60.0, 5e9)]
    composition = condense.composed(rows)
    condense.count_iteration_work(rows, composition)
    assert rows[2]["flops"] == 10 * 100e9 + 9 * 50 * 4e9 and rows[2]["flops_from_parts"]


def test_report_rewrites_only_the_marked_sections():
    text = (
        "# Title\n\nProse stays.\n\n"
        "<!-- generated:a -->\nold a\n<!-- /generated -->\n\n"
        "Between.\n\n"
        "<!-- generated:b -->\nold b\n<!-- /generated -->\nEnd.\n"
    )
    assert report.markers(text) == ["a", "b"]
    new = report.rewrite(text, {"a": "| new | a |\n", "c": "unused"})
    assert new == text.replace("old a", "| new | a |")
    assert report.rewrite(new, {"a": "| new | a |"}) == new
    assert report.rewrite(text, {}) == text


def test_kernel_gradient_formulations_agree():
    """The two formulations benchmarks.dense times: they must compute the same."""
    k_w, k_x, k_g = jax.random.split(jax.random.key(0), 3)
    kernel, x, g = (
        jax.random.normal(k, s) for k, s in ((k_w, (3, 5, 4)), (k_x, (3, 6, 5)), (k_g, (3, 6, 4)))
    )
    steps = {name: np.asarray(fn(kernel, x, g)) for name, fn in hand_written.KERNEL_STEPS.items()}
    np.testing.assert_allclose(steps["dot"], steps["outer"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(steps["dot"], kernel)  # the step moved the kernel


def test_hand_written_w2_round_is_the_same_in_every_layout():
    """The hand-written W2 round of benchmarks.w2_floor: chunking and kernel gradients change no result."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 2, 3, hand_written.INPUTS)).astype(np.float32)
    y = rng.integers(0, hand_written.CLASSES, size=(4, 2, 3))
    params = {
        "w1": rng.normal(size=(hand_written.INPUTS, hand_written.HIDDEN)).astype(np.float32) * 0.1,
        "b1": np.zeros(hand_written.HIDDEN, np.float32),
        "w2": rng.normal(size=(hand_written.HIDDEN, hand_written.CLASSES)).astype(np.float32) * 0.1,
        "b2": np.zeros(hand_written.CLASSES, np.float32),
    }
    outs = [
        hand_written.w2_round(chunk, outer)(params, x, y)
        for chunk in (1, 2, 4)
        for outer in (False, True)
    ]
    for out in outs[1:]:
        for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(out), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs[0]["w1"], params["w1"])


def test_w2_step_parts_are_the_pieces_of_one_step():
    """`benchmarks.w2_floor --parts` times these pieces: together they are the written-out step."""
    rng = np.random.default_rng(1)
    k, batch = 3, 4
    xb = rng.normal(size=(k, batch, hand_written.INPUTS)).astype(np.float32)
    yb = rng.integers(0, hand_written.CLASSES, size=(k, batch))
    shapes = {
        "w1": (hand_written.INPUTS, hand_written.HIDDEN),
        "b1": (hand_written.HIDDEN,),
        "w2": (hand_written.HIDDEN, hand_written.CLASSES),
        "b2": (hand_written.CLASSES,),
    }
    params = {n: rng.normal(size=(k, *s)).astype(np.float32) * 0.1 for n, s in shapes.items()}
    out = {name: fn(*args) for name, (fn, args) in hand_written.step_parts(params, xb, yb).items()}
    want = hand_written.w2_step(params, xb, yb, outer=True)
    got = {
        "w1": out["first kernel: outer products + SGD"],
        "w2": out["second kernel: outer products + SGD"],
        "b1": out["biases + SGD"][0],
        "b2": out["biases + SGD"][1],
    }
    for name in shapes:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
        assert not np.allclose(got[name], params[name]), name  # the step moved it


def test_w1_products_round_is_the_same_in_every_form_and_follows_the_update():
    """`benchmarks.w1_floor`'s products alone: per client and step W <- W - lr x^T (x W)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 5, 6)).astype(np.float32)  # clients, steps, batch, inputs
    kernel = rng.normal(size=(6, 2)).astype(np.float32)
    lr = 1e-2
    want = []
    for xc in x.astype(np.float64):
        w = kernel.astype(np.float64)
        for xb in xc:
            w = w - lr * xb.T @ (xb @ w)
        want.append(w)
    want = np.mean(want, axis=0)
    for chunk in (1, 2):
        for unroll in (True, False):
            got = hand_written.kernel_products_round(chunk, unroll, lr)(kernel, x)
            np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=f"{chunk} {unroll}")
    assert not np.allclose(want, kernel, rtol=1e-2)


def test_side_by_side_names_both_times_their_ratio_and_the_difference():
    runners = {
        "double": (lambda s: s * 2.0, np.ones(3)),
        "add": (lambda s: s + s + 1e-3, np.ones(3)),
    }
    line = harness.side_by_side(runners, repeats=2, output=lambda s: s, digits=3)
    assert line.startswith("double ") and ", add " in line and "x; max |difference| " in line
    assert float(line.rsplit(" ", 1)[1]) > 0  # the two formulations drifted apart
