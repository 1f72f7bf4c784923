"""Dataset registry: shapes, dtypes, split sizes and determinism of the built-in datasets;
the file loaders on tiny files written here in the real on-disk formats."""

from __future__ import annotations

import collections
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dynascope.server.schemas import data_specs
from dynascope.server.schemas.data_specs import (
    DIGITS_SAMPLES,
    Cifar10Spec,
    DataSpec,
    DigitsSpec,
    GaussianMixtureSpec,
    MNISTSpec,
    ModularArithmeticSpec,
    NpzSpec,
    RandomImagesSpec,
    SpiralsSpec,
    TeacherStudentSpec,
    input_kind,
    task_of,
)
from dynascope.worker.registry import Dataset, DatasetError, load_dataset
from dynascope.worker.registry.file_datasets import read_idx

BUILTIN_SPECS = {
    "digits": DigitsSpec(test_fraction=0.25),
    "gaussian_mixture": GaussianMixtureSpec(n_samples=50, n_classes=3, dim=5),
    "spirals": SpiralsSpec(n_samples=41, n_arms=3, test_fraction=0.3),
    "teacher_student": TeacherStudentSpec(
        n_samples=30, dim=4, teacher_widths=[8, 6], output_dim=2, noise=0.1
    ),
    "modular_arithmetic": ModularArithmeticSpec(modulus=7, train_fraction=0.4),
    "random_images": RandomImagesSpec(n_samples=24, channels=2, size=6, n_classes=3),
    "random_labels": RandomImagesSpec(
        n_samples=24, channels=1, size=4, n_classes=4, random_labels=True
    ),
}


def _load(spec: DataSpec, data_dir: Path = Path("/nonexistent")) -> Dataset:
    return load_dataset(spec, data_dir=data_dir)


def _total(spec: DataSpec) -> int:
    if isinstance(spec, DigitsSpec):
        return DIGITS_SAMPLES
    if isinstance(spec, ModularArithmeticSpec):
        return spec.modulus**2
    return spec.n_samples  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", BUILTIN_SPECS.values(), ids=BUILTIN_SPECS.keys())
def test_builtin_dataset_has_declared_shapes_dtypes_and_split(spec: DataSpec) -> None:
    dataset = _load(spec)
    n_train, n_total = spec.train_size(), _total(spec)
    assert n_train is not None
    assert dataset.n_train == n_train
    assert dataset.n_train + dataset.n_test == n_total
    assert dataset.input_kind == input_kind(spec)
    assert dataset.task == task_of(spec)
    splits = (
        (dataset.x_train, dataset.y_train, n_train),
        (dataset.x_test, dataset.y_test, n_total - n_train),
    )
    for x, y, n in splits:
        assert x.shape == (n, *dataset.input_shape)
        assert x.device.type == "cpu"
        if dataset.input_kind == "tokens":
            assert x.dtype == torch.int64
            assert 0 <= int(x.min()) and int(x.max()) < dataset.vocab_size
        else:
            assert x.dtype == torch.float32
            assert dataset.vocab_size is None
        if dataset.input_kind == "image":
            assert len(dataset.input_shape) == 3
        if dataset.task == "classification":
            assert y.shape == (n,) and y.dtype == torch.int64
            assert 0 <= int(y.min()) and int(y.max()) < dataset.num_outputs
        else:
            assert y.shape == (n, dataset.num_outputs) and y.dtype == torch.float32


def test_generated_split_sizes_follow_test_count() -> None:
    for n_samples, fraction in ((10, 0.05), (10, 0.95), (101, 0.2)):
        spec = GaussianMixtureSpec(n_samples=n_samples, test_fraction=fraction, dim=2)
        assert _load(spec).n_test == data_specs.test_count(n_samples, fraction)


@pytest.mark.parametrize("spec", BUILTIN_SPECS.values(), ids=BUILTIN_SPECS.keys())
def test_builtin_dataset_depends_only_on_its_seed(spec: DataSpec) -> None:
    first, again = _load(spec), _load(spec)
    other = _load(spec.model_copy(update={"seed": 1}))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.x_train, other.x_train)


def test_builtin_dataset_ignores_the_global_generators() -> None:
    spec = BUILTIN_SPECS["random_images"]
    torch.manual_seed(1)
    np.random.seed(1)
    first = _load(spec)
    torch.manual_seed(2)
    np.random.seed(2)
    assert torch.equal(first.x_train, _load(spec).x_train)


def test_digits_are_the_whole_scikit_learn_set_scaled_to_unit_range() -> None:
    dataset = _load(DigitsSpec())
    assert dataset.input_shape == (1, 8, 8) and dataset.num_outputs == 10
    pixels = torch.cat([dataset.x_train, dataset.x_test])
    assert float(pixels.min()) == 0.0 and float(pixels.max()) == 1.0
    labels = torch.cat([dataset.y_train, dataset.y_test])
    assert torch.bincount(labels).sum() == DIGITS_SAMPLES
    assert int(torch.bincount(labels).min()) >= 170  # every digit class is there


@pytest.mark.parametrize(
    ("operation", "apply"),
    [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b)],
)
def test_modular_arithmetic_covers_all_pairs_with_correct_labels(operation, apply) -> None:
    p = 7
    dataset = _load(ModularArithmeticSpec(modulus=p, operation=operation, train_fraction=0.5))
    assert dataset.vocab_size == p + 1 and dataset.num_outputs == p
    tokens = torch.cat([dataset.x_train, dataset.x_test]).tolist()
    labels = torch.cat([dataset.y_train, dataset.y_test]).tolist()
    assert sorted((a, b) for a, b, _ in tokens) == [(a, b) for a in range(p) for b in range(p)]
    for (a, b, equals), label in zip(tokens, labels, strict=True):
        assert equals == p
        assert label == apply(a, b) % p


def test_random_images_are_templates_and_random_labels_break_the_link() -> None:
    clean = RandomImagesSpec(n_samples=40, channels=1, size=4, n_classes=4, noise=0.0)
    dataset = _load(clean)
    images, labels = dataset.x_train.flatten(1), dataset.y_train
    for label in range(4):
        same = images[labels == label]
        assert torch.equal(same, same[:1].expand_as(same))
    shuffled = _load(clean.model_copy(update={"random_labels": True}))
    images, labels = shuffled.x_train.flatten(1), shuffled.y_train
    mixed = [len(set(labels[(images == image).all(1)].tolist())) for image in images]
    assert max(mixed) > 1  # one image shows up under several labels


def test_teacher_student_targets_are_a_function_of_the_inputs_without_noise() -> None:
    spec = TeacherStudentSpec(n_samples=20, dim=3, teacher_widths=[5], output_dim=2)
    dataset = _load(spec)
    assert dataset.num_outputs == 2 and dataset.y_train.abs().max() > 0
    noisy = _load(spec.model_copy(update={"noise": 0.5}))
    assert torch.equal(dataset.x_train, noisy.x_train)
    assert not torch.equal(dataset.y_train, noisy.y_train)


# --- CIFAR-10 -----------------------------------------------------------------------------


def _write_cifar(root: Path, train_per_batch: int, n_test: int, protocol: int) -> dict:
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else train_per_batch
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = batch
    return written


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reads_the_python_batches(tmp_path: Path, protocol: int) -> None:
    written = _write_cifar(tmp_path, train_per_batch=3, n_test=4, protocol=protocol)
    dataset = _load(Cifar10Spec(), tmp_path)
    assert dataset.x_train.shape == (15, 3, 32, 32) and dataset.x_test.shape == (4, 3, 32, 32)
    assert dataset.num_outputs == 10 and dataset.input_kind == "image"
    second = written["data_batch_2"]
    expected = torch.from_numpy(second[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    torch.testing.assert_close(dataset.x_train[3], expected, rtol=0, atol=1e-7)
    assert dataset.y_train[3:6].tolist() == second[b"labels"]
    assert dataset.y_test.tolist() == written["test_batch"][b"labels"]


def test_cifar10_takes_the_first_examples(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path, train_per_batch=3, n_test=4, protocol=2)
    dataset = _load(Cifar10Spec(n_train=4, n_test=2), tmp_path)
    assert dataset.n_train == 4 and dataset.n_test == 2
    first_two = written["data_batch_1"][b"labels"] + written["data_batch_2"][b"labels"][:1]
    assert dataset.y_train.tolist() == first_two
    with pytest.raises(DatasetError, match="n_train is 16 .* only 15"):
        _load(Cifar10Spec(n_train=16), tmp_path)


def test_cifar10_missing_batch_names_file_and_place(tmp_path: Path) -> None:
    _write_cifar(tmp_path, train_per_batch=2, n_test=2, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_3 not found in .*cifar-10-batches-py"):
        _load(Cifar10Spec(), tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        _load(Cifar10Spec(), tmp_path / "elsewhere")


def test_cifar10_refuses_pickles_with_arbitrary_objects(tmp_path: Path) -> None:
    _write_cifar(tmp_path, train_per_batch=2, n_test=2, protocol=2)
    hostile = collections.OrderedDict(data=b"")  # any class outside numpy is refused
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(hostile))
    with pytest.raises(DatasetError, match="refusing to load collections.OrderedDict"):
        _load(Cifar10Spec(), tmp_path)


def test_cifar10_rejects_wrong_content(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path, train_per_batch=2, n_test=2, protocol=2)
    batch = {**written["test_batch"], b"data": np.zeros((2, 100), np.uint8)}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match=r"expected uint8 \(N, 3072\)"):
        _load(Cifar10Spec(), tmp_path)


# --- MNIST --------------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_mnist(root: Path, gzipped: bool, n_train: int = 6, n_test: int = 3) -> dict:
    directory = root / "mnist"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
        else:
            (directory / name).write_bytes(_idx_bytes(array))
    return arrays


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_mnist_reads_idx_files(tmp_path: Path, gzipped: bool) -> None:
    arrays = _write_mnist(tmp_path, gzipped)
    dataset = _load(MNISTSpec(), tmp_path)
    assert dataset.x_train.shape == (6, 1, 5, 4) and dataset.x_test.shape == (3, 1, 5, 4)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)
    torch.testing.assert_close(dataset.x_train[:, 0], expected, rtol=0, atol=1e-7)
    assert dataset.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert dataset.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert dataset.y_train.dtype == torch.int64 and dataset.num_outputs == 10


def test_mnist_takes_the_first_examples(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gzipped=True)
    dataset = _load(MNISTSpec(n_train=2, n_test=1), tmp_path)
    assert dataset.y_train.tolist() == arrays["train-labels-idx1-ubyte"][:2].tolist()
    assert dataset.n_test == 1
    with pytest.raises(DatasetError, match="n_test is 4"):
        _load(MNISTSpec(n_test=4), tmp_path)


def test_mnist_missing_file_names_file_and_place(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gzipped=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte \(or .*\.gz\) not found in"):
        _load(MNISTSpec(), tmp_path)


def test_read_idx_parses_big_endian_types_and_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "values"
    values = np.arange(-3, 9, dtype=">i4").reshape(3, 4)
    path.write_bytes(_idx_bytes(values))
    assert np.array_equal(read_idx(path), values.astype(np.int32))
    floats = np.linspace(-1, 1, 5, dtype=">f4")
    path.write_bytes(_idx_bytes(floats))
    assert np.array_equal(read_idx(path), floats)
    path.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)
    path.write_bytes(_idx_bytes(np.zeros((4, 2), np.uint8))[:-1])
    with pytest.raises(DatasetError, match=r"shape \(4, 2\)"):
        read_idx(path)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(gz)


def test_mnist_rejects_label_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gzipped=False)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DatasetError, match="expected 6 labels"):
        _load(MNISTSpec(), tmp_path)


# --- npz ----------------------------------------------------------------------------------


def test_npz_vectors_for_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((8, 3)), rng.standard_normal((4, 3))
    np.savez(
        tmp_path / "blobs.npz",
        x_train=x_train,
        y_train=np.arange(8) % 3,
        x_test=x_test,
        y_test=np.array([0, 4, 1, 2]),
    )
    dataset = _load(NpzSpec(file="blobs.npz", n_train=5), tmp_path)
    assert dataset.input_kind == "vector" and dataset.input_shape == (3,)
    assert dataset.num_outputs == 5  # largest label in either split, plus one
    assert dataset.x_train.dtype == torch.float32 and dataset.n_train == 5
    torch.testing.assert_close(dataset.x_test, torch.from_numpy(x_test).float())
    assert dataset.y_train.tolist() == [0, 1, 2, 0, 1]


def test_npz_uint8_images_and_regression_targets(tmp_path: Path) -> None:
    images = np.full((3, 1, 2, 2), 255, np.uint8)
    np.savez_compressed(
        tmp_path / "im.npz",
        x_train=images,
        y_train=np.array([0.5, 1.0, 2.0]),
        x_test=images[:1],
        y_test=np.array([3.0]),
    )
    dataset = _load(NpzSpec(file="im.npz", images=True, regression=True), tmp_path)
    assert dataset.input_kind == "image" and dataset.task == "regression"
    assert float(dataset.x_train.max()) == 1.0
    assert dataset.y_train.shape == (3, 1) and dataset.y_train.dtype == torch.float32
    assert dataset.num_outputs == 1


def test_npz_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing\.npz not found in the data directory"):
        _load(NpzSpec(file="missing.npz"), tmp_path)
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 2)), y_train=np.zeros(2, int))
    with pytest.raises(DatasetError, match="lacks the arrays x_test, y_test"):
        _load(NpzSpec(file="partial.npz"), tmp_path)
    arrays = {
        "x_train": np.zeros((2, 3)),
        "y_train": np.zeros(2),
        "x_test": np.zeros((1, 3)),
        "y_test": np.zeros(1),
    }
    np.savez(tmp_path / "floats.npz", **arrays)
    with pytest.raises(DatasetError, match="integer class labels"):
        _load(NpzSpec(file="floats.npz"), tmp_path)
    with pytest.raises(DatasetError, match=r"expected \(N, C, H, W\) images"):
        _load(NpzSpec(file="floats.npz", images=True, regression=True), tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        _load(NpzSpec(file="junk.npz"), tmp_path)


def test_npz_path_must_stay_inside_the_data_directory(tmp_path: Path) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "secret.npz"
    data_dir.mkdir()
    np.savez(
        outside,
        x_train=np.zeros((2, 2)),
        y_train=np.zeros(2, int),
        x_test=np.zeros((1, 2)),
        y_test=np.zeros(1, int),
    )
    (data_dir / "link.npz").symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the data directory"):
        _load(NpzSpec(file="link.npz"), data_dir)
