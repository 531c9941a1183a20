"""Run checkpoints on orbax-checkpoint, with an integrity check and fallback to the last good step.

A checkpoint holds `state` (any pytree of arrays: server and client states, optax states, keys) and
`meta` (JSON: round, curves), so a preempted sweep resumes where it stopped; `save_state` /
`restore_state` store a run program's `State` this way, `save_tree` / `restore_tree` any pytree
(a condensation run's synthetic images and their optimiser state).

Atomicity is orbax's: step N is written to `N.orbax-checkpoint-tmp` and renamed when complete, so a
save killed midway leaves no step. Integrity is ours: orbax does not checksum array data, so `save`
stores a sha256 over every leaf and `meta`, and `restore_latest` falls back, with one warning line,
to the previous step when a step fails to restore or verify; unusable steps are renamed
`N.unusable-<time>` at the next save (orbax refuses steps at or below its latest). numpy scalars
come back as 0-d arrays. In multi-process runs arrays are not fully addressable and the checksum
is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fedjax_syn.core.errors import check

_log = logging.getLogger(__name__)


def _is_typed_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def state_digest(state: Any, meta: dict) -> str:
    """sha256 over the state's leaves (dtype, shape, bytes, in tree order) and the JSON of meta."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        tag = ""
        if _is_typed_key(leaf):
            tag, leaf = str(leaf.dtype), jax.random.key_data(leaf)
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{tag}|{array.dtype.str}|{array.shape};".encode())
        h.update(array.tobytes())
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def _fully_addressable(state: Any) -> bool:
    return all(getattr(leaf, "is_fully_addressable", True) for leaf in jax.tree.leaves(state))


def _storable(leaf: Any) -> Any:
    return np.asarray(leaf) if isinstance(leaf, np.generic) else leaf


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, np.generic):
        return jax.ShapeDtypeStruct((), leaf.dtype)
    return ocp.utils.to_shape_dtype_struct(leaf)


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}"


class RunCheckpointer:
    """Saves and restores (step, state, meta) under one directory, keeping the newest steps."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        check(max_to_keep >= 1, f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()  # orbax needs an absolute path
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )
        self._unusable: set[int] = set()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Writes step `step` and returns once it is complete on disk."""
        check(
            isinstance(step, int) and step >= 0, f"checkpoint step must be an int >= 0, got {step}"
        )
        self._set_aside_unusable()
        latest = self._manager.latest_step()
        check(
            latest is None or step > latest,
            f"checkpoint directory {self.directory} already holds step {latest} >= {step}; "
            "resume from it or use a fresh directory",
        )
        state = jax.tree.map(_storable, state)
        digest = state_digest(state, meta) if _fully_addressable(state) else None
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(meta),
                integrity=ocp.args.JsonSave({"sha256": digest}),
            ),
        )
        self._manager.wait_until_finished()

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest step that restores and verifies, else None.

        `abstract_state` is a template with the saved structure: concrete arrays or
        `jax.ShapeDtypeStruct`s (their shardings decide where restored arrays live).
        """
        abstract = jax.tree.map(_abstract, abstract_state)
        self._manager.reload()
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract),
                        meta=ocp.args.JsonRestore(),
                        integrity=ocp.args.JsonRestore(),
                    ),
                )
                problem = _verify(restored)
            except Exception as e:  # orbax and tensorstore raise many types for damaged files
                problem = _one_line(e)
            if problem is None:
                return step, restored.state, restored.meta
            self._unusable.add(step)
            _log.warning(
                "checkpoint step %d in %s is unusable (%s); falling back to an older step",
                step,
                self.directory,
                problem,
            )
        return None

    def _set_aside_unusable(self) -> None:
        """Renames steps that failed to restore, so that they no longer count as steps."""
        for step in sorted(self._unusable):
            source = self.directory / str(step)
            if source.exists():
                source.rename(self.directory / f"{step}.unusable-{time.time_ns()}")
        if self._unusable:
            self._unusable.clear()
            self._manager.reload()

    def close(self) -> None:
        """Waits for pending writes and releases orbax's background resources."""
        self._manager.close()

    def __enter__(self) -> RunCheckpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _verify(restored: Any) -> str | None:
    """Why a restored step cannot be trusted, or None when its checksum matches."""
    expected = restored.integrity.get("sha256")
    if expected is None:
        return None  # saved from a multi-process run: nothing to verify against
    actual = state_digest(restored.state, restored.meta)
    if actual != expected:
        return f"checksum mismatch: saved {expected[:12]}..., restored data gives {actual[:12]}..."
    return None


def _host_copy(leaf: Any) -> Any:
    """A host copy, so that the next round may donate (invalidate) the device buffer."""
    if _is_typed_key(leaf):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf  # multi-process: orbax saves the shards; the save completes before we go on
    return np.array(leaf)


def _template(leaf: Any) -> Any:
    return jax.random.key_data(leaf) if _is_typed_key(leaf) else leaf


def _rewrap(restored: Any, template: Any) -> Any:
    if _is_typed_key(template):
        return jax.random.wrap_key_data(restored, impl=jax.random.key_impl(template))
    return restored


def _arrays(state: Any) -> dict:
    return {"server": state.server, "clients": state.clients, "key": state.key}


def _map_curves(fn, curves: Any) -> Any:
    """`fn` over the numbers of nested curves (dicts of lists), None included."""
    if isinstance(curves, dict):
        return {k: _map_curves(fn, v) for k, v in curves.items()}
    if isinstance(curves, list):
        return [_map_curves(fn, v) for v in curves]
    return fn(curves)


def _json_number(x: Any) -> Any:
    """NaN (a setting without examples) -> None, as in the ledger."""
    return None if isinstance(x, float) and math.isnan(x) else x


Clock = tuple[float, float]  # wall (perf_counter) and CPU (process_time) seconds


def clock() -> Clock:
    """This process's wall and CPU clocks now: where the time it spends on a run starts."""
    return time.perf_counter(), time.process_time()


def time_spent(
    start: Clock, earlier_s: float = 0.0, earlier_cpu_s: float | None = 0.0
) -> tuple[float, float | None]:
    """Wall and CPU seconds spent on a run: this process's since `start`, plus what the processes
    before it spent, as its checkpoint kept them (CPU None: one of them did not measure it)."""
    wall, cpu = clock()
    wall_s = earlier_s + wall - start[0]
    cpu_s = None if earlier_cpu_s is None else earlier_cpu_s + cpu - start[1]
    return wall_s, cpu_s


def save_state(
    ckpt: RunCheckpointer, state: Any, elapsed_s: float, cpu_s: float | None = None
) -> None:
    """Writes `state` as step `state.round` (returns when it is on disk), with the wall and CPU
    seconds spent on it so far (`cpu_s` None: not measured)."""
    meta = {
        "round": state.round,
        "curves": _map_curves(_json_number, state.curves),
        "eval_rounds": list(state.eval_rounds),
        "dropped": state.dropped,
        "elapsed_s": elapsed_s,
        "cpu_s": cpu_s,
    }
    ckpt.save(state.round, jax.tree.map(_host_copy, _arrays(state)), meta)


def restore_state(ckpt: RunCheckpointer, template: Any) -> Any | None:
    """The newest intact checkpointed state shaped like `template`, or None when there is none."""
    arrays = _arrays(template)
    found = ckpt.restore_latest(jax.tree.map(_template, arrays))
    if found is None:
        return None
    step, restored, meta = found
    restored = jax.tree.map(_rewrap, restored, arrays)
    check(meta["round"] == step, f"checkpoint step {step} holds round {meta['round']}")
    return dataclasses.replace(
        template,
        server=restored["server"],
        clients=restored["clients"],
        key=restored["key"],
        round=step,
        curves=_map_curves(lambda x: float("nan") if x is None else x, meta["curves"]),
        eval_rounds=list(meta["eval_rounds"]),
        dropped=meta.get("dropped", template.dropped),  # absent from checkpoints saved before it
        elapsed_s=float(meta["elapsed_s"]),
        cpu_s=meta.get("cpu_s"),  # absent from checkpoints saved before it: unknown
    )


def save_tree(ckpt: RunCheckpointer, step: int, tree: Any, meta: dict | None = None) -> None:
    """Writes any pytree of arrays as step `step`, by its leaves: containers orbax does not
    restore as themselves (optax's named tuples) come back through the template's structure."""
    leaves = jax.tree.leaves(tree)
    ckpt.save(step, {str(i): _host_copy(leaf) for i, leaf in enumerate(leaves)}, meta or {})


def restore_tree(ckpt: RunCheckpointer, template: Any) -> tuple[int, Any, dict] | None:
    """(step, tree shaped like `template`, its meta) of the newest intact step, or None."""
    leaves, treedef = jax.tree.flatten(template)
    found = ckpt.restore_latest({str(i): _template(leaf) for i, leaf in enumerate(leaves)})
    if found is None:
        return None
    step, restored, meta = found
    tree = jax.tree.unflatten(
        treedef, [_rewrap(restored[str(i)], leaf) for i, leaf in enumerate(leaves)]
    )
    return step, tree, meta
