"""Datasets read from the configured data directory (never from a path sent by a client):
CIFAR-10's python-pickle batches, MNIST idx files, and ``.npz`` archives.

Every failure (missing file, unexpected content, fewer examples than asked for) is raised as
``DatasetError`` with the file, the place it was looked for, and the format expected.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynascope.server.schemas.data_specs import Cifar10Spec, MNISTSpec, NpzSpec
from dynascope.worker.registry.dataset_types import (
    Dataset,
    DatasetError,
    float_tensor,
    input_tensor,
    label_tensor,
)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_FORMAT = (
    "the CIFAR-10 python version (cifar-10-python.tar.gz) unpacked into the data directory: "
    "pickled dicts with b'data' (uint8, N x 3072) and b'labels' (N ints in 0..9)"
)
MNIST_DIR = "mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_FORMAT = f"the four MNIST idx files {', '.join(MNIST_FILES)}, each optionally gzipped (.gz)"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NUM_CLASSES = 10  # CIFAR-10 and MNIST


def _first(
    x: np.ndarray, y: np.ndarray, limit: int | None, field: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` examples (all when ``limit`` is None)."""
    if limit is None:
        return x, y
    if limit > len(x):
        raise DatasetError(f"{field} is {limit} but {source} holds only {len(x)} examples")
    return x[:limit], y[:limit]


def _image_dataset(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> Dataset:
    return Dataset(
        x_train=input_tensor(x_train),
        y_train=label_tensor(y_train),
        x_test=input_tensor(x_test),
        y_test=label_tensor(y_test),
        task="classification",
        num_outputs=NUM_CLASSES,
        input_shape=tuple(x_train.shape[1:]),
        input_kind="image",
    )


def _check_labels(labels: np.ndarray, count: int, path: Path) -> None:
    if labels.ndim != 1 or len(labels) != count:
        raise DatasetError(f"{path}: expected {count} labels, found shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: labels must be integers, found {labels.dtype}")
    if count and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}")


# --- CIFAR-10 -----------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only, never arbitrary callables."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 batch file."""
    try:
        with path.open("rb") as file:
            batch = _ArrayUnpickler(file, encoding="bytes").load()
    except Exception as error:
        raise DatasetError(
            f"{path} is not a readable pickle ({error}); expected {CIFAR10_FORMAT}"
        ) from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(
            f"{path} lacks the keys b'data' and b'labels'; expected {CIFAR10_FORMAT}"
        )
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' is {data.dtype} of shape {data.shape}, expected uint8 (N, 3072)"
        )
    labels = np.asarray(batch[b"labels"])
    _check_labels(labels, len(data), path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar_split(
    paths: list[Path], limit: int | None, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batches in order, reading no more files than ``limit`` examples need."""
    images, labels, count = [], [], 0
    for path in paths:
        if limit is not None and count >= limit:
            break
        batch_images, batch_labels = _read_cifar_batch(path)
        images.append(batch_images)
        labels.append(batch_labels)
        count += len(batch_images)
    source = paths[0].name if len(paths) == 1 else f"{paths[0].name}..{paths[-1].name}"
    return _first(np.concatenate(images), np.concatenate(labels), limit, field, source)


def cifar10(spec: Cifar10Spec, data_dir: Path) -> Dataset:
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py``: data_batch_1..5 train, test_batch
    test; images (3, 32, 32) scaled to [0, 1]."""
    directory = data_dir / CIFAR10_DIR
    train_paths = [directory / name for name in CIFAR10_TRAIN_FILES]
    test_path = directory / CIFAR10_TEST_FILE
    for path in [*train_paths, test_path]:
        if not path.is_file():
            raise DatasetError(
                f"CIFAR-10 file {path.name} not found in {directory}; expected {CIFAR10_FORMAT}"
            )
    x_train, y_train = _read_cifar_split(train_paths, spec.n_train, "n_train")
    x_test, y_test = _read_cifar_split([test_path], spec.n_test, "n_test")
    return _image_dataset(x_train, y_train, x_test, y_test)


# --- MNIST --------------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array in an idx file (LeCun's MNIST format), plain or gzipped by ``.gz`` suffix:
    two zero bytes, a type code, the number of dimensions, each dimension as a big-endian
    uint32, then the data in big-endian order."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"cannot read {path} ({error}); expected {MNIST_FORMAT}") from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise DatasetError(
            f"{path} does not start with an idx magic number; expected {MNIST_FORMAT}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated idx header ({ndim} dimensions announced)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: header announces shape {dims} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes after the header"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_path(directory: Path, name: str) -> Path:
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            return path
    raise DatasetError(
        f"MNIST file {name} (or {name}.gz) not found in {directory}; expected {MNIST_FORMAT}"
    )


def _read_mnist_split(
    directory: Path, images_name: str, labels_name: str, limit: int | None, field: str
) -> tuple[np.ndarray, np.ndarray]:
    images_path = _idx_path(directory, images_name)
    labels_path = _idx_path(directory, labels_name)
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DatasetError(
            f"{images_path}: expected (N, rows, cols) images, found shape {images.shape}"
        )
    labels = read_idx(labels_path)
    _check_labels(labels, len(images), labels_path)
    return _first(images[:, None], labels, limit, field, images_path.name)


def mnist(spec: MNISTSpec, data_dir: Path) -> Dataset:
    """MNIST from the idx files in ``<data_dir>/mnist``; images (1, 28, 28) scaled to [0, 1]."""
    directory = data_dir / MNIST_DIR
    train_images, train_labels, test_images, test_labels = MNIST_FILES
    x_train, y_train = _read_mnist_split(
        directory, train_images, train_labels, spec.n_train, "n_train"
    )
    x_test, y_test = _read_mnist_split(directory, test_images, test_labels, spec.n_test, "n_test")
    return _image_dataset(x_train, y_train, x_test, y_test)


# --- npz ----------------------------------------------------------------------------------


def _npz_path(spec: NpzSpec, data_dir: Path) -> Path:
    root = data_dir.resolve()
    path = (root / spec.file).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{spec.file} resolves to {path}, outside the data directory {root}")
    if not path.is_file():
        raise DatasetError(
            f"{spec.file} not found in the data directory {root}; expected an .npz archive "
            f"with arrays {', '.join(NPZ_KEYS)}"
        )
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DatasetError(f"{path} lacks the arrays {', '.join(missing)}")
            return {key: archive[key] for key in NPZ_KEYS}
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(
            f"{path} is not a readable .npz archive of numeric arrays ({error}); "
            f"expected arrays {', '.join(NPZ_KEYS)} saved with numpy.savez"
        ) from error


def _npz_inputs(x: np.ndarray, images: bool, path: Path, key: str) -> np.ndarray:
    ndim = 4 if images else 2
    if x.ndim != ndim:
        layout = "(N, C, H, W) images" if images else "(N, features) vectors"
        raise DatasetError(f"{path}: {key} has shape {x.shape}, expected {layout}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"{path}: {key} has non-numeric dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DatasetError(f"{path}: {key} contains NaN or infinite values")
    return x


def _npz_targets(y: np.ndarray, regression: bool, path: Path, key: str) -> np.ndarray:
    if regression:
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or not np.issubdtype(y.dtype, np.number):
            raise DatasetError(
                f"{path}: {key} must be numeric (N,) or (N, outputs), found {y.dtype} {y.shape}"
            )
        if not np.isfinite(y).all():
            raise DatasetError(f"{path}: {key} contains NaN or infinite values")
        return y
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{path}: {key} must be integer class labels of shape (N,), found {y.dtype} {y.shape} "
            "(set regression to true for real-valued targets)"
        )
    if len(y) and y.min() < 0:
        raise DatasetError(f"{path}: {key} has negative class labels")
    return y


def npz(spec: NpzSpec, data_dir: Path) -> Dataset:
    """Arrays x_train, y_train, x_test, y_test from ``<data_dir>/<spec.file>``. Inputs are
    (N, D) vectors, or (N, C, H, W) images with ``images``; uint8 inputs are scaled to
    [0, 1]. Targets are integer labels (classes = largest label + 1), or with ``regression``
    real values, (N,) becoming (N, 1)."""
    path = _npz_path(spec, data_dir)
    arrays = _read_npz(path)
    splits = {}
    for split, limit, field in (
        ("train", spec.n_train, "n_train"),
        ("test", spec.n_test, "n_test"),
    ):
        x = _npz_inputs(arrays[f"x_{split}"], spec.images, path, f"x_{split}")
        y = _npz_targets(arrays[f"y_{split}"], spec.regression, path, f"y_{split}")
        if len(x) != len(y) or len(x) == 0:
            raise DatasetError(
                f"{path}: x_{split} has {len(x)} examples and y_{split} {len(y)}; "
                "they must agree and be at least one"
            )
        splits[split] = _first(x, y, limit, field, f"{path.name} ({split})")
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    if x_train.shape[1:] != x_test.shape[1:] or y_train.shape[1:] != y_test.shape[1:]:
        raise DatasetError(f"{path}: train and test examples differ in shape")
    if spec.regression:
        targets = (float_tensor(y_train), float_tensor(y_test))
        num_outputs = y_train.shape[1]
    else:
        targets = (label_tensor(y_train), label_tensor(y_test))
        num_outputs = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        x_train=input_tensor(x_train),
        y_train=targets[0],
        x_test=input_tensor(x_test),
        y_test=targets[1],
        task="regression" if spec.regression else "classification",
        num_outputs=num_outputs,
        input_shape=tuple(x_train.shape[1:]),
        input_kind="image" if spec.images else "vector",
    )


FILE_DATASETS: dict[str, Callable[[Any, Path], Dataset]] = {
    "cifar10": cifar10,
    "mnist": mnist,
    "npz": npz,
}
"""Loader of each file dataset, by spec name; each reads only under the data directory."""
