"""One condensation run end to end: config -> dataset -> condensed set -> evaluation -> a record.

The condensation table compares, per (dataset, method, images per class), the test accuracy of
fresh networks trained on the condensed set only against the same networks trained on as many
randomly chosen real images per class (Zhao et al., ICLR 2021; Zhao & Bilen, WACV 2023). Both
use the same network initialisations (the same evaluation key), so the comparison isolates the
training data. The record follows the condensation schema of `runs.ledger`.
"""

import contextlib
import os
import pathlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from fedjax_syn.condense import (
    CondenseConfig,
    DSAConfig,
    condense,
    evaluate_synthetic,
    random_subset,
)
from fedjax_syn.condense.augment import TRANSFORMS
from fedjax_syn.condense.core import CLASS_BATCHING
from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.models.conv import CONV_IMPLS
from fedjax_syn.runs.checkpoint import RunCheckpointer, clock, restore_tree, save_tree, time_spent
from fedjax_syn.runs.ledger import run_id, versions

MODELS = ("convnet", "mlp")
# A mirrored glyph is another symbol: these datasets augment without flips.
GLYPHS = ("digits", "mnist", "mnist_5k", "emnist")
# Fields that choose how a condensation run executes, never what it computes.
EXECUTION_FIELDS = ("class_batching", "conv")


def default_config() -> ml_collections.ConfigDict:
    """Every field a condensation run reads, with defaults (the papers' ConvNet protocol)."""
    return ml_collections.ConfigDict(
        {
            "track": "condense",
            "dataset": "digits",
            "data_dir": "",
            "seed": 0,
            "method": "gm",
            "ipc": 10,
            "iterations": 1000,
            "outer_loop": 0,  # gradient matching steps per network; 0: the paper's for this ipc
            "inner_loop": 0,  # training epochs between them; 0: the paper's
            "num_nets": 1,  # fresh networks per condensation iteration
            "batch_real": 256,  # real images per class per matching step
            "init": "real",  # synthetic initialisation: "real" images or "noise"
            "dsa": False,
            "model": "convnet",
            "width": 128,
            "depth": 3,
            "hidden": (32,),
            "eval_nets": 5,
            "eval_epochs": 300,
            "eval_batch_size": 256,
            "eval_lr": 0.01,
            "test_size": 0,  # evaluate on the first n test examples; 0: all
            "class_batching": "auto",  # how per-class losses are batched (same results)
            "conv": "auto",  # ConvNet convolutions (models/conv.py; same results)
        }
    )


def _model(cfg, num_classes: int, conv: str):
    from fedjax_syn.models.vision import MLP, ConvNet

    check_choice("model", cfg.model, MODELS)
    if cfg.model == "convnet":
        return ConvNet(num_classes, cfg.width, depth=cfg.depth, conv=conv)
    return MLP(num_classes, tuple(cfg.hidden))


def _condensation_conv(cfg) -> str:
    """The convolution of the networks condensation runs through: for "auto", XLA's own under
    distribution matching, whose iterations are mostly forward passes over 256 real images a
    class, where it beats im2col 1.1-1.8x on CPU (2.3 s against 4.2 s an iteration at ipc 1);
    the networks that are trained (gradient matching, evaluation) keep "auto"'s im2col on CPU."""
    return "xla" if cfg.conv == "auto" and cfg.method == "dm" else cfg.conv


def _class_batching(cfg, backend: str | None = None) -> str:
    """The class batching to run: for "auto", classes one after the other on CPU, vmapped
    elsewhere. On one CPU core the vmapped classes' batched convolutions are slower than a
    compiled loop over classes: a distribution matching iteration 3.9 s vmapped against 2.3 s
    mapped at ipc 1, a gradient matching step 19.1 s vmapped, 17.0 s in a Python loop and 10.8 s
    mapped at ipc 10 (BENCHMARKS.md, "Dataset condensation"). `backend` None: the default one."""
    check_choice("class_batching", cfg.class_batching, ("auto", *CLASS_BATCHING))
    if cfg.class_batching != "auto":
        return cfg.class_batching
    return "map" if (backend or jax.default_backend()) == "cpu" else "vmap"


def _dsa_config(cfg) -> DSAConfig | None:
    if not cfg.dsa:
        return None
    if cfg.dataset in GLYPHS:
        return DSAConfig(strategy=tuple(t for t in TRANSFORMS if t != "flip"))
    return DSAConfig()


def _options(cfg, class_batching: str) -> dict[str, Any]:
    """The run's `CondenseConfig` fields, as `condense` takes them (loop counts 0: the paper's)."""
    return dict(
        method=cfg.method,
        ipc=cfg.ipc,
        iterations=cfg.iterations,
        dsa=cfg.dsa,
        num_nets=cfg.num_nets,
        batch_real=cfg.batch_real,
        init=cfg.init,
        class_batching=class_batching,
        outer_loop=cfg.outer_loop or None,
        inner_loop=cfg.inner_loop or None,
    )


def check_options(cfg) -> None:
    """Raises `UserError` for condensation options that `CondenseConfig` would refuse only once
    the run has loaded its data. Touches no device: "auto" class batching is checked as on the
    CPU (it is resolved by backend when the run starts)."""
    check_choice("conv", cfg.conv, CONV_IMPLS)
    CondenseConfig(**_options(cfg, _class_batching(cfg, backend="cpu")))


def identity(cfg) -> dict:
    """The config a condensation run is identified by (execution fields left out)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_FIELDS}


def run(
    cfg,
    *,
    on_iteration: Callable[[int, float], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
) -> dict[str, Any]:
    """Condenses the training set, evaluates it and a random real subset; returns the record.

    With `checkpoint_dir`, the synthetic images and their optimiser state are saved after every
    `checkpoint_every`-th iteration and the last (never with 0), and a run finding a checkpoint
    there continues after its iteration (recorded as `resumed_after`), ending where it would have
    uninterrupted; with 0 too, so that no progress is thrown away."""
    with contextlib.ExitStack() as stack:
        ckpt = None
        if checkpoint_dir is not None and (
            checkpoint_every > 0 or pathlib.Path(checkpoint_dir).exists()
        ):
            ckpt = stack.enter_context(RunCheckpointer(checkpoint_dir))
        return _run(cfg, on_iteration, ckpt, checkpoint_every)


def _run(cfg, on_iteration, ckpt: RunCheckpointer | None, every: int) -> dict[str, Any]:
    from fedjax_syn.data.vision import load_vision

    check(cfg.eval_nets >= 1, f"eval_nets must be >= 1, got {cfg.eval_nets}")
    check(cfg.test_size >= 0, f"test_size must be >= 0 (0: all), got {cfg.test_size}")
    start = clock()
    earlier = {"elapsed_s": 0.0, "cpu_s": 0.0}  # spent by the processes a checkpoint came from

    def spent() -> dict[str, float | None]:
        elapsed_s, cpu_s = time_spent(start, earlier["elapsed_s"], earlier["cpu_s"])
        return {"elapsed_s": elapsed_s, "cpu_s": cpu_s}

    data = load_vision(cfg.dataset, cfg.data_dir or None)
    model = _model(cfg, data.num_classes, cfg.conv)
    dsa = _dsa_config(cfg)
    condense_key, eval_key = jax.random.split(jax.random.key(cfg.seed))
    options = _options(cfg, _class_batching(cfg))
    stamps = [time.perf_counter()]
    resumed: list[int] = []

    def on_step(i: int, loss: float) -> None:
        stamps.append(time.perf_counter())
        if on_iteration is not None:
            on_iteration(i, loss)

    def resume(template):
        found = restore_tree(ckpt, template)
        if found is None:
            return None
        step, tree, meta = found
        resumed.append(step)
        # Checkpoints saved before times were kept: wall time undercounted, CPU time unknown.
        earlier.update(elapsed_s=meta.get("elapsed_s", 0.0), cpu_s=meta.get("cpu_s"))
        return step, tree

    def save(done: int, state) -> None:
        if done % every == 0 or done == cfg.iterations:
            save_tree(ckpt, done, state, {"iterations": done, **spent()})

    syn_x, syn_y = condense(
        data.train_x,
        data.train_y,
        data.num_classes,
        key=condense_key,
        model=_model(cfg, data.num_classes, _condensation_conv(cfg)),
        on_iteration=on_step,
        **({"resume": resume} if ckpt is not None else {}),
        **({"save": save} if ckpt is not None and every > 0 else {}),
        **options,
        **({"dsa_config": dsa} if dsa else {}),
    )
    steps = np.diff(stamps)  # the first iteration includes compilation
    real_x, real_y = random_subset(
        np.random.default_rng(cfg.seed), data.train_x, data.train_y, data.num_classes, cfg.ipc
    )
    test = slice(cfg.test_size or None)
    evaluation = dict(
        num_nets=cfg.eval_nets,
        epochs=cfg.eval_epochs,
        batch_size=cfg.eval_batch_size,
        lr=cfg.eval_lr,
        dsa=dsa,
    )
    metrics = {}
    for name, (x, y) in {"syn_acc": (syn_x, syn_y), "random_acc": (real_x, real_y)}.items():
        test_x, test_y = data.test_x[test], data.test_y[test]
        acc = evaluate_synthetic(eval_key, model, x, y, test_x, test_y, **evaluation)
        metrics |= {name: float(np.mean(acc)), f"{name}_std": float(np.std(acc))}
        metrics[f"{name}_per_net"] = [float(a) for a in acc]
    config, times = cfg.to_dict(), spent()
    return {
        "run_id": run_id(identity(cfg)),
        "track": "condense",
        "dataset": cfg.dataset,
        "method": cfg.method,
        "ipc": cfg.ipc,
        "seed": cfg.seed,
        "loops": CondenseConfig(**options).loops if cfg.method == "gm" else None,
        "metrics": metrics,
        "config": config,
        "seconds_per_iteration": statistics.median(steps[1:]) if len(steps) > 1 else None,
        "first_iteration_s": float(steps[0]) if len(steps) else None,
        "resumed_after": resumed[0] if resumed else None,
        "condense_time_s": stamps[-1] - stamps[0],
        "wall_time_s": times["elapsed_s"],
        "cpu_time_s": times["cpu_s"],
        "versions": versions(),
    }
