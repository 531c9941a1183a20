"""Differential privacy on what clients share: per-client clipping and Gaussian noise on every
upload, as a wrapper over any `FederatedAlgorithm` whose upload parts are described here.

`with_dp(alg, references, options)` returns the same algorithm with every client's upload
replaced, inside the client's own update, by a clipped and noised one:

- An upload is split into parts (its top-level keys). `public` parts (example counts, class
  shares, class masks, client ids) are sent in the clear: they are outside the guarantee.
- Every other part is private. A part that is a model (FedAvg's `params`, FedPer's `encoder`) is
  clipped as its change from the public reference the server holds (`references(server)`, e.g.
  the global model it sent): upload - reference, to L2 norm `clip_norm`. FedLoG's trained prompt
  generator is clipped as its change from the common initialisation every client draws from the
  server's key; SCAFFOLD's uploads are changes already (reference zero).
- A part that is data (`DATA_PARTS`: FedLoG's synthetic nodes `x_head`, `x_tail`, fedlog_vision's
  condensed images `syn`) has no public reference: the whole synthetic set, as one vector, is
  clipped to `data_clip_norm`. Data are far larger than one round's model change (digits'
  condensed images: norm ~50; a model change: ~0.2), so the two get their own bounds.
- Every coordinate of a part clipped to C gets independent N(0, (noise_multiplier * C)^2) noise,
  drawn by the client.

Guarantee (local, per client): each private part of each upload is a Gaussian mechanism on a
vector within C of a public point. Two datasets of that client give vectors at most 2C apart, so
one part of one round is (alpha, alpha / (2 (noise_multiplier / 2)^2))-RDP for any replacement of
the client's whole data; the P private parts of R rounds compose (adaptively) to P R times that.
`fedjax_syn.privacy.accounting` turns it into (epsilon, delta). Nothing bounds the public parts,
and a client's personalised model, which it never sends, is not covered (nor needs to be).

Noise 0 with a clip no upload reaches is the wrapped algorithm bit for bit: an unclipped part is
passed on unchanged (not re-formed as reference + change), and the inner update receives the
key it would get unwrapped (the noise key is folded from it).
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fedjax_syn.algorithms import common, parts
from fedjax_syn.algorithms.fedlog import algorithm as fedlog_algorithm
from fedjax_syn.algorithms.fedlog import generators
from fedjax_syn.algorithms.fedlog.config import from_dict
from fedjax_syn.algorithms.fedlog.setup import SharedKeys
from fedjax_syn.core.errors import UserError, check
from fedjax_syn.core.interface import ClientResult, ClientUpdate, DataSpec, FederatedAlgorithm

PyTree = Any
References = Callable[[PyTree], dict[str, PyTree]]  # server state -> {upload part: reference}

PUBLIC = ("size", "shares", "class_mask", "id")  # upload metadata, sent in the clear
DATA_PARTS = ("x_head", "x_tail", "syn")  # synthetic data: clipped to data_clip_norm
_NOISE_STREAM = 0x0D9  # folded into a client's key to draw its noise


@dataclasses.dataclass(frozen=True)
class DPOptions:
    """The `dp` option group: L2 bounds on one upload's model changes and on its synthetic data
    (0: `clip_norm`), and the noise multiplier."""

    clip_norm: float = 1.0
    data_clip_norm: float = 0.0
    noise_multiplier: float = 0.0

    def __post_init__(self):
        check(self.clip_norm > 0, f"dp clip_norm must be > 0, got {self.clip_norm}")
        check(
            self.data_clip_norm >= 0, f"dp data_clip_norm must be >= 0, got {self.data_clip_norm}"
        )
        check(
            self.noise_multiplier >= 0,
            f"dp noise_multiplier must be >= 0, got {self.noise_multiplier}",
        )

    def bound(self, part: str) -> float:
        """The L2 bound of upload part `part`."""
        if part in DATA_PARTS:
            return self.data_clip_norm or self.clip_norm
        return self.clip_norm


def dp_options(raw: Mapping[str, Any] | None) -> DPOptions:
    return common.parse_options(DPOptions, "dp", raw)


def global_norm(tree: PyTree) -> jax.Array:
    """The L2 norm of every leaf of `tree` taken together, as one vector."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def clip_part(part: PyTree, reference: PyTree | None, bound: float) -> PyTree:
    """`part` with its change from `reference` (None: zero) scaled to L2 norm <= `bound`; a part
    already within the bound is returned unchanged."""
    if reference is None:
        reference = jax.tree.map(jnp.zeros_like, part)
    delta = jax.tree.map(jnp.subtract, part, reference)
    norm = global_norm(delta)
    scale = bound / jnp.maximum(norm, 1e-30)
    return jax.tree.map(
        lambda p, r, d: jnp.where(norm <= bound, p, (r + d * scale).astype(p.dtype)),
        part,
        reference,
        delta,
    )


def add_noise(part: PyTree, std: float, key: jax.Array) -> PyTree:
    """`part` + independent N(0, std^2) on every coordinate."""
    leaves, treedef = jax.tree.flatten(part)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        leaf + std * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, noisy)


def private_parts(upload: dict, public: tuple[str, ...] = PUBLIC) -> list[str]:
    """The parts of `upload` the guarantee covers (each a Gaussian mechanism per round)."""
    return sorted(name for name in upload if name not in public)


def privatize(
    upload: dict,
    reference: dict,
    public: tuple[str, ...],
    options: DPOptions,
    key: jax.Array,
) -> dict:
    """The upload with every private part clipped to its bound C around its reference and
    noised with std noise_multiplier * C (module docstring)."""
    out = dict(upload)
    for i, name in enumerate(private_parts(upload, public)):
        for leaf in jax.tree.leaves(upload[name]):
            check(
                jnp.issubdtype(leaf.dtype, jnp.floating),
                f"dp: upload part {name!r} is not floating point; declare it public or clip it",
            )
        bound = options.bound(name)
        part = clip_part(upload[name], reference.get(name), bound)
        std = options.noise_multiplier * bound
        out[name] = add_noise(part, std, jax.random.fold_in(key, i)) if std > 0 else part
    return out


def with_dp(
    alg: FederatedAlgorithm,
    references: References,
    options: DPOptions,
    public: tuple[str, ...] = PUBLIC,
) -> FederatedAlgorithm:
    """`alg` whose clients clip and noise their uploads (round 0's setup upload included)."""

    def wrap(update: ClientUpdate) -> ClientUpdate:
        def private_update(server, state, data, key):
            result = update(server, state, data, key)
            noise_key = jax.random.fold_in(key, _NOISE_STREAM)
            upload = privatize(result.upload, references(server), public, options, noise_key)
            return ClientResult(result.state, upload, result.metrics, result.model)

        return private_update

    setup = None if alg.setup_client is None else wrap(alg.setup_client)
    return alg._replace(
        name=f"{alg.name}+dp", client_update=wrap(alg.client_update), setup_client=setup
    )


# ---------------------------------------------------------------------------------------------
# The public reference of each algorithm's model-like upload parts (data parts have none).


def _whole_model(cfg, spec: DataSpec) -> References:
    return lambda server: {"params": server}


def _encoder(cfg, spec: DataSpec) -> References:
    return lambda server: {"encoder": parts.split(server)[0]}


def _fedlog_graph(cfg, spec: DataSpec) -> References:
    parse = fedlog_algorithm.released_options if cfg.algorithm == "fedlog_released" else from_dict
    options = fedlog_algorithm.options(cfg, spec, parse=parse)

    def references(server):
        refs = {"params": server["params"]}
        if options.prompt == "trained":
            key = SharedKeys.from_server(server).generator
            refs["gen"] = generators.init_generator(key, spec.feature_shape[-1], options)
        return refs

    return references


def _fedlog_vision(cfg, spec: DataSpec) -> References:
    return lambda server: {"params": server["params"]}


REFERENCES: dict[str, Callable[[Any, DataSpec], References]] = {
    "fedavg": _whole_model,
    "fedprox": _whole_model,
    "fedavg_ft": _whole_model,
    "moon": _whole_model,
    "fedper": _encoder,
    "fedrep": _encoder,
    "fedbabu": _encoder,
    "scaffold": lambda cfg, spec: lambda server: {},  # uploads are already changes
    "fedlog": _fedlog_graph,
    "fedlog_released": _fedlog_graph,
    "fedlog_vision": _fedlog_vision,
}


def check_supported(algorithm: str) -> None:
    if algorithm not in REFERENCES:
        raise UserError(
            f"dp is not defined for algorithm {algorithm!r}'s uploads; "
            f"supported: {', '.join(REFERENCES)}"
        )


def apply(cfg, spec: DataSpec, alg: FederatedAlgorithm) -> FederatedAlgorithm:
    """`alg` under the config's `dp` option group; `alg` itself when the config has none."""
    raw = common.options(cfg, "dp")
    if not raw:
        return alg
    check_supported(cfg.algorithm)
    return with_dp(alg, REFERENCES[cfg.algorithm](cfg, spec), dp_options(raw))
