"""Where the time of a FedLoG run goes (Cora, K = 3, experiments/configs/fedlog_cora.py).

The run is measured as the run pipeline does it (benchmarks/end_to_end.py): data, round 0 (one
compiled program: encoder pretraining, generator pretraining and the first local epoch, for every
client at once), then the rounds, evaluation included. The breakdown then times encoder and
generator pretraining again as their own compiled programs on round 0's inputs and keys (extra
work, not part of the run; the rest of round 0 is the first local epoch), with XLA's FLOP count
of generator pretraining against a matmul peak.

    python -m benchmarks.fedlog                           # 100 rounds
    python -m benchmarks.fedlog --rounds=10 --variant=released
    python -m benchmarks.fedlog --rounds=2 --gen_epochs=10 --compare_generic
    python -m benchmarks.fedlog --nobreakdown --end_to_end    # and runs.program.run itself
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
from absl import flags

from benchmarks import end_to_end, harness, tables
from benchmarks.rounds import compiled_flops
from experiments import cli
from experiments.configs import fedlog_cora
from fedjax_syn.algorithms.fedlog import algorithm, generators, pair_gradients, setup
from fedjax_syn.algorithms.fedlog.config import make_spec
from fedjax_syn.algorithms.fedlog.encoder_pretraining import pretrain_encoder
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.runs import program
from fedjax_syn.runs.prepare import Prepared, build_algorithm, prepare

_VARIANT = flags.DEFINE_enum("variant", "default", list(fedlog_cora.VARIANTS), "Named config.")
_ROUNDS = flags.DEFINE_integer("rounds", 100, "Rounds (round 0 included, as in the config).")
_PRETRAIN = flags.DEFINE_integer("pretrain_epochs", 100, "Encoder pretraining epochs (max).")
_GEN_EPOCHS = flags.DEFINE_integer("gen_epochs", 100, "Generator pretraining epochs.")
_GEN_NETS = flags.DEFINE_integer("gen_networks", 20, "Random networks per generator epoch.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets folder ('' reads FEDJAX_SYN_DATA_DIR).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Time the round-0 parts separately too.")
_GENERIC = flags.DEFINE_bool(
    "compare_generic",
    False,
    "Breakdown: also time generator pretraining with the generic GNN on the pair graphs.",
)
_END_TO_END = flags.DEFINE_bool(
    "end_to_end",
    False,
    "Also time `runs.program.run` of the same config as a user calls it, to check that it does "
    "the run timed above and nothing more.",
)
_NAME = flags.DEFINE_string("name", "fedlog", "Results file: benchmarks/results/<name>.json.")

PerClient = Callable[[Any, Any, Any], Any]  # (server, one client's data, its keys) -> output


def config():
    cfg = fedlog_cora.get_config(_VARIANT.value)
    cfg.data_dir = _DATA_DIR.value
    cfg.rounds = _ROUNDS.value
    cfg.fedlog.pretrain_epochs = _PRETRAIN.value
    cfg.fedlog.gen_epochs = _GEN_EPOCHS.value
    cfg.fedlog.gen_networks = _GEN_NETS.value
    return cfg


def round_zero_programs(
    cfg, prepared: Prepared, server_key: jax.Array, generic: bool
) -> tuple[Any, dict[str, PerClient], dict[str, PerClient]]:
    """The only code here that reads FedLoG's internals. Returns the server state round 0 starts
    from, round 0's parts as per-client programs to time, and the per-client programs whose FLOPs
    describe generator pretraining: the real-graph gradients of the network bank ("bank") and
    one epoch with them ("one epoch")."""
    data_spec = DataSpec.of(cfg.track, [prepared.fed], prepared.settings)
    options = algorithm.options(cfg, data_spec)
    spec = make_spec(prepared.task, prepared.fed.num_classes, options)
    alg = build_algorithm(cfg, [prepared])
    server = jax.jit(alg.init_server)(server_key, harness.take_client(prepared.fed.train, 0))
    shared = setup.SharedKeys.from_server

    def encoder(server, data, keys):
        head = spec.task.init(shared(server).head, data.inputs)["params"]["head"]
        params = {"params": {"encoder": server["params"]["params"]["encoder"], "head": head}}
        return pretrain_encoder(spec.task, params, data, keys[0], spec.config)

    def generator(server, data, keys, config=spec.config, pair_gradient=True):
        gen0 = generators.init_generator(shared(server).generator, data.inputs.x.shape[-1], config)
        model, networks = spec.task.model, shared(server).networks
        inputs, labels, mask = data.inputs, data.labels, data.mask
        return generators.pretrain_generator(
            gen0, model, inputs, labels, mask, keys[1], networks, config, pair_gradient
        )

    def bank(server, data, keys):
        features = data.inputs.x.shape[-1]
        nets = pair_gradients.init_networks(
            spec.task.model, shared(server).networks, spec.config.gen_networks, features
        )
        return pair_gradients.real_gradients(
            spec.task.model, nets, data.inputs, data.labels, data.mask
        )

    timed: dict[str, PerClient] = {"encoder pretraining": encoder}
    counted: dict[str, PerClient] = {}
    if spec.config.prompt == "trained":
        timed["generator pretraining"] = generator
        if generic:
            timed["generator pretraining, generic GNN"] = functools.partial(
                generator, pair_gradient=False
            )
        one_epoch = dataclasses.replace(spec.config, gen_epochs=1)
        counted = {"bank": bank, "one epoch": functools.partial(generator, config=one_epoch)}
    return server, timed, counted


def breakdown(cfg) -> dict[str, Any]:
    """Round 0's parts as their own programs on round 0's inputs and keys (the engine's key
    plan: the server from the start key, each client's round-0 key split three ways)."""
    prepared = prepare(cfg)
    fed = prepared.fed
    start_key = jax.random.fold_in(jax.random.key(cfg.seed), 0)
    server_key, _ = jax.random.split(start_key)
    server, timed, counted = round_zero_programs(cfg, prepared, server_key, _GENERIC.value)
    update_key = jax.random.split(jax.random.fold_in(start_key, 1), 3)[0]
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(update_key, fed.num_clients))
    args = (server, fed.train, keys)
    compile_all = lambda fn: jax.jit(jax.vmap(fn, in_axes=(None, 0, 0))).lower(*args).compile()
    parts, outputs = {}, {}
    for name, fn in timed.items():
        compiled, compile_s = harness.time_once(compile_all, fn)
        outputs[name], run_s = harness.time_once(compiled, *args)
        parts[name] = {"compile_s": compile_s, "run_s": run_s}
    figures: dict[str, Any] = {
        "round0_parts": parts,
        "encoder_epochs": [int(e) for e in outputs["encoder pretraining"].epochs],
        "matmul_peak_gflops": harness.matmul_peak() / 1e9,
    }
    if counted:
        bank = compiled_flops(compile_all(counted["bank"]))
        epoch = compiled_flops(compile_all(counted["one epoch"]))
        if bank and epoch:
            # cost analysis counts a loop body once: one epoch is the one-epoch program less the bank
            figures["generator_flops"] = {"bank": bank, "epoch": epoch - bank}
    return figures


def main(argv: list[str]) -> None:
    del argv
    load_start = harness.load_average()
    figures = end_to_end.measure(config())
    end_to_end.print_figures(figures)
    payload = {"kind": "fedlog", "variant": _VARIANT.value, **figures, "load_start": load_start}
    if _BREAKDOWN.value:
        payload |= breakdown(config())
    if _END_TO_END.value:
        _, payload["experiment_run_s"] = harness.time_once(program.run, [config()])
    path = harness.write_result(_NAME.value, payload)
    print(f"{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
