"""Mapping a per-client function over the clients axis.

`chunk=None` vmaps every client at once (best for small models and many clients); `chunk=k` runs
`jax.lax.map(..., batch_size=k)`, a scan over vmapped groups of k clients, which bounds memory.
It also saves work when clients differ in size: a vmapped `while_loop` (local training's active
steps) runs until its busiest client is done, so every client of a group runs as many steps as the
largest, while groups of one run only their own (BENCHMARKS.md, "One client at a time"). Both give
the same numbers; only speed and memory differ.

Groups of one (`chunk=1`) run the per-client function itself under the scan, not a vmap of one:
a vmapped `while_loop` selects its whole carry on every iteration and a vmapped `lax.cond` runs
both branches, while unbatched they run only the work they name. A vmap of one
(`vmap_single=True`) is still there as a layout: where clients neither branch nor loop for
different lengths it can be the faster program (a ConvNet round on one CPU core,
BENCHMARKS.md, "What made the difference").
"""

from collections.abc import Callable
from typing import Any

import jax


def map_clients(
    fn: Callable[..., Any], args: tuple, chunk: int | None = None, vmap_single: bool = False
) -> Any:
    """fn(*per_client_args) for every client; every leaf of `args` has a leading clients axis."""
    if chunk is None:
        return jax.vmap(fn)(*args)
    if chunk == 1 and not vmap_single:
        return jax.lax.map(lambda a: fn(*a), args)
    return jax.lax.map(lambda a: fn(*a), args, batch_size=chunk)
