"""Choosing the clients' layout in a round (all vmapped, or `lax.map` over chunks of k clients,
one client at a time unbatched or as a vmap of one) by timing each candidate on the round itself.

No layout wins everywhere (BENCHMARKS.md, "Client layout chosen by measurement"): on one CPU core
a ConvNet round is fastest one client at a time (vmapped, per-client kernels become grouped
convolutions), a 100-client MLP round in chunks of a few clients (their weights stay in cache), a
round of 1000 tiny clients in chunks of 16 or more; on an accelerator all clients vmapped. Timing costs a
compilation and a few rounds per candidate, so the run pipeline does it once per program shape and
remembers the choice (`fedjax_syn.runs.layouts`).
"""

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax

# (chunk, vmap_single): chunk None vmaps every client, k maps over chunks of k clients; with chunk
# 1, vmap_single runs each client's update as a vmap of one instead of unbatched.
Layout = tuple[int | None, bool]
CHUNKS = (1, 4, 16, 64, 256)  # candidate chunk sizes, each tried when below the clients


def candidates(num_clients: int) -> tuple[Layout, ...]:
    """All clients vmapped, then every chunk size of `CHUNKS` smaller than `num_clients`, chunk 1
    both unbatched and as a vmap of one."""
    chunks = [k for k in CHUNKS if k < num_clients]
    singles = [(1, True)] if 1 in chunks else []
    return ((None, False), *((k, False) for k in chunks), *singles)


def describe(layout: Layout) -> str:
    """A layout as text: "None" (all vmapped), "k" (chunks of k), "1 vmapped" (a vmap of one)."""
    chunk, vmap_single = layout
    return f"{chunk}{' vmapped' if vmap_single else ''}"


def shape_key(name: str, *trees: Any) -> str:
    """A key that changes with `name` (what the program computes, e.g. its config), with the
    shapes and dtypes of `trees`, and with the backend, device kind and count, and jax version."""
    leaves = [(tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(trees)]
    device = jax.devices()[0]
    where = [jax.default_backend(), device.device_kind, jax.device_count(), jax.__version__]
    text = json.dumps([name, leaves, where], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def time_layouts(
    round_for: Callable[[Layout], Callable[[], Any]], layouts: Iterable[Layout], repeats: int = 2
) -> dict[Layout, float]:
    """Median seconds of `repeats` calls of `round_for(layout)()` per layout, after one call that
    compiles and warms it."""
    seconds = {}
    for layout in layouts:
        call = round_for(layout)
        jax.block_until_ready(call())
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples.append(time.perf_counter() - start)
        seconds[layout] = statistics.median(samples)
    return seconds


def fastest(seconds: dict[Layout, float]) -> Layout:
    return min(seconds, key=seconds.__getitem__)
