"""One condensation run end to end: config -> dataset -> condensed set -> evaluation -> a record.

The condensation table compares, per (dataset, method, images per class), the test accuracy of
fresh networks trained on the condensed set only against the same networks trained on as many
randomly chosen real images per class (Zhao et al., ICLR 2021; Zhao & Bilen, WACV 2023). Both
use the same network initialisations (the same evaluation key), so the comparison isolates the
training data. The record follows the condensation schema of `results`.
"""

import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from fedjax_syn import results
from fedjax_syn.condense import DSAConfig, condense, evaluate_synthetic, random_subset
from fedjax_syn.core.errors import check, check_choice

MODELS = ("convnet", "mlp")


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
            "num_nets": 1,  # fresh networks per condensation iteration
            "dsa": False,
            "model": "convnet",
            "width": 128,
            "hidden": (32,),
            "eval_nets": 5,
            "eval_epochs": 300,
            "eval_batch_size": 256,
            "eval_lr": 0.01,
        }
    )


def _model(cfg, num_classes: int):
    from fedjax_syn.models.vision import MLP, ConvNet

    check_choice("model", cfg.model, MODELS)
    if cfg.model == "convnet":
        return ConvNet(num_classes, cfg.width)
    return MLP(num_classes, tuple(cfg.hidden))


def run(
    cfg,
    *,
    ledger: str | None = None,
    on_iteration: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Condenses the training set, evaluates it and a random real subset; returns the record."""
    from fedjax_syn.data.vision import load_vision

    check(cfg.eval_nets >= 1, f"eval_nets must be >= 1, got {cfg.eval_nets}")
    start = time.perf_counter()
    data = load_vision(cfg.dataset, cfg.data_dir or None)
    model = _model(cfg, data.num_classes)
    condense_key, eval_key = jax.random.split(jax.random.key(cfg.seed))
    syn_x, syn_y = condense(
        data.train_x,
        data.train_y,
        data.num_classes,
        method=cfg.method,
        ipc=cfg.ipc,
        key=condense_key,
        model=model,
        iterations=cfg.iterations,
        dsa=cfg.dsa,
        dsa_config=DSAConfig(),  # with dsa: the same augmentations in evaluation
        num_nets=cfg.num_nets,
        on_iteration=on_iteration,
    )
    real_x, real_y = random_subset(
        np.random.default_rng(cfg.seed), data.train_x, data.train_y, data.num_classes, cfg.ipc
    )
    accuracy = {}
    for name, (x, y) in {"syn_acc": (syn_x, syn_y), "random_acc": (real_x, real_y)}.items():
        accuracy[name] = evaluate_synthetic(
            eval_key,
            model,
            x,
            y,
            data.test_x,
            data.test_y,
            num_nets=cfg.eval_nets,
            epochs=cfg.eval_epochs,
            batch_size=cfg.eval_batch_size,
            lr=cfg.eval_lr,
            dsa=DSAConfig() if cfg.dsa else None,
        )
    config = cfg.to_dict()
    record = {
        "run_id": results.run_id(config),
        "track": "condense",
        "dataset": cfg.dataset,
        "method": cfg.method,
        "ipc": cfg.ipc,
        "seed": cfg.seed,
        "metrics": {
            **{name: float(np.mean(acc)) for name, acc in accuracy.items()},
            **{f"{name}_per_net": [float(a) for a in acc] for name, acc in accuracy.items()},
        },
        "config": config,
        "wall_time_s": time.perf_counter() - start,
        "versions": results.versions(),
    }
    if ledger:
        results.append_record(ledger, record)
    return record
