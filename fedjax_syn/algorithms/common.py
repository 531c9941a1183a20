"""Config -> optimiser and local schedule, shared by every algorithm's builder."""

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import optax

from fedjax_syn.core.errors import check, check_choice
from fedjax_syn.engine.local import Schedule

OPTIMIZERS = ("sgd", "adam")
Options = TypeVar("Options")


def make_optimizer(name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    check_choice("optimizer", name, OPTIMIZERS)
    check(lr > 0, f"learning rate must be > 0, got {lr}")
    opt = optax.sgd(lr, momentum=momentum or None) if name == "sgd" else optax.adam(lr)
    return optax.chain(optax.add_decayed_weights(weight_decay), opt) if weight_decay else opt


def optimizer(cfg) -> optax.GradientTransformation:
    """The run's client optimiser (`optimizer`, `lr`, `momentum`, `weight_decay`)."""
    return make_optimizer(
        cfg.optimizer, cfg.lr, cfg.get("momentum", 0.0), cfg.get("weight_decay", 0.0)
    )


def local_schedule(cfg) -> Schedule:
    """The run's local training: `local_steps` i.i.d. minibatches, else `local_epochs` epochs."""
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


def finetune_schedule(cfg) -> Schedule:
    """Personalisation by fine-tuning (FedAvg-FT, FedBABU): `finetune_epochs` epochs."""
    check(cfg.finetune_epochs >= 1, f"finetune_epochs must be >= 1, got {cfg.finetune_epochs}")
    return Schedule(
        cfg.batch_size, epochs=cfg.finetune_epochs, drop_last=cfg.get("drop_last", False)
    )


def _unroll(cfg) -> bool | int:
    """`unroll` config: True unrolls local training (much faster ConvNets on XLA:CPU), else 1."""
    return cfg.get("unroll", False) or 1


def options(cfg, group: str = "fedlog") -> dict:
    """An algorithm's option group (`cfg.fedlog`, a dict or ConfigDict) as a plain dict."""
    raw = cfg.get(group) or {}
    return dict(raw.to_dict() if hasattr(raw, "to_dict") else raw)


def parse_options(cls: type[Options], group: str, raw: Mapping[str, Any] | None) -> Options:
    """The frozen options dataclass `cls` from an option group (`cfg.<group>`) over its defaults;
    an unknown key is a one-line `UserError` listing the allowed ones (ranges: `cls` checks)."""
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    check(not unknown, f"unknown {group} option(s) {unknown}; allowed: {', '.join(sorted(known))}")
    return cls(**raw)
