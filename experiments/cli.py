"""Command-line plumbing shared by every entry point.

A user error (bad flag, bad config value, missing or corrupt data) is printed as one line
`error: ...` on stderr and the process exits with status 2 — never a traceback.
"""

import os
import pathlib
import sys
from collections.abc import Callable
from typing import NoReturn

import filelock
import jax
from absl import app, flags

from fedjax_syn.core.errors import UserError
from fedjax_syn.runs.allocator import keep_freed_memory

_KEEP_FREED = flags.DEFINE_bool(
    "keep_freed_memory",
    True,
    "Keep freed memory mapped for reuse (glibc): spares the page faults of large XLA:CPU "
    "buffers on every program call (fedjax_syn/runs/allocator.py).",
)

_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    os.environ.get("JAX_COMPILATION_CACHE_DIR")
    or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "fedjax_syn", "jax"),
    "JAX's persistent compilation cache: a rerun, or the next seed of a sweep, loads the "
    "programs instead of compiling them again. Empty: off.",
)
_CACHE_MAX_GB = flags.DEFINE_float(
    "compilation_cache_max_gb",
    2.0,
    "Size bound of the compilation cache folder (GB): past it, the least recently used programs "
    "are deleted. With a bound, JAX also locks the folder while it reads or writes an entry, so "
    "processes sharing it (a sweep on every core) never read a half-written program.",
)


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def adopt_unbounded_entries(folder: str | os.PathLike) -> int:
    """Dates every compilation cache entry that has no access-time file; returns how many.

    JAX's bounded cache keeps an access time beside each entry and reads every one of them to
    evict; an entry written without a bound (by an earlier version of this toolkit, or by JAX's
    default) has none, and then every later write fails (a warning each, nothing cached). The
    entry's modification time stands in, so the oldest go first. Under JAX's own lock."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return 0
    adopted = 0
    with filelock.FileLock(folder / ".lockfile"):
        for entry in folder.glob("*-cache"):
            atime = folder / f"{entry.name.removesuffix('-cache')}-atime"
            if not atime.exists():
                atime.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))
                adopted += 1
    return adopted


def fail_bad_override(error: Exception) -> NoReturn:
    """ml_collections raises AttributeError / KeyError for a `--config.a.b` naming an absent
    field, when it parses the config: at flag definition for the default config, else with the
    other flags."""
    given = " ".join(a for a in sys.argv if a.startswith("--config."))
    fail(
        f"a --config override names a field the config lacks ({given}: {error}); an option of "
        "an algorithm's group that the config leaves empty, e.g. fedlog.beta, is set through "
        "--grid='fedlog.beta=VALUE'"
    )


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that reports a bad flag or a stray argument in one line."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections: an override of an absent field
        fail_bad_override(e)
    if len(rest) > 1:
        fail(f"unexpected arguments: {' '.join(rest[1:])}")
    return rest


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with user errors reported as one line, after the process-wide
    allocator setting (`--keep_freed_memory`) and the persistent compilation cache
    (`--compilation_cache_dir`)."""

    def guarded(argv: list[str]) -> None:
        if _KEEP_FREED.value:
            keep_freed_memory()
        if _CACHE_DIR.value:
            folder = os.path.expanduser(_CACHE_DIR.value)
            jax.config.update("jax_compilation_cache_dir", folder)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
            if _CACHE_MAX_GB.value <= 0:
                fail(f"--compilation_cache_max_gb must be > 0, got {_CACHE_MAX_GB.value}")
            jax.config.update("jax_compilation_cache_max_size", int(_CACHE_MAX_GB.value * 1e9))
            adopt_unbounded_entries(folder)
        try:
            main(argv)
        except UserError as e:
            fail(str(e))

    app.run(guarded, flags_parser=parse_flags)
