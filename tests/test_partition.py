"""Partitions into clients and the vision federation built on them (PROTOCOL.md, vision track)."""

import time

import numpy as np
import pytest

from fedjax_syn.core.errors import UserError
from fedjax_syn.data.partition import PARTITIONS, partition
from fedjax_syn.data.vision import ImageDataset
from fedjax_syn.data.vision_split import build_vision_federation, class_count_table


def _balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _dataset(num_train: int = 2000, num_classes: int = 10, seed: int = 0) -> ImageDataset:
    """A tiny dataset whose pixel [0, 0, 0] holds the example's index, to trace examples."""
    rng = np.random.default_rng(seed)
    train_y = rng.integers(0, num_classes, num_train).astype(np.int32)
    train_x = np.zeros((num_train, 2, 2, 1), np.float32)
    train_x[:, 0, 0, 0] = np.arange(num_train)
    test_y = np.arange(50, dtype=np.int32) % num_classes
    test_x = rng.normal(size=(50, 2, 2, 1)).astype(np.float32)
    return ImageDataset("tiny", train_x, train_y, test_x, test_y, num_classes)


def _ids(split) -> np.ndarray:
    return split[0][:, 0, 0, 0].astype(np.int64)


# --- partition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", PARTITIONS)
def test_every_example_lands_in_exactly_one_non_empty_sorted_part(method):
    labels = np.random.default_rng(0).integers(0, 10, 3000)
    parts = partition(labels, 40, method, seed=3, alpha=0.1, classes_per_part=2)
    assert len(parts) == 40
    assert all(p.size > 0 for p in parts)
    assert all(np.issubdtype(p.dtype, np.integer) and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


@pytest.mark.parametrize("method", PARTITIONS)
def test_same_seed_gives_identical_parts_and_another_seed_differs(method):
    labels = _balanced_labels(10, 100)
    first = partition(labels, 7, method, seed=11, alpha=0.5, classes_per_part=3)
    again = partition(labels, 7, method, seed=11, alpha=0.5, classes_per_part=3)
    other = partition(labels, 7, method, seed=12, alpha=0.5, classes_per_part=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_1000_dirichlet_parts_at_alpha_005_on_60k_labels_are_quick_and_non_empty():
    labels = _balanced_labels(10, 6000)
    start = time.perf_counter()
    parts = partition(labels, 1000, "dirichlet", seed=0, alpha=0.05)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"took {elapsed:.1f} s"
    assert min(p.size for p in parts) >= 1
    assert sum(p.size for p in parts) == labels.size


@pytest.mark.parametrize("method", PARTITIONS)
def test_1000_parts_on_digits_sized_data_are_non_empty(method):
    labels = np.random.default_rng(1).integers(0, 10, 1797)
    parts = partition(labels, 1000, method, seed=0, alpha=0.05, classes_per_part=2)
    assert min(p.size for p in parts) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


def test_iid_part_sizes_differ_by_at_most_one():
    sizes = [p.size for p in partition(_balanced_labels(10, 101), 7, "iid", seed=0)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("classes_per_part", [1, 2, 3, 10])
def test_shards_give_each_part_exactly_classes_per_part_classes(classes_per_part):
    labels = _balanced_labels(10, 600)
    parts = partition(labels, 20, "shards", seed=4, classes_per_part=classes_per_part)
    assert [np.unique(labels[p]).size for p in parts] == [classes_per_part] * 20


def test_shards_deal_every_class_to_a_balanced_number_of_parts():
    labels = _balanced_labels(10, 600)
    parts = partition(labels, 7, "shards", seed=4, classes_per_part=3)  # 21 slots over 10 classes
    holders = np.zeros(10, int)
    for p in parts:
        holders[np.unique(labels[p])] += 1
    assert set(holders) <= {2, 3} and holders.sum() == 21


def test_small_alpha_concentrates_classes():
    labels = _balanced_labels(10, 500)

    def mean_classes(alpha):
        parts = partition(labels, 20, "dirichlet", seed=0, alpha=alpha)
        return np.mean([np.unique(labels[p]).size for p in parts])

    assert mean_classes(0.05) < 4 < 9 < mean_classes(100.0)


def test_min_class_size_gives_every_part_a_class_that_large():
    labels = _balanced_labels(10, 6000)
    parts = partition(labels, 1000, "dirichlet", seed=2, alpha=0.05, min_class_size=3)
    assert min(np.bincount(labels[p]).max() for p in parts) >= 3
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(method="round_robin"), "round_robin"),
        (dict(method="dirichlet", alpha=0.0), "alpha"),
        (dict(method="dirichlet", alpha=-1.0), "alpha"),
        (dict(method="dirichlet", alpha=float("nan")), "alpha"),
        (dict(method="iid", num_parts=0), "num_parts"),
        (dict(method="iid", num_parts=101), "num_parts=101"),
        (dict(method="shards", classes_per_part=0), "classes_per_part=0"),
        (dict(method="shards", classes_per_part=11), "classes_per_part=11"),
        (dict(method="shards", num_parts=3, classes_per_part=3), "4..10"),
        (dict(method="iid", seed=-1), "seed"),
        (dict(method="iid", num_parts=50, min_class_size=3), "fewer parts"),
        (dict(method="iid", min_class_size=0), "min_class_size"),
    ],
)
def test_bad_arguments_raise_one_line_user_errors(kwargs, fragment):
    args = dict(labels=_balanced_labels(10, 10), num_parts=5, seed=0) | kwargs
    with pytest.raises(UserError) as info:
        partition(**args)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_non_integer_labels_are_rejected():
    with pytest.raises(UserError, match="1-D integer"):
        partition(np.zeros(10, np.float32), 2, "iid", seed=0)


# --- federation --------------------------------------------------------------------------------


def test_federation_accounts_for_every_example_once():
    data = _dataset()
    fed = build_vision_federation(data, 6, "dirichlet", alpha=0.3, seed=5, missing_frac=0.3)
    seen = [_ids(s) for k in range(6) for s in (fed.train[k], fed.val[k], fed.test[k])]
    seen.append(_ids(fed.new_client))
    used = np.concatenate(seen)
    assert np.unique(used).size == used.size  # nothing twice
    # What is left out is exactly the examples of each client's missing classes.
    per_client_used = [
        np.concatenate([_ids(s[k]) for s in (fed.train, fed.val, fed.test)]) for k in range(6)
    ]
    excluded = sum(int(fed.counts[k][fed.missing[k]].sum()) for k in range(6))
    assert used.size + excluded == data.train_y.size
    for k, ids in enumerate(per_client_used):
        np.testing.assert_array_equal(
            np.bincount(data.train_y[ids], minlength=10), np.where(fed.missing[k], 0, fed.counts[k])
        )


def test_images_and_labels_stay_paired():
    data = _dataset()
    fed = build_vision_federation(data, 4, "iid", seed=0)
    for split in [*fed.train, *fed.val, *fed.test, fed.new_client]:
        np.testing.assert_array_equal(split[1], data.train_y[_ids(split)])


def test_counts_hold_examples_per_client_per_class_and_new_client_keeps_all_its_data():
    data = _dataset()
    fed = build_vision_federation(data, 5, "shards", classes_per_part=3, seed=1)
    assert fed.counts.shape == (6, 10) and fed.counts.sum() == data.train_y.size
    np.testing.assert_array_equal(np.bincount(fed.new_client[1], minlength=10), fed.counts[5])
    np.testing.assert_array_equal(fed.global_test[1], data.test_y)
    assert fed.num_classes == 10


def test_classes_below_min_class_count_are_missing():
    data = _dataset()
    fed = build_vision_federation(data, 8, "dirichlet", alpha=0.1, seed=2, min_class_count=5)
    np.testing.assert_array_equal(fed.missing, fed.counts[:8] < 5)
    for k in range(8):
        labels = np.concatenate([fed.train[k][1], fed.val[k][1], fed.test[k][1]])
        assert not np.any(fed.missing[k][labels])


def test_missing_frac_hides_rounded_share_of_present_classes():
    data = _dataset()
    fed = build_vision_federation(data, 4, "iid", seed=0, missing_frac=0.3)
    # iid: every client holds all 10 classes; round(0.3 * 10) = 3 more are hidden per client.
    assert fed.missing.sum(axis=1).tolist() == [3, 3, 3, 3]
    small = build_vision_federation(data, 4, "iid", seed=0, missing_frac=0.01)
    assert small.missing.sum(axis=1).tolist() == [1, 1, 1, 1]  # at least one


@pytest.mark.parametrize("seed", range(6))
def test_hiding_never_takes_a_class_from_its_last_trainer(seed):
    data = _dataset()
    plain = build_vision_federation(data, 5, "shards", classes_per_part=3, seed=seed)
    hidden = build_vision_federation(
        data, 5, "shards", classes_per_part=3, seed=seed, missing_frac=0.9
    )
    trained_before = (~plain.missing).any(axis=0)
    trained_after = (~hidden.missing).any(axis=0)
    np.testing.assert_array_equal(trained_after, trained_before)
    assert (hidden.missing.sum(axis=1) > plain.missing.sum(axis=1)).any()
    assert (~hidden.missing).any(axis=1).all()  # no client loses every class


def test_iid_federation_trains_every_class():
    fed = build_vision_federation(_dataset(), 5, "iid", seed=3, missing_frac=0.5)
    assert (~fed.missing).any(axis=0).all()


def test_split_is_stratified_with_requested_proportions():
    data = _dataset(num_train=4000)
    fed = build_vision_federation(data, 3, "dirichlet", alpha=1.0, seed=4)
    for k in range(3):
        n_train, n_val, n_test = (
            np.bincount(s[k][1], minlength=10) for s in (fed.train, fed.val, fed.test)
        )
        total = n_train + n_val + n_test
        present = ~fed.missing[k]
        assert np.all(np.abs(n_val - 0.15 * total)[present] < 1)
        assert np.all(np.abs(n_test - 0.15 * total)[present] < 1)
        assert np.all(n_train[present] >= 1)


def test_tiny_classes_go_to_train_first():
    labels = np.array([0] * 40 + [1] * 4 + [2] * 40, np.int32)
    x = np.zeros((labels.size, 2, 2, 1), np.float32)
    data = ImageDataset("tiny", x, labels, x[:3], labels[:3], 3)
    held_somewhere = False
    for seed in range(5):
        fed = build_vision_federation(data, 1, "iid", seed=seed, min_class_count=1)
        held = fed.counts[0, 1]  # 0..4 examples of class 1; 0.15 * 4 < 1, so none for val/test
        held_somewhere |= held > 0
        assert np.bincount(fed.train[0][1], minlength=3)[1] == held
        assert np.bincount(fed.val[0][1], minlength=3)[1] == 0
        assert np.bincount(fed.test[0][1], minlength=3)[1] == 0
    assert held_somewhere


def test_custom_split_fractions_are_honoured():
    data = _dataset(num_train=4000)
    fed = build_vision_federation(data, 2, "iid", seed=0, split=(0.5, 0.25, 0.25))
    n_train = sum(len(y) for _, y in fed.train)
    n_val = sum(len(y) for _, y in fed.val)
    assert abs(n_val / (n_train + n_val + sum(len(y) for _, y in fed.test)) - 0.25) < 0.01


def test_same_seed_gives_byte_identical_federation():
    data = _dataset()
    kwargs = dict(alpha=0.2, seed=9, missing_frac=0.4)
    a = build_vision_federation(data, 5, "dirichlet", **kwargs)
    b = build_vision_federation(data, 5, "dirichlet", **kwargs)
    arrays_a = [a.missing, a.counts, *a.new_client] + [
        t for s in (a.train, a.val, a.test) for c in s for t in c
    ]
    arrays_b = [b.missing, b.counts, *b.new_client] + [
        t for s in (b.train, b.val, b.test) for c in s for t in c
    ]
    assert len(arrays_a) == len(arrays_b)
    assert all(
        x.tobytes() == y.tobytes() and x.dtype == y.dtype
        for x, y in zip(arrays_a, arrays_b, strict=True)
    )


def test_too_many_clients_suggests_fewer_clients():
    data = _dataset(num_train=60)
    with pytest.raises(UserError, match="fewer parts"):
        build_vision_federation(data, 40, "dirichlet", alpha=0.1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(num_clients=0), "num_clients"),
        (dict(partition="louvain"), "louvain"),
        (dict(alpha=0.0), "alpha"),
        (dict(min_class_count=0), "min_class_count"),
        (dict(missing_frac=1.0), "missing_frac"),
        (dict(missing_frac=-0.1), "missing_frac"),
        (dict(split=(0.7, 0.2, 0.2)), "split"),
        (dict(split=(0.0, 0.5, 0.5)), "split"),
        (dict(split=(0.8, 0.2)), "split"),
    ],
)
def test_bad_federation_arguments_raise_user_errors(kwargs, fragment):
    args = dict(num_clients=3) | kwargs
    with pytest.raises(UserError) as info:
        build_vision_federation(_dataset(), **args)
    assert fragment in str(info.value)


def test_class_count_table_lists_every_client_and_marks_missing_classes():
    fed = build_vision_federation(_dataset(), 4, "shards", classes_per_part=2, seed=0)
    table = class_count_table(fed)
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 4 + 2  # header, rule, clients, new client, trainer counts
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    for k in range(4):
        per_split = [np.bincount(s[k][1], minlength=10) for s in (fed.train, fed.val, fed.test)]
        for c in range(10):
            expected = (
                f"m:{fed.counts[k, c]}"
                if fed.missing[k, c]
                else "/".join(str(n[c]) for n in per_split)
            )
            assert cells[2 + k][2 + c] == expected
    assert cells[6][2:] == [str(n) for n in fed.counts[4]]
    assert cells[7][2:] == [str(n) for n in (~fed.missing).sum(axis=0)]
    assert fed.missing.any()  # shards with 2 of 10 classes: the table must show missing cells
