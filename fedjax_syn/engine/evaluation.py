"""Vmapped evaluation of every client's model on every evaluation setting.

For each evaluation group the engine predicts once per client model and reads every setting's
accuracy off with masks. Results are per-client correct/count sums; pooled accuracy over clients is
sum(correct) / sum(count), which is the node- (example-) weighted mean the project's protocol
(`../shared/docs/PROTOCOL.md`) asks for, and the plain mean over client models for shared inputs
(every client sees the same examples).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.core.arrays import EvalGroup, Federation
from fedjax_syn.engine.mapping import map_clients

Counts = dict[str, dict[str, jax.Array]]  # setting -> {"correct": [K], "count": [K]}


def _predict_chunked(predict, model, inputs, chunk: int | None) -> jax.Array:
    """Predicted classes; image inputs are processed `chunk` examples at a time to bound memory."""
    if chunk is None or isinstance(inputs, tuple) or inputs.shape[0] <= chunk:
        return jnp.argmax(predict(model, inputs), axis=-1)
    n = inputs.shape[0]
    padded = jnp.pad(inputs, [(0, -n % chunk)] + [(0, 0)] * (inputs.ndim - 1))
    batches = padded.reshape((-1, chunk, *inputs.shape[1:]))
    preds = jax.lax.map(lambda x: jnp.argmax(predict(model, x), axis=-1), batches)
    return preds.reshape(-1)[:n]


def evaluate_group(
    predict: Callable,
    models: Any,
    group: EvalGroup,
    client_chunk: int | None = None,
    example_chunk: int | None = 512,
) -> Counts:
    def per_client(model, inputs, labels, masks):
        correct = _predict_chunked(predict, model, inputs, example_chunk) == labels
        return {
            name: {"correct": jnp.sum(correct & m), "count": jnp.sum(m)}
            for name, m in masks.items()
        }

    if group.shared:
        fn = lambda model, masks: per_client(model, group.inputs, group.labels, masks)
        return map_clients(fn, (models, group.masks), client_chunk)
    return map_clients(per_client, (models, group.inputs, group.labels, group.masks), client_chunk)


def evaluate(
    predict: Callable,
    models: Any,
    fed: Federation,
    client_chunk: int | None = None,
    example_chunk: int | None = 512,
) -> Counts:
    counts: Counts = {}
    for group in fed.eval_groups.values():
        counts.update(evaluate_group(predict, models, group, client_chunk, example_chunk))
    return counts


def accuracies(counts: Counts) -> dict[str, float]:
    """Pooled accuracy per setting (NaN where a setting has no examples, e.g. no missing class)."""
    out = {}
    for name, c in counts.items():
        total = float(np.sum(np.asarray(c["count"])))
        out[name] = float(np.sum(np.asarray(c["correct"]))) / total if total else float("nan")
    return out
