"""FedRep (Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for
Personalized Federated Learning", ICML 2021).

Like FedPer the server averages only the `encoder` (the representation) and every client keeps its
own `head`, but local training alternates: each round a client first trains its head for
`head_epochs` epochs with the received encoder frozen, then trains the encoder for the run's local
schedule with the new head frozen, and uploads the encoder. Freezing trains only the sub-tree, so
the optimiser (weight decay, momentum) never touches the frozen part.

Evaluation: `local` is (trained encoder, trained head); `personalized` is (global encoder, own
head); there is no global model (heads never leave the clients).

Deviations from the paper:
- `head_epochs` defaults to 10, the paper's head epochs; the encoder runs the run's local schedule
  (the paper: one epoch), whose batch size, `drop_last` and unroll the head phase shares. When the
  run counts `local_steps`, the head phase still counts epochs.
- The two phases use fresh optimiser states (a frozen part's momentum has nothing to act on).
- The server averages encoders weighted by training examples when the run's `weighted` is set (the
  paper: a plain mean), and every client takes part in every round (the paper samples clients).
- The reported training metrics are the encoder phase's.
"""

import dataclasses

import jax
import optax

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedper import fedper
from fedjax_syn.algorithms.parts import join, split, train_part
from fedjax_syn.core import interface as base
from fedjax_syn.core.errors import check
from fedjax_syn.core.interface import ClientResult, DataSpec
from fedjax_syn.engine import local
from fedjax_syn.engine.task import Task


@dataclasses.dataclass(frozen=True)
class FedRepOptions:
    head_epochs: int = 10  # epochs of head training (encoder frozen) before the encoder's turn

    def __post_init__(self):
        check(
            isinstance(self.head_epochs, int)
            and not isinstance(self.head_epochs, bool)
            and self.head_epochs >= 1,
            f"fedrep head_epochs must be an integer >= 1, got {self.head_epochs!r}",
        )


def options(raw: dict | None) -> FedRepOptions:
    return common.parse_options(FedRepOptions, "fedrep", raw)


def fedrep(
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: local.Schedule,
    head_schedule: local.Schedule,
    *,
    weighted: bool = True,
) -> base.FederatedAlgorithm:
    def client_update(server, head, data, key):
        head_key, body_key = jax.random.split(key)
        params = join(split(server)[0], head)
        params, _ = train_part(task, params, "head", data, head_key, optimizer, head_schedule)
        params, metrics = train_part(task, params, "encoder", data, body_key, optimizer, schedule)
        encoder, head = split(params)
        upload = {"encoder": encoder, "size": base.num_examples(data)}
        return ClientResult(head, upload, metrics, model=params)

    # FedPer's server, client state and personalised model; only the local training differs.
    return fedper(task, optimizer, schedule, weighted=weighted)._replace(
        name="fedrep", client_update=client_update
    )


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    opts = options(common.options(cfg, "fedrep"))
    schedule = common.local_schedule(cfg)
    head_schedule = dataclasses.replace(schedule, epochs=opts.head_epochs, steps=None)
    return fedrep(task, common.optimizer(cfg), schedule, head_schedule, weighted=cfg.weighted)
