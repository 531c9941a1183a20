"""Times gradient and distribution matching on Fashion-MNIST-shaped data (28x28x1, 10 classes,
ConvNet).

One iteration of gradient matching at ipc images per class is
    outer_loop matching steps + (outer_loop - 1) x inner_loop training epochs on the synthetic set
with the paper's loops. Only the matching step depends on how classes are batched, so per ipc
this times:

  match_vmap   one matching step (real and synthetic gradients of every class, distance, image
               update) with classes `jax.vmap`ped;
  match_map    the same step with classes one after the other (`jax.lax.map`);
  match_loop   the same step with an unrolled Python loop over classes inside the jitted function;
  epoch        one training epoch of the network on the synthetic set;
  iteration    with --time_iteration, the full `gm_iteration` timed whole, beside the
               composition from the parts
                   outer x match + (outer - 1) x inner x epoch;
               its epochs run in one compiled loop, where the `epoch` program is one call per
               epoch (at ipc 10 a whole iteration takes about five minutes a call);
  dm_<batching>  with --methods=dm, one distribution-matching iteration (fresh network, real and
               synthetic embeddings of every class, image update) per class batching.

Every variant runs once per convolution implementation (--convs, models/conv.py) and in its own
process, so its peak resident memory is its own. Uses the real Fashion-MNIST training set where
found (--data_dir or $FEDJAX_SYN_DATA_DIR), else N(0, 1) data of its shape (recorded; the timing
does not depend on pixel values).

    python -m benchmarks.condense --ipcs=1,10 --repeats=3
    python -m benchmarks.condense --ipcs=1 --batchings=vmap --width=32 --batch_real=64 \\
        --time_iteration
    python -m benchmarks.condense --methods=dm --ipcs=1,10,50 --batchings=vmap,map
"""

import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from benchmarks import harness, tables
from benchmarks.rounds import compiled_flops
from experiments import cli
from fedjax_syn.condense.core import (
    CLASS_BATCHING,
    CondenseConfig,
    image_optimizer,
    init_nets,
    init_synthetic,
    real_batch,
)
from fedjax_syn.condense.distribution_matching import dm_iteration
from fedjax_syn.condense.gradient_matching import gm_iteration, match_loss, train_on_synthetic
from fedjax_syn.core.errors import UserError, check_choice
from fedjax_syn.models.conv import CONV_IMPLS
from fedjax_syn.models.vision import ConvNet

NUM_CLASSES = 10

METHODS = ("gm", "dm")

_IPCS = flags.DEFINE_list("ipcs", ["1", "10", "50"], "Images per class to time.")
_METHODS = flags.DEFINE_list("methods", ["gm"], f"Condensation methods to time, of {METHODS}.")
_BATCHINGS = flags.DEFINE_list("batchings", list(CLASS_BATCHING), "Class batchings to time.")
_CONVS = flags.DEFINE_list("convs", ["xla", "im2col"], "Convolution implementations to time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 128, "ConvNet width.")
_BATCH_REAL = flags.DEFINE_integer("batch_real", 256, "Real images per class per matching step.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default $FEDJAX_SYN_DATA_DIR).")
_TIME_ITERATION = flags.DEFINE_bool(
    "time_iteration", False, "Also time the full gm_iteration (at ipc 10: minutes a call)."
)
_NAME = flags.DEFINE_string("name", "condense", "Results file: benchmarks/results/<name>.json.")
_VARIANT = flags.DEFINE_string("variant", None, "Internal: 'name:ipc:conv' measured here.")


def data() -> tuple[np.ndarray, np.ndarray, str]:
    from fedjax_syn.data.vision import load_vision

    try:
        ds = load_vision("fashion_mnist", _DATA_DIR.value)
        return ds.train_x, ds.train_y, "Fashion-MNIST training set"
    except UserError as e:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60000, 28, 28, 1)).astype(np.float32)
        y = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), 6000)
        return x, y, f"random N(0, 1) data of Fashion-MNIST's shape ({e})"


def program(name: str, ipc: int, conv: str, x, y) -> tuple[Any, tuple]:
    """The jitted program a variant times, and its arguments."""
    mask = jnp.ones(y.shape, bool)
    model = ConvNet(NUM_CLASSES, width=_WIDTH.value, conv=conv)
    batching = name.split("_", 1)[1] if name.startswith(("match_", "dm_")) else "vmap"
    config = CondenseConfig(
        ipc=ipc, batch_real=_BATCH_REAL.value, class_batching=batching, inner_loop=1
    )
    key = jax.random.key(0)
    syn, class_mask = init_synthetic(key, x, y, mask, NUM_CLASSES, ipc, "real")
    opt_state = image_optimizer(config).init(syn)
    nets = init_nets(key, model, x[:1], 1)
    if name.startswith("match_"):

        @jax.jit
        def match(syn, opt_state, nets, key, x, y, mask):
            k_real, k_aug = jax.random.split(key)
            real_x, real_w = real_batch(k_real, x, y, mask, NUM_CLASSES, config.batch_real)
            loss, grads = jax.value_and_grad(match_loss)(
                syn, nets, real_x, real_w, class_mask, k_aug, config=config, model=model
            )
            updates, opt_state = image_optimizer(config).update(grads, opt_state, syn)
            return optax.apply_updates(syn, updates), opt_state, loss

        return match, (syn, opt_state, nets, key, x, y, mask)
    if name.startswith("dm_"):
        dm = CondenseConfig(
            method="dm", ipc=ipc, batch_real=_BATCH_REAL.value, class_batching=batching
        )
        iteration = lambda syn, opt_state, key, x, y, mask: dm_iteration(
            syn, opt_state, x, y, mask, class_mask, key, config=dm, model=model
        )
        return jax.jit(iteration), (syn, image_optimizer(dm).init(syn), key, x, y, mask)
    if name == "epoch":
        epoch = lambda nets, syn, key: train_on_synthetic(
            nets, syn, class_mask, key, config=config, model=model
        )
        return jax.jit(epoch), (nets, syn, key)
    # Classes batched as a condensation run batches them (runs/condense.py, "auto").
    batching = "map" if jax.default_backend() == "cpu" else "vmap"
    full = CondenseConfig(ipc=ipc, batch_real=_BATCH_REAL.value, class_batching=batching)
    iteration = lambda syn, opt_state, key, x, y, mask: gm_iteration(
        syn, opt_state, x, y, mask, class_mask, key, config=full, model=model
    )
    return jax.jit(iteration), (syn, opt_state, key, x, y, mask)


def measure_variant(name: str, ipc: int, conv: str) -> dict[str, Any]:
    """One program timed, with XLA's FLOP count of it and the matmul peak of this process."""
    x, y, source = data()
    fn, args = program(name, ipc, conv, jnp.asarray(x), jnp.asarray(y))
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    _, timing = harness.time_calls(lambda _: compiled(*args), None, _REPEATS.value)
    summary = timing.summary()
    summary["first_s"] += compile_s  # compile + first call, as before
    return {
        "ipc": ipc,
        "conv": conv,
        "variant": name,
        **summary,
        "flops": compiled_flops(compiled),
        "peak_gflops": harness.matmul_peak(2048) / 1e9,
        "data": source,
        "peak_rss_mib": harness.peak_rss_mib(),
    }


def spawn(name: str, ipc: int, conv: str) -> dict[str, Any]:
    """Measures one variant in a fresh process; its last output line is the row."""
    args = [f"--variant={name}:{ipc}:{conv}", f"--repeats={_REPEATS.value}"]
    args += [f"--width={_WIDTH.value}", f"--batch_real={_BATCH_REAL.value}"]
    if _DATA_DIR.value:
        args.append(f"--data_dir={_DATA_DIR.value}")
    return harness.run_worker("benchmarks.condense", args, f"{name}:{ipc}:{conv}")


def count_mapped_work(rows: list[dict[str, Any]]) -> None:
    """Gives each `_map` row the FLOPs of the same program vmapped or looped, in place: XLA's
    cost analysis counts a loop body once, so a `lax.map` over 10 classes reads as one class."""
    flops = {(r["ipc"], r["conv"], r["variant"]): r.get("flops") for r in rows}
    for r in rows:
        if r["variant"].endswith("_map"):
            stem = r["variant"].removesuffix("_map")
            twins = [flops.get((r["ipc"], r["conv"], f"{stem}_{b}")) for b in ("vmap", "loop")]
            twin = next((f for f in twins if f is not None), None)
            if twin is not None:
                r["flops"], r["flops_from_twin"] = twin, True


def composed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seconds per outer iteration from the parts, per (ipc, conv, class batching)."""
    median = {(r["ipc"], r["conv"], r["variant"]): r["median_s"] for r in rows}
    flops = {(r["ipc"], r["conv"], r["variant"]): r.get("flops") for r in rows}
    out = []
    for (ipc, conv, variant), match in median.items():
        if variant.startswith("match_"):
            outer, inner = CondenseConfig(ipc=ipc).loops
            seconds = outer * match + (outer - 1) * inner * median[ipc, conv, "epoch"]
            parts = (flops[ipc, conv, variant], flops[ipc, conv, "epoch"])
            work = None if None in parts else outer * parts[0] + (outer - 1) * inner * parts[1]
            out.append(
                {
                    "flops": work,
                    "ipc": ipc,
                    "conv": conv,
                    "batching": variant.removeprefix("match_"),
                    "outer": outer,
                    "inner": inner,
                    "seconds": seconds,
                }
            )
    return out


def count_iteration_work(rows: list[dict[str, Any]], composition: list[dict[str, Any]]) -> None:
    """Gives each whole-`iteration` row the FLOPs of its composition, in place: XLA's count of
    the whole program takes each loop body (matching steps, epochs) once. Every class batching
    does the same work, so any composition with a count will do."""
    work = {(c["ipc"], c["conv"]): c["flops"] for c in composition if c["flops"]}
    for r in rows:
        if r["variant"] == "iteration" and work.get((r["ipc"], r["conv"])):
            r["flops"], r["flops_from_parts"] = work[r["ipc"], r["conv"]], True


def main(argv: list[str]) -> None:
    del argv
    if _VARIANT.value:
        name, ipc, conv = _VARIANT.value.split(":")
        print(json.dumps(measure_variant(name, int(ipc), conv)))
        return
    for method in _METHODS.value:
        check_choice("condensation method", method, METHODS)
    for batching in _BATCHINGS.value:
        check_choice("class batching", batching, CLASS_BATCHING)
    for conv in _CONVS.value:
        check_choice("convolution implementation", conv, CONV_IMPLS)
    load_start = harness.load_average()
    rows = []
    for ipc in (int(v) for v in _IPCS.value):
        names = []
        if "gm" in _METHODS.value:
            names += [f"match_{b}" for b in _BATCHINGS.value] + ["epoch"]
            if _TIME_ITERATION.value:
                names.append("iteration")
        if "dm" in _METHODS.value:
            names += [f"dm_{b}" for b in _BATCHINGS.value]
        for conv in _CONVS.value:
            for name in names:
                rows.append(r := spawn(name, ipc, conv))
                print(
                    f"{ipc:>4} {conv:<7} {name:<12} first {r['first_s']:8.2f} s, median "
                    f"{r['median_s']:8.3f} s, peak RSS {r['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    count_mapped_work(rows)
    composition = composed(rows)
    count_iteration_work(rows, composition)
    payload = {
        "kind": "condense",
        "width": _WIDTH.value,
        "batch_real": _BATCH_REAL.value,
        "data": rows[0]["data"] if rows else "",
        "load_start": load_start,
        "rows": rows,
        "composed": composition,
    }
    path = harness.write_result(_NAME.value, payload)
    print(f"{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
