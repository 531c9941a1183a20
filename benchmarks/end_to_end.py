"""Where the time of one whole run goes, measured as the run pipeline does the run.

The run is `runs.program.run` taken apart at its seams: data preparation, compilation of the
start (round 0 included) and of the round, round 0, then the rounds with their evaluation and
per-round host copies. Evaluation is then timed again on its own, as a separate program on the
final states, to show its share of a round, and so is one round without evaluation, in the run's
layout and as the reference per-client loop (`harness.loop_round`), interleaved from the same state.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import harness
from benchmarks.rounds import evaluate_program, relative_diff, vmapped_round
from fedjax_syn.runs import program
from fedjax_syn.runs.config import engine_config
from fedjax_syn.runs.prepare import build_algorithm, prepare


def _finite(value: float) -> float | None:
    """JSON has no NaN: a setting with no examples is kept as null."""
    return None if math.isnan(value) else value


def _ready(state: program.State) -> program.State:
    jax.block_until_ready((state.server, state.clients))
    return state


def round_vs_loop(alg, fed, server, clients, cfg, repeats: int) -> dict[str, Any]:
    """One round without evaluation in the run's layout and as the per-client loop, from the same
    single-run state, interleaved: medians, their ratio and how far the servers end apart."""
    key = jax.random.key(cfg.seed + 1)
    runners = {
        "loop": (
            harness.loop_round(alg, fed, key),
            harness.loop_carry(server, clients, fed.num_clients),
        ),
        "engine": (
            vmapped_round(alg, fed, key, engine_config(cfg)),
            jax.tree.map(jnp.copy, (server, clients)),
        ),
    }
    states, timings = harness.time_interleaved(runners, repeats)
    return {
        "loop": timings["loop"].summary(),
        "engine": timings["engine"].summary(),
        "vs_loop": timings["loop"].median_s / timings["engine"].median_s,
        "diff_vs_loop": relative_diff(states["loop"][0], states["engine"][0]),
    }


def measure(cfg, eval_repeats: int = 5) -> dict[str, Any]:
    """Figures of one run of `cfg`: seconds per part, the rounds run, peak memory (after the
    data and at the end) and the last round's accuracies."""
    prepared, data_s = harness.time_once(prepare, cfg)
    data_rss = harness.peak_rss_mib()
    compiled = program.compile_program([cfg], [prepared])
    state, round0_s = harness.time_once(lambda: _ready(program.initial_state(compiled)))
    last = compiled.last_round
    state, rounds_s = harness.time_once(lambda: _ready(program.advance(compiled, state, last)))

    alg = build_algorithm(cfg, [prepared])
    evaluate = evaluate_program(alg, engine_config(cfg))
    one = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)  # the program's only run
    args = (one(state.server), one(state.clients), compiled.fed, jax.random.key(cfg.seed))
    evaluate_c, eval_compile_s = harness.time_once(lambda: evaluate.lower(*args).compile())
    _, eval_timing = harness.time_calls(lambda _: evaluate_c(*args), None, eval_repeats)
    versus = round_vs_loop(alg, prepared.fed, *args[:2], cfg, eval_repeats)
    return {
        "config": cfg.to_dict(),
        "rounds": last,  # after round 0, which is the setup round or just the initial states
        "setup_round": compiled.first_round == 0,
        "data_s": data_s,
        "compile_s": compiled.compile_time,
        "round0_s": round0_s,
        "rounds_s": rounds_s,
        "evaluated_rounds": len(state.eval_rounds),
        "evaluation": {**eval_timing.summary(), "compile_s": eval_compile_s},
        "round_vs_loop": versus,
        "run_s": data_s + compiled.compile_time + round0_s + rounds_s,
        "data_rss_mib": data_rss,
        "peak_rss_mib": harness.peak_rss_mib(),
        "last": {name: _finite(curve[-1]) for name, curve in state.curves[0].items()},
    }


def print_figures(f: dict[str, Any]) -> None:
    evaluation = f["evaluation"]
    rows = [
        ("data preparation", f["data_s"]),
        ("compilation: start and round programs", f["compile_s"]),
        (
            "round 0" + (" (setup round, all clients)" if f["setup_round"] else ", initial states"),
            f["round0_s"],
        ),
        (f"{f['rounds']} round(s) incl. evaluation", f["rounds_s"]),
        ("  evaluation, own program, median of one", evaluation["median_s"]),
        ("  round without evaluation, run's layout", f["round_vs_loop"]["engine"]["median_s"]),
        ("  round without evaluation, per-client loop", f["round_vs_loop"]["loop"]["median_s"]),
        ("run total (compilation included)", f["run_s"]),
    ]
    for name, seconds in rows:
        print(f"  {name:<48} {seconds:9.2f} s", flush=True)
    print(f"  peak RSS {f['peak_rss_mib']:.0f} MiB (after the data {f['data_rss_mib']:.0f} MiB)")
    last = {k: v if v is None else round(v, 4) for k, v in f["last"].items()}
    print(f"  last round: {last}", flush=True)
