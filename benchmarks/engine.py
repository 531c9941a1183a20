"""Times one FedAvg round of the engine in every layout and reports achieved FLOP/s against a
matmul peak, for MLPs and ConvNets over a range of client counts (benchmarks/rounds.py).

Layouts: loop (the per-client jitted loop), vmapped, chunk=k, and sharded xN over --devices
emulated host devices (the module restarts itself with
XLA_FLAGS=--xla_force_host_platform_device_count=N). Local training is a fixed number of SGD
steps, unrolled unless --nounroll (which keeps the steps in the engine's loop, where XLA:CPU runs
convolutions much slower). Figures go to benchmarks/results/<--name>.json.

    python -m benchmarks.engine --devices=2      # full run
    python -m benchmarks.engine --quick
    python -m benchmarks.engine --models=convnet --convnet_clients=100 --image_size=28 \\
        --width=128 --steps=2 --repeats=3 --chunks=
"""

import os
import sys

import jax
from absl import flags

from benchmarks import harness, rounds, tables
from experiments import cli
from fedjax_syn.models.conv import CONV_IMPLS

_CLIENTS = flags.DEFINE_list("clients", ["10", "100", "1000"], "Numbers of clients (MLP).")
_CONV_CLIENTS = flags.DEFINE_list(
    "convnet_clients", ["10", "100"], "Numbers of clients for the ConvNet."
)
_MODELS = flags.DEFINE_list("models", ["mlp", "convnet"], "Models: mlp (64-H-10), convnet.")
_STEPS = flags.DEFINE_integer("steps", 10, "Local SGD steps per round.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 10, "Local minibatch size.", lower_bound=1)
_EXAMPLES = flags.DEFINE_integer("examples", 50, "Training examples per client.", lower_bound=1)
_UNROLL = flags.DEFINE_bool(
    "unroll", True, "Unroll the local steps (Schedule.unroll); --nounroll keeps the loop."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds per layout.", lower_bound=1)
_CHUNKS = flags.DEFINE_list("chunks", ["10", "100"], "client_chunk values (those < clients run).")
_DEVICES = flags.DEFINE_integer(
    "devices", 1, "Also time the round sharded over N host devices.", lower_bound=1
)
_HIDDEN = flags.DEFINE_integer("mlp_hidden", 32, "MLP hidden width (64-H-10).", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 32, "ConvNet width (128 in the papers).", lower_bound=1)
_CONV = flags.DEFINE_enum(
    "conv", "auto", list(CONV_IMPLS), "ConvNet convolutions (models/conv.py; auto: by backend)."
)
_IMAGE = flags.DEFINE_integer(
    "image_size", 8, "ConvNet input side: 8 (digits) or 28 (MNIST).", lower_bound=8
)
_PEAK_N = flags.DEFINE_integer("peak_size", 2048, "Side of the peak's f32 matmul.", lower_bound=1)
_QUICK = flags.DEFINE_bool("quick", False, "Small run: 10,100 clients, 3 repeats, one chunk size.")
_NAME = flags.DEFINE_string("name", "engine", "Results file: benchmarks/results/<name>.json.")

QUICK = {"clients": ["10", "100"], "convnet_clients": ["10"], "repeats": 3, "chunks": ["10"]}


def reexec_with_host_devices(n: int) -> None:
    """Restarts this module with n emulated host devices (XLA reads the flag once, at start)."""
    flag = f"--xla_force_host_platform_device_count={n}"
    if flag in os.environ.get("XLA_FLAGS", ""):
        cli.fail(f"asked for {n} devices, but only {jax.device_count()} came up")
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip())
    env.setdefault("JAX_PLATFORMS", "cpu")
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.engine", *sys.argv[1:]], env)


def setup(model: str, clients: int) -> rounds.RoundSetup:
    shape = (64,) if model == "mlp" else (_IMAGE.value, _IMAGE.value, 1)
    return rounds.RoundSetup(
        model,
        clients,
        shape,
        hidden=(_HIDDEN.value,),
        width=_WIDTH.value,
        conv=_CONV.value,
        steps=_STEPS.value,
        batch=_BATCH.value,
        examples=_EXAMPLES.value,
        unroll=_UNROLL.value,
    )


def main(argv: list[str]) -> None:
    del argv
    if _DEVICES.value > 1 and jax.device_count() < _DEVICES.value:
        reexec_with_host_devices(_DEVICES.value)
    if _QUICK.value:
        for flag, value in QUICK.items():
            if not flags.FLAGS[flag].present:
                flags.FLAGS[flag].value = value
    for m in _MODELS.value:
        if m not in ("mlp", "convnet"):
            cli.fail(f"unknown model {m!r}; choose from mlp, convnet")
    sizes = {"mlp": _CLIENTS.value, "convnet": _CONV_CLIENTS.value}
    for name, values in (("clients", _CLIENTS.value), ("convnet_clients", _CONV_CLIENTS.value)):
        if not all(v.isdigit() and int(v) > 0 for v in values):
            cli.fail(f"--{name} must be positive integers, got {','.join(values)!r}")
    if not all(v.isdigit() and int(v) > 0 for v in _CHUNKS.value):
        cli.fail(f"--chunks must be positive integers, got {','.join(_CHUNKS.value)!r}")
    load_start = harness.load_average()
    print(f"load average {load_start:.2f}", flush=True)
    peak = harness.matmul_peak(_PEAK_N.value)
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({_PEAK_N.value}^2 f32 matmul, median)", flush=True)
    chunks = tuple(int(c) for c in _CHUNKS.value)
    configs = []
    for model in _MODELS.value:
        for clients in sizes[model]:
            result = rounds.compare(
                setup(model, int(clients)),
                repeats=_REPEATS.value,
                chunks=chunks,
                peak=peak,
                devices=_DEVICES.value,
            )
            rounds.print_comparison(result)
            configs.append(result)
    payload = {
        "kind": "rounds",
        "peak_gflops": peak / 1e9,
        "peak_size": _PEAK_N.value,
        "load_start": load_start,
        "configs": configs,
    }
    path = harness.write_result(_NAME.value, payload)
    print(f"\n{tables.render(harness.read_result(path))}\nwrote {path}")


if __name__ == "__main__":
    cli.run(main)
