"""The encoder/head split shared by the algorithms that treat the two parts differently (FedPer,
FedRep, FedBABU): every model is `{"params": {"encoder": ..., "head": ...}}`."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from fedjax_syn.algorithms.fedavg import local_loss
from fedjax_syn.core import interface as base
from fedjax_syn.core.arrays import ClientData
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


def split(params: Any) -> tuple[Any, Any]:
    """(encoder, head) of a model."""
    inner = params["params"]
    return inner["encoder"], inner["head"]


def join(encoder: Any, head: Any) -> Any:
    """The model made of `encoder` and `head`."""
    return {"params": {"encoder": encoder, "head": head}}


def train_part(
    task: Task,
    params: Any,
    part: str,
    data: ClientData,
    key: jax.Array,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
) -> tuple[Any, base.Metrics]:
    """Trains only `params`' `part` ("encoder" or "head") with the other part held fixed; returns
    (params, metrics). The optimiser sees only the trained part, so neither its gradients nor its
    weight decay or momentum can move the frozen one."""
    encoder, head = split(params)
    rebuild = {"encoder": lambda enc: join(enc, head), "head": lambda hd: join(encoder, hd)}[part]
    full_loss = local_loss(task, data)
    loss_fn = lambda trained, *batch: full_loss(rebuild(trained), *batch)
    start = encoder if part == "encoder" else head
    trained, _, stats = local.train(loss_fn, start, optimizer, data.mask, key, schedule)
    return rebuild(trained), stats


def average_encoders(
    server: Any, uploads: Any, client_mask: jax.Array, weighted: bool = True
) -> Any:
    """The server's model with its encoder replaced by the clients' uploaded encoders averaged
    (by training examples when `weighted`; padded clients drop out); its head is kept."""
    weights = uploads["size"] if weighted else jnp.ones_like(uploads["size"])
    encoder = base.weighted_average(uploads["encoder"], weights * client_mask)
    return join(encoder, split(server)[1])
