"""What a run is: its config fields and defaults, its id, and which runs can share a program.

The configuration is an `ml_collections.ConfigDict` (`default_config`); everything that identifies
a run is recorded verbatim in its ledger record, so tables can be regenerated from the ledger
alone.
"""

import json
from collections.abc import Sequence

import ml_collections

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.engine.round import EngineConfig
from fedjax_syn.runs import condense, ledger

VISION_MODELS = ("mlp", "convnet")
GRAPH_MODELS = ("gcn", "sage")
# Config fields that choose how a run executes, never what it computes (tests/test_engine.py:
# chunked == vmapped, unrolled == while-loop, sharded == single device). A run's identity ignores
# them, so a sweep switched to another layout still finds the runs its ledger holds.
EXECUTION_FIELDS = ("client_chunk", "eval_example_chunk", "unroll", "shard")
# What to do when an update turns NaN or Inf (docs/scale.md, "Non-finite updates"): "stop" the
# run, its last checkpoint kept, or "drop" that client's update for the round.
ON_NONFINITE = ("stop", "drop")


def default_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with defaults; experiment configs override a subset."""
    return ml_collections.ConfigDict(
        {
            "track": "vision",
            "dataset": "digits",
            "data_dir": "",
            "seed": 0,
            # Protocol (PROTOCOL.md). Vision: partition over num_clients + 1 parts.
            "num_clients": 10,
            "partition": "dirichlet",
            "alpha": 0.5,
            "classes_per_part": 2,
            "min_class_count": 2,
            "missing_frac": 0.0,
            # Graph protocol.
            "partitioner": "louvain",
            "setting": "closeset",
            "unseen_frac": 0.2,
            "graph_missing_frac": 0.3,
            "normalize_features": True,
            # Model.
            "model": "mlp",
            "hidden": (32,),
            "width": 128,
            "dropout": 0.5,
            # Algorithm and optimisation.
            "algorithm": "fedavg",
            "rounds": 20,
            "local_epochs": 1,
            "local_steps": 0,  # > 0: fixed local steps instead of epochs
            "batch_size": 10,
            "drop_last": False,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "weighted": True,
            "finetune_epochs": 5,
            "prox_mu": 0.01,
            "fedlog": {},
            # Engine.
            "eval_every": 1,
            "unroll": False,  # unroll local training (faster ConvNets on CPU, longer compile)
            "client_chunk": 0,  # 0: vmap every client at once; -1: the fastest layout, measured
            "eval_example_chunk": 512,
            "shard": False,  # put the clients axis on a mesh of all local devices
            "on_nonfinite": "stop",  # ON_NONFINITE; left out of the run id (`run_id`)
        }
    )


def run_id(cfg) -> str:
    """The ledger id of a run: its config with the execution fields at their defaults (a
    condensation run: its config without its own execution fields, `condense.identity`).

    `on_nonfinite` is left out altogether: a healthy run computes the same under either choice,
    and leaving it out keeps the ids of runs recorded before the field existed (a sweep switched
    to "drop" resumes from the checkpoint that "stop" kept)."""
    if cfg.get("track") == "condense":
        return ledger.run_id(condense.identity(cfg))
    config = cfg.to_dict()
    config.pop("on_nonfinite", None)
    defaults = default_config()
    for field in EXECUTION_FIELDS:
        if field in config:
            config[field] = defaults[field]
    return ledger.run_id(config)


def check_client_chunk(chunk: int) -> None:
    """One message for a bad `client_chunk`, wherever it is caught."""
    check(
        chunk >= -1,
        f"client_chunk must be >= 1, 0 (all clients vmapped) or -1 (measured), got {chunk!r}",
    )


def engine_config(cfg) -> EngineConfig:
    """The engine's settings of `cfg`. A measured layout (client_chunk -1, which the run program
    resolves: `fedjax_syn.runs.layouts`) starts from every client vmapped."""
    check_client_chunk(cfg.client_chunk)
    check_choice("on_nonfinite", cfg.on_nonfinite, ON_NONFINITE)
    return EngineConfig(
        client_chunk=cfg.client_chunk if cfg.client_chunk > 0 else None,
        eval_example_chunk=cfg.eval_example_chunk,
        on_nonfinite=cfg.on_nonfinite,
    )


# Config fields that only change the data a run trains on, never the shapes of its program once
# padded: runs differing only in these can share one compiled program.
DATA_FIELDS = (
    "seed",
    "alpha",
    "partition",
    "classes_per_part",
    "min_class_count",
    "missing_frac",
    "partitioner",
    "setting",
    "unseen_frac",
    "graph_missing_frac",
)


def program_key(cfg: ml_collections.ConfigDict) -> str:
    """Runs with equal keys can be batched: their configs agree outside `DATA_FIELDS`."""
    config = cfg.to_dict()
    return ledger.run_id({k: v for k, v in config.items() if k not in DATA_FIELDS})


def group_runs(configs: Sequence[ml_collections.ConfigDict], max_runs: int = 0) -> list[list[int]]:
    """Indices of `configs` grouped by `program_key` in first-seen order, at most `max_runs` per
    group (0: no limit). The grouping depends on the configs only, so it is stable across resumes.
    """
    check(max_runs >= 0, f"max_runs must be >= 0, got {max_runs}")
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(program_key(cfg), []).append(i)
    out = []
    for members in groups.values():
        size = max_runs or len(members)
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return out


def check_batchable(cfgs: Sequence[ml_collections.ConfigDict]) -> None:
    check(len(cfgs) >= 1, "a batched program needs at least one run")
    keys = {program_key(c) for c in cfgs}
    if len(keys) > 1:
        first = cfgs[0].to_dict()
        fields = sorted(
            k
            for c in cfgs[1:]
            for k, v in c.to_dict().items()
            if k not in DATA_FIELDS and first.get(k) != v
        )
        raise UserError(
            f"runs cannot share one program: they differ in {sorted(set(fields))}; only "
            f"{', '.join(DATA_FIELDS)} may differ"
        )
    cfg = cfgs[0]
    check(cfg.rounds >= 1, f"rounds must be >= 1, got {cfg.rounds}")
    check(cfg.eval_every >= 1, f"eval_every must be >= 1, got {cfg.eval_every}")


def describe(cfgs: Sequence[ml_collections.ConfigDict]) -> str:
    """The fields that tell a group's runs apart, e.g. 'seed=0,1,2 alpha=0.1,1.0'."""
    parts = []
    for field in DATA_FIELDS:
        values = list(dict.fromkeys(json.dumps(c.get(field)) for c in cfgs))
        if len(values) > 1 or field == "seed":
            parts.append(f"{field}={','.join(values)}")
    return " ".join(parts)
