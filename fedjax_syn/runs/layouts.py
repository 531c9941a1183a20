"""The client layouts the run pipeline has measured (`fedjax_syn.engine.layout`), kept in one JSON
file so that a rerun, or the next seed of a sweep, reuses the choice instead of timing again.

`cfg.client_chunk = AUTO` asks for a measured layout. The file maps a program's `shape_key` to
{"chunk": k or null, "vmap_single": bool, "seconds": {layout: median seconds}} (an entry without
"vmap_single" predates that candidate and is measured again). It is a cache: a missing,
unreadable or corrupt file counts as empty, and one that cannot be written is left alone (the run
goes on with its measured layout).
"""

import json
import logging
import pathlib
from collections.abc import Callable
from typing import Any

from fedjax_syn.core.errors import UserError
from fedjax_syn.data.graphs import default_cache_dir
from fedjax_syn.engine import layout
from fedjax_syn.runs.ledger import write_atomic

AUTO = -1  # cfg.client_chunk: choose the layout by measuring it
_log = logging.getLogger(__name__)


def default_path() -> pathlib.Path:
    """`layouts.json` in the cache folder (`FEDJAX_SYN_CACHE_DIR`, else ~/.cache/fedjax_syn)."""
    return default_cache_dir() / "layouts.json"


def _valid(entry: Any) -> bool:
    if not isinstance(entry, dict) or "chunk" not in entry:
        return False
    chunk = entry["chunk"]
    if not isinstance(entry.get("vmap_single"), bool):
        return False
    return chunk is None or (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0)


def read_choices(path: pathlib.Path) -> dict[str, Any]:
    """The stored choices; {} when the file is missing or not a JSON object."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def choose_layout(
    key: str,
    round_for: Callable[[layout.Layout], Callable[[], Any]],
    num_clients: int,
    path: pathlib.Path | None = None,
) -> layout.Layout:
    """The stored layout for `key`, or else the fastest of `layout.candidates(num_clients)`
    timed with `round_for`, stored under `key`."""
    path = default_path() if path is None else path
    stored = read_choices(path)
    if _valid(stored.get(key)):
        return stored[key]["chunk"], stored[key]["vmap_single"]
    seconds = layout.time_layouts(round_for, layout.candidates(num_clients))
    best = layout.fastest(seconds)
    stored[key] = {
        "chunk": best[0],
        "vmap_single": best[1],
        "seconds": {layout.describe(k): s for k, s in seconds.items()},
    }
    try:
        write_atomic(path, json.dumps(stored, indent=1, sort_keys=True) + "\n")
    except (UserError, OSError) as e:
        _log.warning("client layout not stored: %s", e)
    return best
