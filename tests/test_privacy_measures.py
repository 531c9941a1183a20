"""Each privacy measure on a case whose answer is known by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_syn.privacy import audit, inversion, membership, memorisation


def test_an_exact_copy_has_dcr_ratio_zero_and_counts_as_closer():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 6))
    synthetic = np.concatenate([real[:3], real[:2] + 100.0])
    result = memorisation.dcr(synthetic, real)
    np.testing.assert_array_equal(result.ratio[:3], 0.0)
    assert result.ratio[3:].min() > 10
    np.testing.assert_array_equal(result.closer, [True] * 3 + [False] * 2)
    assert result.share_closer == 0.6
    holdout = rng.normal(size=(20, 6))
    assert memorisation.train_share(real[:10], real, holdout) == 1.0
    assert memorisation.train_share(real[:10], real, real) == 0.5  # the same records: ties


def test_a_global_set_that_copies_one_clients_record_has_ratio_zero_and_gives_it_away():
    # Two clients, two training and two held-out records each; the server's global set holds a
    # copy of client 0's first training record (class 0, every other record is of class 1) and an
    # invalid slot.
    rng = np.random.default_rng(3)
    records = rng.normal(size=(2, 4, 5))
    labels = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    members = np.array([[True, True, False, False]] * 2)
    server = {
        "x_global": np.stack([records[0, 0], 100.0 + records[0, 1]]),
        "y_global": np.array([0, 1]),
        "valid": np.array([True, False]),
    }
    x, y, valid = audit.global_synthetic("fedlog_vision", server, num_classes=2)
    union = (np.concatenate(list(a)) for a in (records, labels, members, ~members))
    measures = audit.synthetic_measures(x[valid], y[valid], *union)
    assert measures["dcr_median"] == 0.0 and measures["dcr_closer"] == 1.0
    assert measures["dcr_train_share"] == 1.0  # as many held-out as training records: no subsample
    # The copied record alone scores above every other record (whose class has no global
    # example): it beats all 4 non-members, the other 3 members tie them.
    assert measures["distance_auc"] == (4 + 3 * 4 * 0.5) / 16
    # Graph FedLoG's global nodes are class-major, `slots` per class.
    x, y, valid = audit.global_synthetic("fedlog", {"x_global": np.zeros((6, 5))}, num_classes=3)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])
    assert bool(np.all(valid)) and audit.global_synthetic("fedavg", server, 2) is None


def test_auc_of_a_perfect_separator_is_one_and_of_one_distribution_a_half():
    assert membership.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert membership.auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert membership.auc(np.ones(5), np.ones(7)) == 0.5  # ties count half
    rng = np.random.default_rng(1)
    same = membership.auc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same - 0.5) < 0.02


def test_attack_scores_rank_what_they_should():
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [1.0, 0.0]])
    labels = np.array([0, 0, 0])
    loss = membership.loss_scores(logits, labels)
    assert loss[0] > loss[2] > loss[1]
    confidence = membership.logit_confidence(logits, labels)
    np.testing.assert_allclose(confidence, [4.0, -4.0, 1.0], rtol=1e-6)
    records = np.array([[0.0, 0.0], [5.0, 5.0]])
    synthetic = np.array([[0.0, 0.0], [5.0, 5.0]])
    distance = membership.distance_scores(records, [0, 0], synthetic, [0, 1])
    np.testing.assert_allclose(distance, [0.0, -np.sqrt(50.0)])
    # LiRA: a record the target is more confident on than its OUT shadows scores higher.
    shadows = np.array([[0.0, 1.0], [0.2, 1.2], [-0.2, 0.8]])
    scores = membership.lira_offline(np.array([3.0, 1.0]), shadows, np.zeros((3, 2), bool))
    assert scores[0] > 10 and abs(scores[1]) < 1e-6


def test_gradient_inversion_recovers_one_example_of_a_linear_model():
    features, classes = 6, 3
    key_w, key_x, key_0 = jax.random.split(jax.random.key(0), 3)
    params = {"w": 0.1 * jax.random.normal(key_w, (features, classes)), "b": jnp.zeros(classes)}
    x_true = jax.random.normal(key_x, (1, features))
    label = jnp.array([1])

    def gradient(x):
        def loss(p):
            logits = x @ p["w"] + p["b"]
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(1), label])

        return jax.grad(loss)(params)

    update = jax.tree.map(lambda g: 0.05 * g, gradient(x_true))  # one SGD step's change
    x0 = jax.random.normal(key_0, (1, features))
    x, mismatch = jax.jit(inversion.invert_update, static_argnums=(0, 3))(
        gradient, update, x0, 1000, 0.05
    )
    assert mismatch < 1e-5
    np.testing.assert_allclose(x, x_true, atol=1e-2)
    assert inversion.cosine(x.ravel(), x_true.ravel()) > 0.9999


def test_ssim_is_one_for_equal_images_and_picks_the_closest_record():
    rng = np.random.default_rng(2)
    records = rng.uniform(-1.0, 1.0, size=(4, 8, 8, 1))
    assert np.allclose(inversion.ssim(records, records, -1.0, 1.0), 1.0)
    noisy = records[2:3] + 0.05 * rng.normal(size=(1, 8, 8, 1))
    best = inversion.best_match_ssim(noisy, records, -1.0, 1.0)
    assert 0.9 < best[0] < 1.0
    np.testing.assert_array_equal(np.argmax(inversion.ssim(noisy, records, -1.0, 1.0)), 2)
    assert inversion.ssim(records[0], -records[0], -1.0, 1.0) < 0
