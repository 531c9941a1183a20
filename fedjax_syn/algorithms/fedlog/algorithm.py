"""FedLoG (Kim et al., "Subgraph Federated Learning for Local Generalization", ICLR 2025) on the
engine's `FederatedAlgorithm` interface; docs/fedlog.md gives the method and the design notes.

FedLoG's rounds are the engine's rounds ("Rounds on the engine" there): round 0 is
`setup.setup_client`, rounds r >= 1 `local_epoch.client_update`, each followed by
`server.server_update`. A run of `rounds = R` runs FedLoG rounds 0 .. R - 1, as the released
code's `--rounds R`.
"""

import functools

from fedjax_syn.algorithms import common
from fedjax_syn.algorithms.fedlog import local_epoch, server, setup
from fedjax_syn.algorithms.fedlog import model as M
from fedjax_syn.algorithms.fedlog.config import FedLoGConfig, Spec, from_dict, make_spec
from fedjax_syn.core import interface as base
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.engine.task import Task


def predict(spec: Spec, model: dict, graph):
    """The gated prediction of a personalised model on every node of `graph`."""
    return M.gated_predict(
        spec.net,
        model["params"],
        model["x_head"],
        model["x_tail"],
        graph,
        num_classes=spec.num_classes,
        gamma=spec.config.gamma,
        synthetic_mode=spec.config.synthetic_graph,
    )


def fedlog(task: Task, num_classes: int, config: FedLoGConfig | None = None):
    """FedLoG on graph clients (see `config.make_spec`): its stages, in the order they run."""
    spec = make_spec(task, num_classes, config)
    stage = lambda fn: functools.partial(fn, spec)
    return base.FederatedAlgorithm(
        name="fedlog",
        init_server=stage(server.init_server),
        init_client=base.no_state,
        setup_client=stage(setup.setup_client),  # round 0
        client_update=stage(local_epoch.client_update),  # rounds >= 1
        server_update=stage(server.server_update),  # after every round
        personalize=lambda server_state, state, data, key: server.own_model(state),
        predict=stage(predict),
        global_model=server.global_model,
    )


def released_options(raw: dict) -> FedLoGConfig:
    """`cfg.fedlog` under the released code's preset (the `fedlog_released` algorithm)."""
    return from_dict({**raw, "preset": "released"})


def options(cfg, spec: DataSpec | None = None, parse=from_dict) -> FedLoGConfig:
    """FedLoG's options from `cfg.fedlog` over the defaults. With a data spec, the generator's
    node cap `gen_nodes` = 0 becomes the largest client's training-node count, so generator
    pretraining reads exactly the training nodes instead of every padded node slot."""
    raw = common.options(cfg, "fedlog")
    if spec is not None and not raw.get("gen_nodes"):
        raw["gen_nodes"] = max(spec.max_train_examples, 1)
    return parse(raw)


def build(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: FedLoG with `cfg.fedlog` options, for the classes of `spec`."""
    return fedlog(task, spec.num_classes, options(cfg, spec))


def build_released(cfg, task: Task, spec: DataSpec) -> base.FederatedAlgorithm:
    """Registry builder: FedLoG as released (preset 'released'), with `cfg.fedlog` options."""
    alg = fedlog(task, spec.num_classes, options(cfg, spec, released_options))
    return alg._replace(name="fedlog_released")
