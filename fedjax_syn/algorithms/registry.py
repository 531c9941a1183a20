"""Algorithm names -> builders. A builder takes (config, task) and returns a FederatedAlgorithm."""

from collections.abc import Callable

import optax

from fedjax_syn.algorithms import base
from fedjax_syn.algorithms.fedavg import fedavg, fedprox
from fedjax_syn.algorithms.fedavg_ft import fedavg_ft
from fedjax_syn.algorithms.fedper import fedper
from fedjax_syn.algorithms.local_only import local_only
from fedjax_syn.engine.local import Schedule
from fedjax_syn.engine.task import Task
from fedjax_syn.errors import check, check_choice

OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    check_choice("optimizer", name, OPTIMIZERS)
    check(lr > 0, f"learning rate must be > 0, got {lr}")
    opt = optax.sgd(lr, momentum=momentum or None) if name == "sgd" else optax.adam(lr)
    return optax.chain(optax.add_decayed_weights(weight_decay), opt) if weight_decay else opt


def local_schedule(cfg) -> Schedule:
    check(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.get("local_steps"):
        check(cfg.local_steps >= 1, f"local_steps must be >= 1, got {cfg.local_steps}")
        return Schedule(cfg.batch_size, epochs=None, steps=cfg.local_steps, unroll=_unroll(cfg))
    check(cfg.local_epochs >= 1, f"local_epochs must be >= 1, got {cfg.local_epochs}")
    return Schedule(
        cfg.batch_size,
        epochs=cfg.local_epochs,
        drop_last=cfg.get("drop_last", False),
        unroll=_unroll(cfg),
    )


def _unroll(cfg) -> bool | int:
    """`unroll` config: True unrolls local training (much faster ConvNets on XLA:CPU), else 1."""
    return cfg.get("unroll", False) or 1


def _optimizer(cfg):
    return make_optimizer(
        cfg.optimizer, cfg.lr, cfg.get("momentum", 0.0), cfg.get("weight_decay", 0.0)
    )


def _fedavg_ft(cfg, task):
    check(cfg.finetune_epochs >= 1, f"finetune_epochs must be >= 1, got {cfg.finetune_epochs}")
    finetune = Schedule(
        cfg.batch_size, epochs=cfg.finetune_epochs, drop_last=cfg.get("drop_last", False)
    )
    return fedavg_ft(task, _optimizer(cfg), local_schedule(cfg), finetune, weighted=cfg.weighted)


BUILDERS: dict[str, Callable[..., base.FederatedAlgorithm]] = {
    "local": lambda cfg, task: local_only(task, _optimizer(cfg), local_schedule(cfg)),
    "fedavg": lambda cfg, task: fedavg(
        task, _optimizer(cfg), local_schedule(cfg), weighted=cfg.weighted
    ),
    "fedavg_ft": _fedavg_ft,
    "fedprox": lambda cfg, task: fedprox(
        task, _optimizer(cfg), local_schedule(cfg), mu=cfg.prox_mu, weighted=cfg.weighted
    ),
    "fedper": lambda cfg, task: fedper(
        task, _optimizer(cfg), local_schedule(cfg), weighted=cfg.weighted
    ),
}


def register(name: str, builder: Callable[..., base.FederatedAlgorithm]) -> None:
    BUILDERS[name] = builder


def build(cfg, task: Task) -> base.FederatedAlgorithm:
    if cfg.algorithm in ("fedlog", "fedlog_vision"):
        import fedjax_syn.algorithms.fedlog  # noqa: F401  (registers both; lazy: it imports this module)
    check_choice("algorithm", cfg.algorithm, BUILDERS)
    return BUILDERS[cfg.algorithm](cfg, task)
