"""Where the time of a FedLoG run goes (Cora, K = 3, experiments/configs/fedlog_cora.py).

    python scripts/bench_fedlog.py                      # 100 rounds, the spec's round 0
    python scripts/bench_fedlog.py --rounds=10 --variant=released
    python scripts/bench_fedlog.py --gen_networks=5 --json=bench.json
    python scripts/bench_fedlog.py --rounds=2 --gen_epochs=10 --compare_generic
    python scripts/bench_fedlog.py --nobreakdown --end_to_end   # and experiment.run itself

The run itself is what `experiment.run` does: data, round 0 (one compiled program: encoder
pretraining, generator pretraining, the first local epoch, for every client at once), then the
rounds (one compiled program, evaluation included). The breakdown times generator and encoder
pretraining again as their own compiled programs on the same inputs and keys (extra work, not
part of the run; the rest of round 0 is the first local epoch), and evaluation as its own program
run once per round. The load average is printed because the machine may be shared.
"""

import dataclasses
import functools
import json
import os
import resource
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.configs import fedlog_cora
from fedjax_syn import experiment
from fedjax_syn.algorithms.fedlog import algorithm, generators, pair_gradients, setup
from fedjax_syn.algorithms.fedlog.config import make_spec
from fedjax_syn.algorithms.fedlog.encoder_pretraining import pretrain_encoder
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.engine import evaluation
from fedjax_syn.engine.round import EngineConfig, compile_init, make_init, make_round

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
    "Also time `experiment.run` of the same config as a user calls it, to check that it does "
    "the run timed above and nothing more.",
)
_JSON = flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def _compiled(fn, *args):
    start = time.perf_counter()
    return jax.jit(fn).lower(*args).compile(), time.perf_counter() - start


def config():
    cfg = fedlog_cora.get_config(_VARIANT.value)
    cfg.data_dir = _DATA_DIR.value
    cfg.rounds = _ROUNDS.value
    cfg.fedlog.pretrain_epochs = _PRETRAIN.value
    cfg.fedlog.gen_epochs = _GEN_EPOCHS.value
    cfg.fedlog.gen_networks = _GEN_NETS.value
    return cfg


def round_zero_parts(cfg, prepared, key):
    """Generator and encoder pretraining of every client as separate programs, with round 0's
    inputs and keys (`engine.round.init_step`'s). Returns {name: (compile s, run s)} and the
    encoder epochs run per client."""
    fed = prepared.fed
    spec = make_spec(prepared.task, fed.num_classes, algorithm.options(cfg, data_spec(prepared)))
    alg = experiment.build_algorithm(cfg, [prepared])
    init_key = jax.random.fold_in(key, 0)
    server_key, _ = jax.random.split(init_key)
    server = jax.jit(alg.init_server)(server_key, jax.tree.map(lambda leaf: leaf[0], fed.train))
    update_key = jax.random.split(jax.random.fold_in(init_key, 1), 3)[0]
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(jax.random.split(update_key, fed.num_clients))
    out = {}

    def encoder(server, data, keys):
        shared = setup.SharedKeys.from_server(server)
        head = spec.task.init(shared.head, data.inputs)["params"]["head"]
        params = {"params": {"encoder": server["params"]["params"]["encoder"], "head": head}}
        return pretrain_encoder(spec.task, params, data, keys[0], spec.config)

    def generator(server, data, keys, config=spec.config, pair_gradient=True):
        shared = setup.SharedKeys.from_server(server)
        gen0 = generators.init_generator(shared.generator, data.inputs.x.shape[-1], config)
        return generators.pretrain_generator(
            gen0,
            spec.task.model,
            data.inputs,
            data.labels,
            data.mask,
            keys[1],
            shared.networks,
            config,
            pair_gradient,
        )

    parts = {"encoder pretraining": encoder}
    if spec.config.prompt == "trained":
        parts["generator pretraining"] = generator
        if _GENERIC.value:
            parts["generator pretraining, generic GNN"] = functools.partial(
                generator, pair_gradient=False
            )
    results = {}
    for name, fn in parts.items():
        mapped = jax.vmap(fn, in_axes=(None, 0, 0))
        compiled, compile_s = _compiled(mapped, server, fed.train, keys)
        results[name], run_s = _timed(compiled, server, fed.train, keys)
        out[name] = (compile_s, run_s)
    if "generator pretraining" in parts:
        out["generator_flops"] = generator_flops(spec, server, fed.train, keys, generator)
    return out, [int(e) for e in results["encoder pretraining"].epochs]


def _flops(fn, *args) -> float:
    return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def generator_flops(spec, server, train, keys, generator) -> dict:
    """XLA's FLOP count of generator pretraining for all clients: the bank's real-graph gradients
    (once) and one epoch. Cost analysis counts a loop body once, so the epoch is the one-epoch
    program minus the bank."""
    one_epoch = dataclasses.replace(spec.config, gen_epochs=1)

    def bank(server, data, keys):
        shared = setup.SharedKeys.from_server(server)
        features = data.inputs.x.shape[-1]
        nets = pair_gradients.init_networks(
            spec.task.model, shared.networks, one_epoch.gen_networks, features
        )
        return pair_gradients.real_gradients(
            spec.task.model, nets, data.inputs, data.labels, data.mask
        )

    with_one_epoch = lambda s, d, k: generator(s, d, k, one_epoch)
    total = _flops(jax.vmap(with_one_epoch, in_axes=(None, 0, 0)), server, train, keys)
    bank_flops = _flops(jax.vmap(bank, in_axes=(None, 0, 0)), server, train, keys)
    return {"bank": bank_flops, "epoch": total - bank_flops}


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a jitted n x n f32 matmul (median of `repeats`): this machine's practical peak."""
    a, b = jax.random.normal(jax.random.key(0), (2, n, n))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    times = [_timed(matmul, a, b)[1] for _ in range(repeats)]
    return 2 * n**3 / sorted(times)[repeats // 2]


def data_spec(prepared) -> DataSpec:
    return DataSpec.of("graph", [prepared.fed], prepared.settings)


def main(argv):
    del argv
    cfg = config()
    figures = {"variant": _VARIANT.value, "rounds": cfg.rounds}
    start = time.perf_counter()
    prepared = experiment.prepare(cfg)
    figures["data_s"] = time.perf_counter() - start
    figures["fedlog"] = dataclasses.asdict(algorithm.options(cfg, data_spec(prepared)))
    fed = prepared.fed
    alg = experiment.build_algorithm(cfg, [prepared])
    key = jax.random.key(cfg.seed)

    start = time.perf_counter()
    run_init, _ = compile_init(make_init(alg), fed, jax.random.fold_in(key, 0))
    figures["compile_round0_s"] = time.perf_counter() - start
    (server, clients, metrics), figures["round0_s"] = _timed(run_init)

    round_fn = make_round(alg, EngineConfig(donate=False))
    start = time.perf_counter()
    round_c = round_fn.lower(server, clients, fed, key, evaluate=True).compile()
    figures["compile_rounds_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for r in range(1, cfg.rounds):  # round 0 is the setup round above
        server, clients, metrics = round_c(server, clients, fed, jax.random.fold_in(key, r))
    jax.block_until_ready(metrics)
    figures["rounds_s"] = time.perf_counter() - start
    figures["last_round"] = evaluation.accuracies(metrics["counts"])

    def evaluate(server, clients, fed, key):
        keys = jax.random.split(key, fed.num_clients)
        models = jax.vmap(lambda s, d, k: alg.personalize(server, s, d, k))(
            clients, fed.train, keys
        )
        return evaluation.evaluate(alg.predict, models, fed)

    eval_c, figures["compile_eval_s"] = _compiled(evaluate, server, clients, fed, key)
    start = time.perf_counter()
    for _ in range(cfg.rounds):
        counts = eval_c(server, clients, fed, key)
    jax.block_until_ready(counts)
    figures["evaluation_s"] = time.perf_counter() - start
    figures["run_total_s"] = (
        figures["data_s"]
        + figures["compile_round0_s"]
        + figures["round0_s"]
        + figures["compile_rounds_s"]
        + figures["rounds_s"]
    )
    if _BREAKDOWN.value:
        parts, epochs = round_zero_parts(cfg, prepared, key)
        figures["generator_flops"] = parts.pop("generator_flops", None)
        figures["round0_parts"] = {k: {"compile_s": c, "run_s": r} for k, (c, r) in parts.items()}
        figures["matmul_peak_gflops"] = matmul_peak() / 1e9
        figures["encoder_epochs"] = epochs
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if _END_TO_END.value:
        start = time.perf_counter()
        experiment.run(config())
        figures["experiment_run_s"] = time.perf_counter() - start
    figures["load_average"] = os.getloadavg()
    report(figures)
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(figures, f, indent=2)


def report(f: dict) -> None:
    rows = [
        ("data preparation", f["data_s"]),
        ("compile: round 0 program", f["compile_round0_s"]),
        ("round 0 (all clients)", f["round0_s"]),
    ]
    for name, part in f.get("round0_parts", {}).items():
        rows.append((f"  of which {name} (own program)", part["run_s"]))
    rows += [
        ("compile: round program", f["compile_rounds_s"]),
        (f"{f['rounds'] - 1} rounds after round 0, incl. evaluation", f["rounds_s"]),
        (f"  of which evaluation ({f['rounds']} x, own program)", f["evaluation_s"]),
        ("run total (compilation included)", f["run_total_s"]),
    ]
    if "experiment_run_s" in f:
        rows.append(("experiment.run of the same config, end to end", f["experiment_run_s"]))
    print(f"FedLoG on Cora, K=3, variant={f['variant']}, fedlog={f['fedlog']}")
    for name, seconds in rows:
        print(f"  {name:<48} {seconds:8.1f} s")
    flops = f.get("generator_flops")
    if flops:
        epochs = f["fedlog"]["gen_epochs"]
        total = flops["bank"] + epochs * flops["epoch"]
        run_s = f["round0_parts"]["generator pretraining"]["run_s"]
        peak = f["matmul_peak_gflops"]
        print(
            f"  generator pretraining: {flops['epoch'] / 1e9:.1f} GFLOP per epoch (all clients), "
            f"{flops['bank'] / 1e9:.1f} GFLOP for the networks' real gradients; {total / 1e12:.2f} "
            f"TFLOP in {run_s:.1f} s = {total / run_s / 1e9:.1f} GFLOP/s; matmul peak "
            f"{peak:.1f} GFLOP/s, so at least {total / peak / 1e9:.1f} s at peak"
        )
    parts = f.get("round0_parts", {})
    if "generator pretraining, generic GNN" in parts:
        ratio = (
            parts["generator pretraining, generic GNN"]["run_s"]
            / parts["generator pretraining"]["run_s"]
        )
        print(f"  generator pretraining: generic GNN / pair-specialised gradients = {ratio:.2f}")
    if "encoder_epochs" in f:
        print(f"  encoder pretraining epochs per client: {f['encoder_epochs']}")
    print(f"  peak RSS {f['peak_rss_mb']:.0f} MiB; load average {f['load_average']}")
    print(f"  last round: { {k: round(v, 4) for k, v in f['last_round'].items()} }")


if __name__ == "__main__":
    app.run(main)
