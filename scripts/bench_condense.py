"""Times gradient matching on Fashion-MNIST-shaped data (28x28x1, 10 classes, ConvNet).

One iteration of gradient matching at ipc images per class is
    outer_loop matching steps + (outer_loop - 1) x inner_loop training epochs on the synthetic set
with the paper's loops (ipc 1: 1 x 1, ipc 10: 10 x 50, ipc 50: 50 x 10). Only the matching step
depends on how classes are batched, so the script times, per ipc:

  match[vmap]   one matching step (real + synthetic gradients of every class, distance, image
                update) with classes `jax.vmap`ped;
  match[map]    the same step with classes one after the other (`jax.lax.map`);
  match[loop]   the same step with an unrolled Python loop over classes inside the jitted function;
  epoch         one training epoch of the network on the synthetic set;
  iteration     composed: outer x match + (outer - 1) x inner x epoch; for ipc 1 (one matching
                step, no training) --time_iteration also times the full `gm_iteration` as a check.

Every variant runs once per convolution implementation (--convs, models/conv.py: XLA's native
convolution vs im2col patches @ kernel) and the script prints their ratios side by side.
Each variant runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
Times are medians over --repeats calls after one compile-and-run call. Uses the real Fashion-MNIST
training set when it is found (--data_dir or $FEDJAX_SYN_DATA_DIR), else N(0, 1) data of that
shape (said in the output; the timing does not depend on pixel values).

  PYTHONPATH=. python scripts/bench_condense.py --ipcs=1,10 --repeats=3
  PYTHONPATH=. python scripts/bench_condense.py --ipcs=1 --batchings=vmap --width=32 \
      --batch_real=64 --time_iteration
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from fedjax_syn.condense.core import (
    CLASS_BATCHING,
    CondenseConfig,
    image_optimizer,
    init_nets,
    init_synthetic,
    real_batch,
)
from fedjax_syn.condense.gradient_matching import gm_iteration, match_loss, train_on_synthetic
from fedjax_syn.core.errors import UserError, check_choice
from fedjax_syn.models.conv import CONV_IMPLS
from fedjax_syn.models.vision import ConvNet

_IPCS = flags.DEFINE_list("ipcs", ["1", "10", "50"], "Images per class to time.")
_BATCHINGS = flags.DEFINE_list("batchings", list(CLASS_BATCHING), "Class batchings to time.")
_CONVS = flags.DEFINE_list("convs", ["xla", "im2col"], "Convolution implementations to time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant (median reported).")
_WIDTH = flags.DEFINE_integer("width", 128, "ConvNet width.")
_BATCH_REAL = flags.DEFINE_integer("batch_real", 256, "Real images per class per matching step.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default $FEDJAX_SYN_DATA_DIR).")
_TIME_ITERATION = flags.DEFINE_bool(
    "time_iteration", False, "Also time the full gm_iteration where it is one matching step."
)
_VARIANT = flags.DEFINE_string("variant", None, "Internal: run one variant and print JSON.")

NUM_CLASSES = 10


def _data() -> tuple[np.ndarray, np.ndarray, str]:
    from fedjax_syn.data.vision import load_vision

    try:
        ds = load_vision("fashion_mnist", _DATA_DIR.value)
        return ds.train_x, ds.train_y, "Fashion-MNIST training set"
    except UserError as e:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60000, 28, 28, 1)).astype(np.float32)
        y = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), 6000)
        return x, y, f"random N(0, 1) data of Fashion-MNIST's shape ({e})"


def _median_time(fn, args, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of `repeats` further calls), seconds."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _run_variant(name: str, ipc: int, conv: str) -> dict:
    x, y, source = _data()
    x, y = jnp.asarray(x), jnp.asarray(y)
    mask = jnp.ones(y.shape, bool)
    model = ConvNet(NUM_CLASSES, width=_WIDTH.value, conv=conv)
    batching = name.removeprefix("match_") if name.startswith("match_") else "vmap"
    config = CondenseConfig(
        ipc=ipc, batch_real=_BATCH_REAL.value, class_batching=batching, inner_loop=1
    )
    key = jax.random.key(0)
    syn, class_mask = init_synthetic(key, x, y, mask, NUM_CLASSES, ipc, "real")
    opt_state = image_optimizer(config).init(syn)
    nets = init_nets(key, model, x[:1], 1)

    if name.startswith("match_"):

        @jax.jit
        def fn(syn, opt_state, nets, key, x, y, mask):
            k_real, k_aug = jax.random.split(key)
            real_x, real_w = real_batch(k_real, x, y, mask, NUM_CLASSES, config.batch_real)
            loss, grads = jax.value_and_grad(match_loss)(
                syn, nets, real_x, real_w, class_mask, k_aug, config=config, model=model
            )
            updates, opt_state = image_optimizer(config).update(grads, opt_state, syn)
            return optax.apply_updates(syn, updates), opt_state, loss

        args = (syn, opt_state, nets, key, x, y, mask)
    elif name == "epoch":
        fn = jax.jit(
            lambda nets, syn, key: train_on_synthetic(
                nets, syn, class_mask, key, config=config, model=model
            )
        )
        args = (nets, syn, key)
    else:  # full iteration with the paper's loops
        full = CondenseConfig(ipc=ipc, batch_real=_BATCH_REAL.value)
        fn = jax.jit(
            lambda syn, opt_state, key, x, y, mask: gm_iteration(
                syn, opt_state, x, y, mask, class_mask, key, config=full, model=model
            )
        )
        args = (syn, opt_state, key, x, y, mask)
    first, median = _median_time(fn, args, _REPEATS.value)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_s": first, "median_s": median, "peak_rss_mib": peak_mib, "data": source}


def _spawn(name: str, ipc: int, conv: str) -> dict:
    argv = [sys.executable, __file__, f"--variant={name}:{ipc}:{conv}"]
    argv += [f"--repeats={_REPEATS.value}", f"--width={_WIDTH.value}"]
    argv += [f"--batch_real={_BATCH_REAL.value}"]
    if _DATA_DIR.value:
        argv.append(f"--data_dir={_DATA_DIR.value}")
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    if _VARIANT.value:
        name, ipc, conv = _VARIANT.value.split(":")
        print(json.dumps(_run_variant(name, int(ipc), conv)))
        return
    for batching in _BATCHINGS.value:
        check_choice("class batching", batching, CLASS_BATCHING)
    for conv in _CONVS.value:
        check_choice("convolution implementation", conv, CONV_IMPLS)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start; jax {jax.__version__} "
        f"({jax.default_backend()}); ConvNet width {_WIDTH.value}, batch_real {_BATCH_REAL.value}"
    )
    header = (
        f"{'ipc':>4} {'conv':<7} {'variant':<12} {'compile+1st s':>13} {'median s':>9} "
        f"{'peak RSS MiB':>12}"
    )
    print(header)
    data = None
    for ipc in (int(v) for v in _IPCS.value):
        outer, inner = CondenseConfig(ipc=ipc).loops
        names = [f"match_{b}" for b in _BATCHINGS.value] + ["epoch"]
        if outer == 1 and _TIME_ITERATION.value:
            names.append("iteration")
        results = {}
        for conv in _CONVS.value:
            for name in names:
                results[conv, name] = r = _spawn(name, ipc, conv)
                data = r["data"]
                print(
                    f"{ipc:>4} {conv:<7} {name:<12} {r['first_s']:>13.2f} {r['median_s']:>9.3f} "
                    f"{r['peak_rss_mib']:>12.0f}",
                    flush=True,
                )
            epoch = results[conv, "epoch"]["median_s"]
            for batching in _BATCHINGS.value:
                match = results[conv, f"match_{batching}"]["median_s"]
                composed = outer * match + (outer - 1) * inner * epoch
                print(
                    f"{ipc:>4} {conv:<7} iteration[{batching}] composed ({outer} x {inner}): "
                    f"{composed:.2f} s"
                )
        for conv in _CONVS.value:
            base = results.get((conv, "match_vmap"))
            for batching in (b for b in _BATCHINGS.value if b != "vmap" and base):
                ratio = results[conv, f"match_{batching}"]["median_s"] / base["median_s"]
                print(f"{ipc:>4} {conv:<7} match step: {batching} / vmap = {ratio:.2f}")
        if len(_CONVS.value) > 1:
            first = _CONVS.value[0]
            for conv in _CONVS.value[1:]:
                for name in names:
                    ratio = results[first, name]["median_s"] / results[conv, name]["median_s"]
                    print(f"{ipc:>4} {name}: {first} / {conv} = {ratio:.2f}")
    print(f"data: {data}")


if __name__ == "__main__":
    app.run(main)
