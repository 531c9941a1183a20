"""What every benchmark shares: timers, the matmul peak, the reference per-client loop, peak
memory, the machine's description, and the results file.

Timers block on every result (`jax.block_until_ready`): JAX dispatches asynchronously, so an
unblocked call would time the dispatch, not the work. The first call(s) compile and are kept
apart from the timed ones.
"""

import dataclasses
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from experiments import cli
from fedjax_syn.core.arrays import Federation
from fedjax_syn.core.interface import FederatedAlgorithm
from fedjax_syn.runs.ledger import cpu_model, versions, write_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

Step = Callable[[Any], Any]  # state -> next state; the timers thread the state through


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of the warm-up calls and of the timed calls (wall and process CPU time, which
    other jobs on a shared machine inflate less than wall time)."""

    warmup_s: tuple[float, ...]
    wall_s: tuple[float, ...]
    cpu_s: tuple[float, ...]

    @property
    def first_s(self) -> float:
        return self.warmup_s[0] if self.warmup_s else float("nan")

    @property
    def min_s(self) -> float:
        return min(self.wall_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def max_s(self) -> float:
        return max(self.wall_s)

    @property
    def cpu_median_s(self) -> float:
        return statistics.median(self.cpu_s)

    def summary(self) -> dict[str, Any]:
        """The figures a results file keeps."""
        return {
            "first_s": self.first_s,
            "min_s": self.min_s,
            "median_s": self.median_s,
            "max_s": self.max_s,
            "cpu_median_s": self.cpu_median_s,
            "repeats": len(self.wall_s),
        }


def time_interleaved(
    runners: dict[str, tuple[Step, Any]], repeats: int, warmup: int = 1
) -> tuple[dict[str, Any], dict[str, Timing]]:
    """Times `state = step(state)` for each runner: `warmup` calls each first, then `repeats`
    rounds that call every runner once in turn, so a change in background load hits them alike.
    Returns the final states and the timings, by runner name."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    states = {name: state for name, (_, state) in runners.items()}
    warm: dict[str, list[float]] = {name: [] for name in runners}
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for name, (step, _) in runners.items():
        for _ in range(warmup):
            start = time.perf_counter()
            states[name] = jax.block_until_ready(step(states[name]))
            warm[name].append(time.perf_counter() - start)
    for _ in range(repeats):
        for name, (step, _) in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            states[name] = jax.block_until_ready(step(states[name]))
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    timings = {
        name: Timing(tuple(warm[name]), tuple(wall[name]), tuple(cpu[name])) for name in runners
    }
    return states, timings


def time_calls(step: Step, state: Any, repeats: int, warmup: int = 1) -> tuple[Any, Timing]:
    """`time_interleaved` of one runner: (final state, timing)."""
    states, timings = time_interleaved({"": (step, state)}, repeats, warmup)
    return states[""], timings[""]


def side_by_side(
    runners: dict[str, tuple[Step, Any]], repeats: int, output: Callable[[Any], Any], digits: int
) -> str:
    """Two formulations of one computation timed interleaved, as "<a> <ms>, <b> <ms>, <a / b>x;
    max |difference| <d>", d between `output` of their final states."""
    (a, b), (states, timings) = runners, time_interleaved(runners, repeats)
    diff = float(jnp.max(jnp.abs(jnp.asarray(output(states[a])) - jnp.asarray(output(states[b])))))
    ta, tb = timings[a].median_s, timings[b].median_s
    return (
        f"{a} {ta * 1e3:.{digits}f} ms, {b} {tb * 1e3:.{digits}f} ms, {ta / tb:.2f}x; "
        f"max |difference| {diff:.1e}"
    )


def time_once(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(fn(*args), wall seconds until its result is ready): for work that runs once, such as a
    compilation or a whole run."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a jitted n x n f32 matmul on the default device (median of `repeats`): the
    practical peak that achieved FLOP/s are compared with, measured in the same process."""
    a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    _, timing = time_calls(lambda _: matmul(a, b), None, repeats)
    return 2 * n**3 / timing.median_s


def dividing_chunks(values: Sequence[str], clients: int) -> list[int]:
    """The client chunk sizes of a `--chunks` flag; a size that is not a positive divisor of
    `clients` ends the benchmark with one error line."""
    chunks = [int(c) for c in values]
    for chunk in chunks:
        if chunk < 1 or clients % chunk:
            cli.fail(f"--chunks: {chunk} does not divide the {clients} clients")
    return chunks


def take_client(tree: Any, k: int) -> Any:
    """Client k's slice of a tree stacked on a leading clients axis."""
    return jax.tree.map(lambda leaf: leaf[k], tree)


def stack(trees: Sequence[Any]) -> Any:
    """The inverse of `take_client` over every client."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def loop_round(alg: FederatedAlgorithm, fed: Federation, key: jax.Array) -> Step:
    """The reference round: a Python loop calling a jitted `alg.client_update` once per client,
    then a jitted server update. Returns step((server, [client state])) -> the same, with the
    per-client keys of the engine's round, so both compute the same thing. Data slices and keys
    are prepared here, outside any timed call."""
    update = jax.jit(alg.client_update)
    aggregate = jax.jit(lambda s, ups, m, k: alg.server_update(s, stack(ups), m, k))
    update_key, server_key, _ = jax.random.split(key, 3)
    keys = list(jax.random.split(update_key, fed.num_clients))
    datas = [take_client(fed.train, k) for k in range(fed.num_clients)]

    def step(carry: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
        server, states = carry
        results = [update(server, s, d, k) for s, d, k in zip(states, datas, keys)]
        server = aggregate(server, [r.upload for r in results], fed.client_mask, server_key)
        return server, [r.state for r in results]

    return step


def loop_carry(server: Any, clients: Any, num_clients: int) -> tuple[Any, list[Any]]:
    """The loop's state from the engine's: stacked client states split per client."""
    return server, [take_client(clients, k) for k in range(num_clients)]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def usable_cores() -> int | None:
    """Cores this process may run on: fewer than the machine's when pinned (taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def load_average() -> float:
    """The one-minute load average: on a shared machine, how much the figures may be inflated."""
    return os.getloadavg()[0]


def command_line() -> str:
    """How this process was started, as a command to paste."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"python -m {spec.name}" if spec else f"python {sys.argv[0]}"
    return " ".join([program, *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """Where and with what the figures were taken, the load average included."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "load_average": load_average(),
        **versions(),
    }


def read_result(path: str | pathlib.Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def write_result(name: str, payload: dict[str, Any], directory: pathlib.Path = RESULTS_DIR):
    """Writes `directory/<name>.json` atomically: the payload, the command that produced it, and
    the machine (with the load average at the end of the run). Returns the path."""
    record = {"name": name, "command": command_line(), **payload, "machine": machine()}
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path = pathlib.Path(directory) / f"{name}.json"
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def run_worker(module: str, args: list[str], label: str) -> dict[str, Any]:
    """Runs `python -m module *args` from the repository root in a fresh process (its own peak
    memory, its own process-wide settings) and returns the JSON of its last output line; a
    failure ends this process with one line naming `label`."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO
    )
    if out.returncode != 0:
        cli.fail(f"{label} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
