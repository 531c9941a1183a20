"""The privacy audit of one trained run: what its clients upload one round after its last, and
what an honest-but-curious server learns about their training records from it.

For every real client the server sees the upload (noised, under `dp`) and knows the model it sent.
Members are the client's training records (nodes); non-members its labelled records that never
were training targets (validation and test records, and on graphs the unseen nodes, too).

- `loss_auc`: loss attack on the model the client shares (FedAvg's uploaded parameters; FedLoG's
  uploaded parameters with its uploaded synthetic nodes as prototypes), AUC averaged over clients.
- `lira_auc`: offline LiRA on that model where it is the task's classifier: shadow models trained
  like the client (the run's optimiser and local schedule) from the model the server sent, each on a
  random half of the client's records.
- `distance_auc`, `dcr_median`, `dcr_closer`, `dcr_train_share`: against shared synthetic data
  (FedLoG's synthetic nodes, fedlog_vision's condensed images): distance attack, distance to
  closest record, and the share of synthetic examples nearer the training than the held-out
  records (`memorisation.py`).
- `global_distance_auc`, `global_dcr_median`, `global_dcr_closer`, `global_dcr_train_share`: the
  same against FedLoG's global synthetic set (the server's blend, `x_global`), which every client,
  a new one included, receives: over the union of all clients' records.
- images only: `inversion_ssim` and `inversion_ssim_max` (gradient inversion of one client's
  parameter update: each dummy's SSIM with its most similar training image, averaged and at
  its best), `inversion_train_share` (the dummies' share nearer the training than the held-out
  images: does a reconstruction resemble the client's records, or just digits?), `shared_ssim` (the average for the uploaded synthetic images), and `real_ssim`, the
  reference: a held-out image of the client against its most similar training image.
"""

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.algorithms import common, dp
from fedjax_syn.algorithms.fedavg import train_from
from fedjax_syn.core.arrays import ClientData, Federation
from fedjax_syn.core.interface import FederatedAlgorithm
from fedjax_syn.engine.mapping import map_clients
from fedjax_syn.privacy import accounting, inversion, membership, memorisation
from fedjax_syn.runs.checkpoint import clock, time_spent
from fedjax_syn.runs.config import engine_config
from fedjax_syn.runs.prepare import build_algorithm
from fedjax_syn.runs.program import (
    Program,
    State,
    advance,
    compile_program,
    initial_state,
    make_records,
)

GRAPH_FEDLOG = ("fedlog", "fedlog_released")


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """How hard the attacker works; `delta` of the reported (epsilon, delta)."""

    delta: float = 1e-5
    shadows: int = 8
    inversion_steps: int = 300
    inversion_lr: float = 0.05
    seed: int = 0


def shared_model(algorithm: str, upload: dict) -> Any:
    """The model a client's upload amounts to, or None when it sends no whole model."""
    if algorithm in GRAPH_FEDLOG:
        return {name: upload[name] for name in ("params", "x_head", "x_tail")}
    return upload.get("params")


def shared_synthetic(algorithm: str, upload: dict, num_classes: int):
    """(examples [K, m, ...], labels [m], valid [K, m]) of uploaded synthetic data, or None."""
    if algorithm in GRAPH_FEDLOG:
        x = jnp.concatenate([upload["x_head"], upload["x_tail"]], axis=1)
        s = upload["x_head"].shape[1] // num_classes
        labels = jnp.tile(jnp.repeat(jnp.arange(num_classes), s), 2)
        return x, labels, jnp.ones(x.shape[:2], bool)
    if algorithm == "fedlog_vision":
        syn = upload["syn"]  # [K, C, s, ...]
        k, c, s = syn.shape[:3]
        valid = jnp.repeat(upload["class_mask"], s, axis=1)
        return syn.reshape(k, c * s, *syn.shape[3:]), jnp.repeat(jnp.arange(c), s), valid
    return None


def global_synthetic(algorithm: str, server: dict, num_classes: int):
    """(examples [m, ...], labels [m], valid [m]) of the global synthetic set the server sends
    every client, or None."""
    if algorithm in GRAPH_FEDLOG:
        x = server["x_global"]  # [C * slots, F], class-major
        labels = jnp.repeat(jnp.arange(num_classes), x.shape[0] // num_classes)
        return x, labels, jnp.ones(x.shape[0], bool)
    if algorithm == "fedlog_vision":
        return server["x_global"], server["y_global"], server["valid"]
    return None


def synthetic_measures(synthetic, syn_labels, records, labels, members, nonmembers, seed: int = 0):
    """The distance attack and memorisation of one synthetic set (`synthetic` [m, ...],
    `syn_labels` [m]) against one set of records (`records` [n, ...], `labels` [n], boolean
    `members` and `nonmembers` [n])."""
    score = membership.distance_scores(records, labels, synthetic, syn_labels)
    train, held_out = records[members], records[nonmembers]
    result = memorisation.dcr(synthetic, train)
    return {
        "distance_auc": membership.auc(score[members], score[nonmembers]),
        "dcr_median": result.median_ratio,
        "dcr_closer": result.share_closer,
        "dcr_train_share": memorisation.train_share(synthetic, train, held_out, seed),
    }


def _one_run(tree: Any) -> Any:
    return jax.tree.map(lambda leaf: leaf[0], tree)


def audit_uploads(alg: FederatedAlgorithm, program: Program, state: State) -> tuple[Any, Any]:
    """(the server state, every client's upload [K, ...] in the round after the run's last)."""
    cfg, fed = program.cfgs[0], program.fed
    server, clients = _one_run(state.server), _one_run(state.clients)
    key = jax.random.fold_in(_one_run(state.key), program.last_round + 1)

    @jax.jit
    def uploads(server, clients, fed, key):
        keys = jax.random.split(jax.random.split(key, 3)[0], fed.num_clients)
        update = lambda s, d, k: alg.client_update(server, s, d, k)
        return map_clients(update, (clients, fed.train, keys), engine_config(cfg).client_chunk)[1]

    return server, uploads(server, clients, fed, key)


def _eval_inputs(fed: Federation) -> Any:
    """Per-client inputs every record of a client is scored on (the evaluation-time graph)."""
    return fed.eval_groups["local"].inputs


def _nonmembers(fed: Federation) -> np.ndarray:
    masks = fed.eval_groups["local"].masks
    out = np.asarray(fed.train.val_mask) | np.asarray(masks["seen"])
    if "unseen_node" in masks:
        out |= np.asarray(masks["unseen_node"])
    return out


def _records(fed: Federation) -> np.ndarray:
    """Every record's features [K, n, ...]: node features or images."""
    inputs = fed.train.inputs
    return np.asarray(inputs.x if hasattr(inputs, "x") else inputs)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _lira_confidences(cfg, task, start, fed: Federation, pool: np.ndarray, options: AuditOptions):
    """(shadow confidences [K, S, n], shadow membership [K, S, n])."""
    inputs, labels = _eval_inputs(fed), fed.train.labels
    optimizer, schedule = common.optimizer(cfg), common.local_schedule(cfg)
    key = jax.random.key(options.seed)
    halves = jax.random.bernoulli(key, 0.5, (fed.num_clients, options.shadows, pool.shape[1]))
    shadow_in = halves & jnp.asarray(pool)[:, None, :]

    @jax.jit
    def confidences(start, inputs, labels, shadow_in, key):
        def one_client(inputs, labels, ins, key):
            def one_shadow(mask, key):
                data = ClientData(inputs, labels, mask, jnp.zeros_like(mask))
                params, _ = train_from(task, start, data, key, optimizer, schedule)
                return task.logits(params, inputs)

            keys = jax.random.split(key, options.shadows)
            return jax.lax.map(lambda a: one_shadow(*a), (ins, keys))

        keys = jax.random.split(key, fed.num_clients)
        return jax.lax.map(lambda a: one_client(*a), (inputs, labels, shadow_in, keys))

    logits = np.asarray(confidences(start, inputs, labels, shadow_in, jax.random.fold_in(key, 1)))
    labels_np = np.asarray(labels)
    conf = np.stack(
        [
            np.stack([membership.logit_confidence(s, labels_np[k]) for s in logits[k]])
            for k in range(fed.num_clients)
        ]
    )
    return conf, np.asarray(shadow_in)


def _inversion(task, start, upload_params, fed: Federation, client: int, options: AuditOptions):
    """SSIMs with the client's most similar training image of the reconstructed dummies (mean,
    best) and of its held-out images (mean), and the dummies' share nearer the training images
    than the held-out ones."""
    images = np.asarray(fed.train.inputs[client])
    train = np.asarray(fed.train.mask[client])
    held_out = _nonmembers(fed)[client]
    labels = jnp.asarray(np.asarray(fed.train.labels[client])[train])
    target = jax.tree.map(jnp.subtract, start, upload_params)  # along the summed gradients
    low, high = float(images[train].min()), float(images[train].max())

    def gradient(x):
        def loss(params):
            logits = task.logits(params, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1))

        return jax.grad(loss)(start)

    x0 = jax.random.normal(jax.random.key(options.seed), images[train].shape)
    invert = jax.jit(inversion.invert_update, static_argnums=(0, 3))
    dummies, _ = invert(gradient, target, x0, options.inversion_steps, options.inversion_lr)
    recon = inversion.best_match_ssim(np.asarray(dummies), images[train], low, high)
    real = inversion.best_match_ssim(images[held_out], images[train], low, high)
    share = memorisation.train_share(np.asarray(dummies), images[train], images[held_out])
    return {
        "inversion_ssim": float(recon.mean()),
        "inversion_ssim_max": float(recon.max()),
        "inversion_train_share": share,
        "real_ssim": float(real.mean()),
    }


def measure(cfg, alg: FederatedAlgorithm, program: Program, server, uploads, options: AuditOptions):
    """The privacy measures of a trained run's `uploads` (module docstring), against the model
    the server sent; absent where they do not apply."""
    fed = program.fed
    task = program.prepared[0].task
    real = np.asarray(fed.client_mask)
    members, nonmembers = np.asarray(fed.train.mask), _nonmembers(fed)
    labels = np.asarray(fed.train.labels)
    records = _records(fed)
    out: dict[str, Any] = {}

    model = shared_model(cfg.algorithm, uploads)
    if model is not None:
        logits = np.asarray(jax.jit(jax.vmap(alg.predict))(model, _eval_inputs(fed)))
        aucs = []
        for k in np.flatnonzero(real):
            score = membership.loss_scores(logits[k], labels[k])
            aucs.append(membership.auc(score[members[k]], score[nonmembers[k]]))
        out["loss_auc"] = _mean(aucs)
        if cfg.algorithm not in GRAPH_FEDLOG and alg.global_model is not None:
            start = alg.global_model(server)
            pool = members | nonmembers
            shadows, shadow_in = _lira_confidences(cfg, task, start, fed, pool, options)
            aucs = []
            for k in np.flatnonzero(real):
                target = membership.logit_confidence(logits[k], labels[k])
                score = membership.lira_offline(target, shadows[k], shadow_in[k])
                aucs.append(membership.auc(score[members[k]], score[nonmembers[k]]))
            out["lira_auc"] = _mean(aucs)
            if cfg.track == "vision":
                client = int(np.flatnonzero(real)[0])
                upload_params = _one_client(model, client)
                out |= _inversion(task, start, upload_params, fed, client, options)

    synthetic = shared_synthetic(cfg.algorithm, uploads, fed.num_classes)
    if synthetic is not None:
        x, syn_labels, valid = (np.asarray(a) for a in synthetic)
        per_client, shared_ssim = [], []
        for k in np.flatnonzero(real):
            keep = valid[k]
            client = (a[k] for a in (records, labels, members, nonmembers))
            per_client.append(
                synthetic_measures(x[k][keep], syn_labels[keep], *client, options.seed)
            )
            if cfg.track == "vision":
                train_images = records[k][members[k]]
                low, high = float(train_images.min()), float(train_images.max())
                ssim = inversion.best_match_ssim(x[k][keep], train_images, low, high)
                shared_ssim.append(float(ssim.mean()))
        out |= {key: _mean([m[key] for m in per_client]) for key in per_client[0]}
        if shared_ssim:
            out["shared_ssim"] = _mean(shared_ssim)

    synthetic = global_synthetic(cfg.algorithm, server, fed.num_classes)
    if synthetic is not None:
        x, syn_labels, valid = (np.asarray(a) for a in synthetic)
        union = (
            np.concatenate(list(a[np.flatnonzero(real)]))
            for a in (records, labels, members, nonmembers)
        )
        measures = synthetic_measures(x[valid], syn_labels[valid], *union, options.seed)
        out |= {f"global_{key}": _mean([value]) for key, value in measures.items()}
    return out


def _one_client(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda leaf: leaf[k], tree)


def uploads_per_client(cfg) -> int:
    """How many uploads of each client the attacker sees: the run's rounds and the audited one."""
    return cfg.rounds + 1


def audit(cfg, options: AuditOptions) -> dict:
    """Trains the run `cfg` and audits it: its ledger record with a `privacy` entry."""
    start = clock()
    program = compile_program([cfg])
    state = advance(program, initial_state(program), program.last_round)
    (record,) = make_records(program, state, *time_spent(start))
    alg = build_algorithm(cfg, program.prepared)
    audit_start = time.perf_counter()
    server, uploads = audit_uploads(alg, program, state)
    privacy = measure(cfg, alg, program, server, uploads, options)
    raw = common.options(cfg, "dp")
    options_dp = dp.dp_options(raw) if raw else None
    noise = options_dp.noise_multiplier if options_dp else None
    parts = len(dp.private_parts(uploads))
    epsilon = accounting.epsilon(noise or 0.0, uploads_per_client(cfg), options.delta, parts)
    privacy |= {
        "noise_multiplier": noise,
        "clip_norm": options_dp.clip_norm if options_dp else None,
        "data_clip_norm": options_dp.bound("syn") if options_dp else None,
        "private_parts": parts,
        "delta": options.delta,
        "epsilon": epsilon if np.isfinite(epsilon) else None,  # None: no guarantee
        "audit": dataclasses.asdict(options),
        "audit_time_s": time.perf_counter() - audit_start,
    }
    record["privacy"] = privacy
    return record
