"""Datasets that need no file from the data directory: scikit-learn's bundled digits and the
synthetic ones. Each is a deterministic function of its spec: all randomness comes from a
``numpy.random.Generator`` seeded with ``spec.seed``, never from a global generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from dynascope.server.schemas.data_specs import (
    DIGITS_SAMPLES,
    DigitsSpec,
    GaussianMixtureSpec,
    ModularArithmeticSpec,
    RandomImagesSpec,
    SpiralsSpec,
    TeacherStudentSpec,
)
from dynascope.server.schemas.model_specs import InputKind
from dynascope.worker.registry.dataset_types import (
    Dataset,
    DatasetError,
    float_tensor,
    label_tensor,
    split_examples,
)


def _classification(
    x: np.ndarray, y: np.ndarray, *, n_train: int, num_classes: int, input_kind: InputKind
) -> Dataset:
    x_train, y_train, x_test, y_test = split_examples(x, y, n_train)
    return Dataset(
        x_train=float_tensor(x_train),
        y_train=label_tensor(y_train),
        x_test=float_tensor(x_test),
        y_test=label_tensor(y_test),
        task="classification",
        num_outputs=num_classes,
        input_shape=tuple(x.shape[1:]),
        input_kind=input_kind,
    )


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """``n`` labels, as equal in number per class as ``n`` allows, in random order."""
    return rng.permutation(np.arange(n) % n_classes)


def digits(spec: DigitsSpec) -> Dataset:
    """scikit-learn's 8x8 digits as (1, 8, 8) images in [0, 1], split at random by seed."""
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    if len(images) != DIGITS_SAMPLES:
        raise DatasetError(
            f"scikit-learn's digits has {len(images)} images, expected {DIGITS_SAMPLES}"
        )
    order = np.random.default_rng(spec.seed).permutation(len(images))
    return _classification(
        images[order][:, None],
        bunch.target[order],
        n_train=spec.train_size(),
        num_classes=10,
        input_kind="image",
    )


def gaussian_mixture(spec: GaussianMixtureSpec) -> Dataset:
    """One isotropic Gaussian cluster (std ``noise``) per class. Centres are drawn from
    N(0, s²I) with s chosen so that the expected distance between two centres is
    ``separation``: E‖c_i − c_j‖ = s·√2·E[χ_dim]."""
    rng = np.random.default_rng(spec.seed)
    mean_chi = math.sqrt(2.0) * math.exp(
        math.lgamma((spec.dim + 1) / 2) - math.lgamma(spec.dim / 2)
    )
    scale = spec.separation / (math.sqrt(2.0) * mean_chi)
    centres = scale * rng.standard_normal((spec.n_classes, spec.dim))
    labels = _balanced_labels(rng, spec.n_samples, spec.n_classes)
    x = centres[labels] + spec.noise * rng.standard_normal((spec.n_samples, spec.dim))
    return _classification(
        x, labels, n_train=spec.train_size(), num_classes=spec.n_classes, input_kind="vector"
    )


def spirals(spec: SpiralsSpec) -> Dataset:
    """``n_arms`` interleaved 2-D spirals: a point at position t ~ U(0, 1) along arm k lies at
    radius t and angle 2π·(turns·t + k/n_arms), plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(spec.seed)
    labels = _balanced_labels(rng, spec.n_samples, spec.n_arms)
    t = rng.uniform(0.0, 1.0, spec.n_samples)
    angle = 2.0 * math.pi * (spec.turns * t + labels / spec.n_arms)
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    x += spec.noise * rng.standard_normal(x.shape)
    return _classification(
        x, labels, n_train=spec.train_size(), num_classes=spec.n_arms, input_kind="vector"
    )


def teacher_student(spec: TeacherStudentSpec) -> Dataset:
    """Regression on a random bias-free teacher MLP: x ~ N(0, I_dim), hidden layers
    ``teacher_widths`` with tanh, a linear output layer, weights N(0, 1/fan_in); targets are
    the teacher's outputs plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(spec.seed)
    x = rng.standard_normal((spec.n_samples, spec.dim))
    hidden = x
    widths = [*spec.teacher_widths, spec.output_dim]
    for index, width in enumerate(widths):
        fan_in = hidden.shape[1]
        hidden = hidden @ (rng.standard_normal((fan_in, width)) / math.sqrt(fan_in))
        if index < len(widths) - 1:
            hidden = np.tanh(hidden)
    y = hidden + spec.noise * rng.standard_normal(hidden.shape)
    x_train, y_train, x_test, y_test = split_examples(x, y, spec.train_size())
    return Dataset(
        x_train=float_tensor(x_train),
        y_train=float_tensor(y_train),
        x_test=float_tensor(x_test),
        y_test=float_tensor(y_test),
        task="regression",
        num_outputs=spec.output_dim,
        input_shape=(spec.dim,),
        input_kind="vector",
    )


_MODULAR_OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
}


def modular_arithmetic(spec: ModularArithmeticSpec) -> Dataset:
    """All p² sequences [a, b, p] (token p stands for '=') labelled (a op b) mod p, split at
    random into ``train_fraction`` train and the rest test (Power et al. 2022, grokking)."""
    p = spec.modulus
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    labels = _MODULAR_OPERATIONS[spec.operation](a, b) % p
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1)
    order = np.random.default_rng(spec.seed).permutation(p * p)
    x_train, y_train, x_test, y_test = split_examples(
        tokens[order], labels[order], spec.train_size()
    )
    return Dataset(
        x_train=label_tensor(x_train),
        y_train=label_tensor(y_train),
        x_test=label_tensor(x_test),
        y_test=label_tensor(y_test),
        task="classification",
        num_outputs=p,
        input_shape=(3,),
        input_kind="tokens",
        vocab_size=p + 1,
    )


def random_images(spec: RandomImagesSpec) -> Dataset:
    """Images ``template[class] + noise·N(0, I)`` with one N(0, I) template per class; with
    ``random_labels`` the labels are then permuted, so they carry no information about the
    images (memorisation, Zhang et al. 2017)."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.channels, spec.size, spec.size)
    templates = rng.standard_normal((spec.n_classes, *shape), dtype=np.float32)
    labels = _balanced_labels(rng, spec.n_samples, spec.n_classes)
    noise = rng.standard_normal((spec.n_samples, *shape), dtype=np.float32)
    x = templates[labels] + np.float32(spec.noise) * noise
    if spec.random_labels:
        labels = rng.permutation(labels)
    return _classification(
        x, labels, n_train=spec.train_size(), num_classes=spec.n_classes, input_kind="image"
    )


BUILTIN_DATASETS: dict[str, Callable[[Any], Dataset]] = {
    "digits": digits,
    "gaussian_mixture": gaussian_mixture,
    "spirals": spirals,
    "teacher_student": teacher_student,
    "modular_arithmetic": modular_arithmetic,
    "random_images": random_images,
}
"""Loader of each built-in dataset, by spec name."""
