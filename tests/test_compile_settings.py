"""The suite compiles with cheaper XLA:CPU settings than runs do (tests/conftest.py: LLVM level 0,
the elemental fusion emitter). Every other test relies on those settings computing the same
functions as XLA's defaults; this one checks it on whole rounds, evaluation included."""

import jax
import numpy as np
import pytest

from fedjax_syn.engine.round import EngineConfig, make_init, make_round
from tests.engine_fixtures import algorithm, make_federation

# XLA's defaults, which runs compile with (no XLA_FLAGS).
RUN_SETTINGS = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}
# The suite's, spelled out so that this test does not depend on the environment it runs in.
SUITE_SETTINGS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def _three_rounds(name: str, options: dict):
    """The server, clients and metrics after three evaluated rounds, compiled with `options`."""
    alg, fed = algorithm(name), make_federation(pad_clients_to=4)
    engine = EngineConfig(donate=False)
    key = jax.random.key(0)
    lowered = make_init(alg, engine).lower(fed, key)
    server, clients, _ = lowered.compile(options)(fed, key)
    round_fn = make_round(alg, engine).lower(server, clients, fed, key, evaluate=True)
    round_fn = round_fn.compile(options)
    outputs = []
    for r in range(1, 4):
        server, clients, metrics = round_fn(server, clients, fed, jax.random.fold_in(key, r))
        outputs.append((server, clients, metrics))
    return outputs


# FedAvg-FT: training, averaging and fine-tuning; MOON: its cosine similarities and log-softmax.
@pytest.mark.parametrize("name", ["fedavg_ft", "moon"])
def test_the_suites_compiler_settings_compute_what_runs_compute(name):
    suite, runs = _three_rounds(name, SUITE_SETTINGS), _three_rounds(name, RUN_SETTINGS)
    leaves = [jax.tree.leaves(tree) for tree in (suite, runs)]
    assert len(leaves[0]) == len(leaves[1]) > 0
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
