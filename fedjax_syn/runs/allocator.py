"""Keeping freed memory in the process for reuse (glibc's malloc; a no-op elsewhere).

XLA:CPU takes every program call's output and temporary buffers from malloc. glibc serves a request
above its mmap threshold (at most 32 MiB unless set) with freshly mapped pages and unmaps them on
free, so each call of a program with such buffers touches new pages: one page fault per 4 KiB,
about 10,000 for the 40 MiB of a 100-client MLP round's stacked weights, every step. A batched
round spent two thirds of its time in them (BENCHMARKS.md, "What made the difference"). Raising
the mmap and trim thresholds keeps freed memory in the heap, where the next call finds it already
mapped.

Process-wide, so entry points call it (experiments.main, benchmarks, the test suite); importing the
library changes nothing.
"""

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
DEFAULT_LIMIT = 1 << 30  # bytes: requests up to this size come from the heap, and as much stays


def keep_freed_memory(limit: int = DEFAULT_LIMIT) -> bool:
    """Serve allocations up to `limit` bytes from the heap and keep up to `limit` freed bytes
    mapped. Returns whether it applied (False where the C library is not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
