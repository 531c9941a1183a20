"""Gradient matching on pair graphs, side by side in one run: the bank's gradients by `jax.grad`
(the library's `pair_gradients.pair_matching_loss`) against the first layer's gradients formed by
hand from the loss's gradients with respect to its outputs (dW_root = x^T d_centre + g(x)^T
d_partner, ...), with x's products with the first layer taken once before the loop.

The case is setup round 0's generator pretraining on Cora, K = 3 (experiments/configs/
fedlog_cora.py, seed 0): every client's training nodes, the default bank of 20 GraphSAGE networks
(128-64), the epoch loop (Adam on the generator; the matching term only, the part that differs)
vmapped over the clients. The banks' real-graph gradients are computed beforehand, outside the
timed programs. Reports the median of `--repeats` interleaved runs, XLA's temporary memory and the
relative difference between the two variants' epoch losses.

    taskset -c 0 python -m benchmarks.pair_gradients
    taskset -c 0 python -m benchmarks.pair_gradients --epochs=20 --repeats=5
"""

import functools

import jax
import jax.numpy as jnp
import optax
from absl import flags

from benchmarks import harness
from experiments import cli
from experiments.configs import fedlog_cora
from fedjax_syn.algorithms.fedlog import algorithm, generators, pair_gradients
from fedjax_syn.algorithms.fedlog.shared import nll
from fedjax_syn.core.interface import DataSpec
from fedjax_syn.runs.prepare import prepare

_EPOCHS = flags.DEFINE_integer("epochs", 10, "Generator epochs per timed run.")
_NETWORKS = flags.DEFINE_integer("networks", 20, "Random networks in the bank.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per variant (interleaved).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets folder ('' reads FEDJAX_SYN_DATA_DIR).")


def hand_matching(nets, real, x):
    """prompts, labels, weights -> the matching loss, with the first layer's gradients formed by
    hand; what does not depend on the generator (x's products with the folded first layer, the
    folded real gradients) is taken here, once, outside the epoch loop."""
    encoder, head = nets["params"]["encoder"], nets["params"]["head"]
    layers = [encoder[f"SAGEConv_{i}"] for i in range(len(real))]
    real_layers = [real[f"SAGEConv_{i}"] for i in range(len(real))]
    fold = lambda kernel: jnp.moveaxis(kernel, 0, 1).reshape(kernel.shape[1], -1)
    root, neighbour = fold(layers[0]["root"]["kernel"]), fold(layers[0]["neighbour"]["kernel"])
    real_root = fold(real_layers[0]["root"]["kernel"])
    real_neighbour = fold(real_layers[0]["neighbour"]["kernel"])
    x_root, x_neighbour = x @ root, x @ neighbour
    n, m = x.shape[0], head["kernel"].shape[0]
    bias = layers[0]["bias"].reshape(-1)

    def sage(layer, node, partner):
        return (
            jnp.einsum("nmh,mho->nmo", node, layer["root"]["kernel"])
            + jnp.einsum("nmh,mho->nmo", partner, layer["neighbour"]["kernel"])
            + layer["bias"]
        )

    def loss(prompts, labels, weights):
        def network_loss(outputs, rest):
            centre, partner = (out.reshape(n, m, -1) for out in outputs)
            for layer in rest:
                centre, partner = jax.nn.relu(centre), jax.nn.relu(partner)
                centre, partner = sage(layer, centre, partner), sage(layer, partner, centre)
            logits = jnp.einsum("nmh,mhc->nmc", centre, head["kernel"]) + head["bias"]
            log_probs = jax.nn.log_softmax(logits)
            return jnp.sum(jax.vmap(nll, in_axes=(1, None, None))(log_probs, labels, weights))

        outputs = (x_root + prompts @ neighbour + bias, prompts @ root + x_neighbour + bias)
        (d_centre, d_partner), d_rest = jax.grad(network_loss, argnums=(0, 1))(outputs, layers[1:])
        mse = lambda got, want: jnp.mean((got - want) ** 2)
        total = (
            mse(x.T @ d_centre + prompts.T @ d_partner, real_root)
            + mse(prompts.T @ d_centre + x.T @ d_partner, real_neighbour)
            + mse(jnp.sum(d_centre + d_partner, axis=0).reshape(m, -1), real_layers[0]["bias"])
        )
        for got, want in zip(jax.tree.leaves(d_rest), jax.tree.leaves(real_layers[1:])):
            total = total + mse(got, want)
        return total

    return loss


def grad_matching(nets, real, x):
    """The library's matching loss (`jax.grad` of the bank's loss)."""
    return functools.partial(
        pair_gradients.pair_matching_loss, pair_gradients.pair_bank(nets, real), x
    )


VARIANTS = {"hand-derived": hand_matching, "jax.grad": grad_matching}


def epoch_loop(matching, config, gen0, nets, real, data, key):
    """The epoch losses [epochs] of generator pretraining's matching term on one client."""
    select_key, epoch_key = jax.random.split(key)
    idx, valid = generators.select_nodes(data.mask, select_key, config.gen_nodes)
    x, labels = data.inputs.x[idx], data.labels[idx]
    loss_of = matching(nets, real, x)
    gen, optimizer = generators.generator(config), optax.adam(config.gen_lr)

    def epoch(carry, i):
        params, opt_state = carry

        def loss(params):
            rngs = {"dropout": jax.random.fold_in(epoch_key, i)}
            return loss_of(gen.apply(params, x, train=True, rngs=rngs), labels, valid)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    carry = (gen0, optimizer.init(gen0))
    return jax.lax.scan(epoch, carry, jnp.arange(config.gen_epochs))[1]


def main(argv):
    del argv
    cfg = fedlog_cora.get_config()
    cfg.data_dir = _DATA_DIR.value
    cfg.fedlog.gen_epochs = _EPOCHS.value
    cfg.fedlog.gen_networks = _NETWORKS.value
    prepared = prepare(cfg)
    fed = prepared.fed
    config = algorithm.options(cfg, DataSpec.of("graph", [fed], prepared.settings))
    gnn, features = prepared.task.model, fed.train.inputs.x.shape[-1]
    bank_key, gen_key, client_key = jax.random.split(jax.random.key(0), 3)
    keys = jax.random.split(client_key, fed.num_clients)
    gen0 = generators.init_generator(gen_key, features, config)
    nets = pair_gradients.init_networks(gnn, bank_key, config.gen_networks, features)
    real_of = lambda data: pair_gradients.real_gradients(
        gnn, nets, data.inputs, data.labels, data.mask
    )
    real = jax.block_until_ready(jax.jit(jax.vmap(real_of))(fed.train))

    runners, memory = {}, {}
    for name, matching in VARIANTS.items():
        run = functools.partial(epoch_loop, matching, config, gen0, nets)
        compiled = jax.jit(jax.vmap(run)).lower(real, fed.train, keys).compile()
        memory[name] = compiled.memory_analysis().temp_size_in_bytes
        runners[name] = (lambda _, c=compiled: c(real, fed.train, keys), None)
    losses, timings = harness.time_interleaved(runners, _REPEATS.value)
    best = {name: timing.median_s for name, timing in timings.items()}

    hand, grad = losses["hand-derived"], losses["jax.grad"]
    print(
        f"Cora K={fed.num_clients}, {config.gen_nodes} nodes per client, {features} features, "
        f"{config.gen_networks} networks {gnn.hidden}, {config.gen_epochs} epochs"
    )
    for name in VARIANTS:
        print(f"  {name:<13} {best[name]:7.2f} s   temp memory {memory[name] / 2**20:7.1f} MiB")
    print(
        f"  jax.grad / hand-derived: time {best['jax.grad'] / best['hand-derived']:.3f}, "
        f"memory {memory['jax.grad'] / memory['hand-derived']:.3f}"
    )
    relative = jnp.max(jnp.abs(grad - hand) / jnp.abs(hand), axis=0)  # per epoch
    print(
        f"  relative loss difference: first epoch {float(relative[0]):.1e} (same generator), "
        f"largest {float(jnp.max(relative)):.1e} (rounding carried through Adam's updates)"
    )
    print(f"  load average {harness.load_average()}")


if __name__ == "__main__":
    cli.run(main)
