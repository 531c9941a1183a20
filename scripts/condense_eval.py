"""Condenses an image dataset and evaluates the synthetic set the way the condensation papers do.

Trains --num_eval_nets fresh networks on the synthetic set only and reports the mean ± std
(population) test accuracy, next to the same evaluation of a random real subset of the same size
(ipc real images per class). Appends one record to the results ledger (--ledger).

  PYTHONPATH=. python scripts/condense_eval.py --dataset=fashion_mnist --method=gm --ipc=10 \
      --iterations=1000 --ledger=runs/condense.jsonl
  PYTHONPATH=. python scripts/condense_eval.py --dataset=digits --model=mlp --ipc=10 --iterations=20

Without --outer_loop/--inner_loop, gradient matching uses the paper's loops for ipc 1, 10, 20, 30,
40 and 50. --class_batching picks how per-class gradients are batched (see
benchmarks/condense.py for their cost); --test_size evaluates on the first n test examples only,
to bound the cost of evaluation on a CPU.

Reference accuracies (ConvNet, 1000 iterations, 300 evaluation epochs): Fashion-MNIST gradient
matching 70.5 (ipc 1) and 82.3 (ipc 10) (Zhao et al., ICLR 2021).
"""

import statistics
import time

import jax
import numpy as np
from absl import flags

from fedjax_syn import cli
from fedjax_syn.condense import (
    CondenseConfig,
    DSAConfig,
    condense,
    evaluate_synthetic,
    random_subset,
)
from fedjax_syn.condense.augment import TRANSFORMS
from fedjax_syn.data.vision import VISION_DATASETS, load_vision
from fedjax_syn.models.conv import CONV_IMPLS
from fedjax_syn.models.vision import MLP, ConvNet
from fedjax_syn.results import append_record, run_id, versions

_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", list(VISION_DATASETS), "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default $FEDJAX_SYN_DATA_DIR).")
_METHOD = flags.DEFINE_enum("method", "gm", ["gm", "dm"], "Gradient or distribution matching.")
_IPC = flags.DEFINE_integer("ipc", 10, "Synthetic images per class.")
_ITERATIONS = flags.DEFINE_integer("iterations", 1000, "Condensation iterations (fresh nets).")
_OUTER_LOOP = flags.DEFINE_integer("outer_loop", None, "Matching steps per network (gm).")
_INNER_LOOP = flags.DEFINE_integer("inner_loop", None, "Training epochs between them (gm).")
_NUM_NETS = flags.DEFINE_integer("num_nets", 1, "Fresh networks per iteration (vmapped).")
_BATCH_REAL = flags.DEFINE_integer("batch_real", 256, "Real images per class per matching step.")
_INIT = flags.DEFINE_enum("init", "real", ["real", "noise"], "Synthetic initialisation.")
_CLASS_BATCHING = flags.DEFINE_enum(
    "class_batching", "vmap", ["vmap", "map", "loop"], "How per-class losses are batched."
)
_DSA = flags.DEFINE_bool("dsa", False, "Differentiable siamese augmentation (also in evaluation).")
_MODEL = flags.DEFINE_enum("model", "convnet", ["convnet", "mlp"], "Network architecture.")
_WIDTH = flags.DEFINE_integer("width", 128, "ConvNet channels / MLP hidden units.")
_DEPTH = flags.DEFINE_integer("depth", 3, "ConvNet blocks / MLP hidden layers.")
_CONV = flags.DEFINE_enum(
    "conv", "auto", list(CONV_IMPLS), "ConvNet convolutions (models/conv.py; same results)."
)
_NUM_EVAL_NETS = flags.DEFINE_integer("num_eval_nets", 5, "Fresh networks trained to evaluate.")
_EVAL_EPOCHS = flags.DEFINE_integer("eval_epochs", 300, "Training epochs of each evaluated net.")
_TEST_SIZE = flags.DEFINE_integer(
    "test_size", None, "Evaluate on the first this many test examples (default: all)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of condensation, random subset and evaluation.")
_LEDGER = flags.DEFINE_string("ledger", None, "Results ledger (JSON lines) to append to.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 10, "Print the loss every this many iterations.")

_GLYPHS = ("digits", "mnist", "emnist")  # a mirrored glyph is another symbol: no flip


def _model(num_classes: int):
    if _MODEL.value == "convnet":
        return ConvNet(num_classes, width=_WIDTH.value, depth=_DEPTH.value, conv=_CONV.value)
    return MLP(num_classes, hidden=(_WIDTH.value,) * _DEPTH.value)


def _dsa_config() -> DSAConfig:
    if _DATASET.value in _GLYPHS:
        return DSAConfig(strategy=tuple(t for t in TRANSFORMS if t != "flip"))
    return DSAConfig()


def _stats(acc: np.ndarray) -> tuple[float, float]:
    return float(np.mean(acc)), float(np.std(acc))


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    ds = load_vision(_DATASET.value, _DATA_DIR.value)
    model = _model(ds.num_classes)
    dsa = _dsa_config() if _DSA.value else None
    key_condense, key_eval = jax.random.split(jax.random.key(_SEED.value))

    stamps = [time.perf_counter()]

    def on_iteration(i: int, loss: float) -> None:
        stamps.append(time.perf_counter())
        if i % _LOG_EVERY.value == 0 or i == _ITERATIONS.value - 1:
            print(f"iteration {i}: loss {loss:.4f} ({stamps[-1] - stamps[-2]:.2f} s)", flush=True)

    options = dict(
        num_nets=_NUM_NETS.value,
        batch_real=_BATCH_REAL.value,
        init=_INIT.value,
        class_batching=_CLASS_BATCHING.value,
        outer_loop=_OUTER_LOOP.value,
        inner_loop=_INNER_LOOP.value,
    )
    if dsa is not None:
        options["dsa_config"] = dsa
    syn_x, syn_y = condense(
        ds.train_x,
        ds.train_y,
        ds.num_classes,
        method=_METHOD.value,
        ipc=_IPC.value,
        key=key_condense,
        model=model,
        iterations=_ITERATIONS.value,
        dsa=_DSA.value,
        on_iteration=on_iteration,
        **options,
    )
    # The loops actually run (the paper's defaults unless --outer_loop/--inner_loop are given).
    loops = CondenseConfig(ipc=_IPC.value, **options).loops if _METHOD.value == "gm" else None
    steps = np.diff(stamps)
    # The first iteration includes compilation; the rest are steady state.
    per_iteration = statistics.median(steps[1:]) if len(steps) > 1 else None
    condense_s = stamps[-1] - stamps[0]

    def evaluate(x, y) -> np.ndarray:
        return evaluate_synthetic(
            key_eval,
            model,
            x,
            y,
            ds.test_x[: _TEST_SIZE.value],
            ds.test_y[: _TEST_SIZE.value],
            num_nets=_NUM_EVAL_NETS.value,
            epochs=_EVAL_EPOCHS.value,
            dsa=dsa,
        )

    syn_acc = evaluate(syn_x, syn_y)
    rng = np.random.default_rng(_SEED.value)
    random_acc = evaluate(*random_subset(rng, ds.train_x, ds.train_y, ds.num_classes, _IPC.value))
    syn_mean, syn_std = _stats(syn_acc)
    random_mean, random_std = _stats(random_acc)
    wall = time.perf_counter() - start
    print(
        f"{_DATASET.value} {_METHOD.value} ipc={_IPC.value} iterations={_ITERATIONS.value}: "
        f"condensed {100 * syn_mean:.2f} ± {100 * syn_std:.2f}, "
        f"random real {100 * random_mean:.2f} ± {100 * random_std:.2f} "
        f"({_NUM_EVAL_NETS.value} nets x {_EVAL_EPOCHS.value} epochs); "
        f"{per_iteration if per_iteration is None else round(per_iteration, 3)} s/iteration, "
        f"condensation {condense_s:.1f} s, total {wall:.1f} s"
    )
    if _LEDGER.value:
        config = {
            name: flags.FLAGS[name].value
            for name in [
                "dataset",
                "method",
                "ipc",
                "iterations",
                "outer_loop",
                "inner_loop",
                "num_nets",
                "batch_real",
                "init",
                "class_batching",
                "dsa",
                "model",
                "width",
                "depth",
                "num_eval_nets",
                "eval_epochs",
                "test_size",
                "seed",
            ]
        }
        record = {
            "run_id": run_id(config),
            "track": "condense",
            "dataset": _DATASET.value,
            "method": _METHOD.value,
            "ipc": _IPC.value,
            "seed": _SEED.value,
            "iterations": _ITERATIONS.value,
            "dsa": _DSA.value,
            "loops": loops,
            "metrics": {
                "syn_acc": syn_mean,
                "random_acc": random_mean,
                "syn_acc_mean": syn_mean,
                "syn_acc_std": syn_std,
                "random_acc_mean": random_mean,
                "random_acc_std": random_std,
                "syn_acc_per_net": syn_acc.tolist(),
                "random_acc_per_net": random_acc.tolist(),
            },
            "seconds_per_iteration": per_iteration,
            "first_iteration_s": float(steps[0]) if len(steps) else None,
            "condense_time_s": condense_s,
            "wall_time_s": wall,
            "config": config,
            "conv": _CONV.value,  # how, not what: outside the run's identity
            "versions": versions(),
        }
        append_record(_LEDGER.value, record)
        print(f"appended to {_LEDGER.value}")


if __name__ == "__main__":
    cli.run(main)
