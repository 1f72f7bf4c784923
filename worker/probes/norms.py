"""Per-layer norms of weights and gradients, distance from initialisation, update/weight ratios,
and the bundle of all of them with spectral norms (:mod:`.spectral`).

Inputs are dictionaries of tensors keyed by parameter name (see
:func:`~dynascope.worker.probes.params.detached_parameters`); outputs are plain floats by the
same names. These run every few training steps, so norms of many tensors are taken with one
fused ``torch._foreach_norm`` (the kernel behind ``clip_grad_norm_``) and brought to the host
with one transfer. That kernel sums squares in the tensors' precision, so in float32 a tensor
with entries above about 1.8e19 (a diverging run) gets an infinite norm; those few norms are
taken again by :func:`~.spectral.rescaled_norm` (float64, scaled by the largest entry), so
that every finite tensor gets a finite norm while the common case costs nothing more. Totals
over several tensors are combined on the host with ``math.hypot``, which does not overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dynascope.worker.probes.spectral import (
    SPECTRAL_TOLERANCE,
    SpectralNorms,
    rescaled_norm,
    spectral_norms,
)


def weight_norms(params: dict[str, Tensor]) -> dict[str, float]:
    """The L2 (Frobenius) norm of every parameter tensor, by name."""
    return dict(zip(params, _host_norms(list(params.values())), strict=True))


def gradient_norms(gradient: dict[str, Tensor]) -> dict[str, float]:
    """The L2 norm of the gradient of every parameter tensor, by name."""
    return weight_norms(gradient)


def gradient_norm(gradient: dict[str, Tensor]) -> float:
    """The L2 norm of the whole gradient (all parameters as one vector)."""
    return math.hypot(*_host_norms(list(gradient.values())))


def distance(params: dict[str, Tensor], reference: dict[str, Tensor]) -> float:
    """The L2 distance ``||θ - θ_ref||`` between two points of parameter space (all parameters
    as one vector), e.g. from the initialisation."""
    current, base = _aligned(params, reference, "reference")
    return math.hypot(*_host_norms([], current, base))


def update_ratios(before: dict[str, Tensor], after: dict[str, Tensor]) -> dict[str, float]:
    """Per-layer relative update ``||θ_after - θ_before|| / ||θ_before||``, by name.

    A tensor that was all zeros before (a zero-initialised bias or output layer) gets 0.0 if it
    did not move and ``inf`` if it did, the ratio's limit. The ratio is NaN (not measurable;
    recorded as null) when either norm is not finite, i.e. when the parameters are not.
    """
    old, new = _aligned(before, after, "after")
    values = _host_norms(old, new, old)
    sizes, moved = values[: len(old)], values[len(old) :]
    return dict(zip(before, map(_ratio, moved, sizes), strict=True))


@dataclass(frozen=True)
class NormsResult:
    """One call of the norms probe. Fields whose inputs were not given are ``None``."""

    weight_norms: dict[str, float]
    spectral: SpectralNorms | None
    gradient_norm: float | None
    gradient_norms: dict[str, float] | None
    distance_from_init: float | None
    update_ratios: dict[str, float] | None

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics: ``weight_norm/<name>``, ``spectral_norm/<name>``,
        ``grad_norm``, ``grad_norm/<name>``, ``distance_from_init``, ``update_ratio/<name>``."""
        metrics = {f"weight_norm/{name}": value for name, value in self.weight_norms.items()}
        if self.spectral is not None:
            metrics.update(
                {f"spectral_norm/{name}": value for name, value in self.spectral.values.items()}
            )
        if self.gradient_norm is not None:
            metrics["grad_norm"] = self.gradient_norm
        if self.gradient_norms is not None:
            metrics.update({f"grad_norm/{name}": v for name, v in self.gradient_norms.items()})
        if self.distance_from_init is not None:
            metrics["distance_from_init"] = self.distance_from_init
        if self.update_ratios is not None:
            metrics.update({f"update_ratio/{name}": v for name, v in self.update_ratios.items()})
        return metrics


def measure_norms(
    params: dict[str, Tensor],
    *,
    gradient: dict[str, Tensor] | None = None,
    initial: dict[str, Tensor] | None = None,
    previous: dict[str, Tensor] | None = None,
    spectral: bool = True,
    spectral_state: dict[str, Tensor] | None = None,
    spectral_tolerance: float = SPECTRAL_TOLERANCE,
) -> NormsResult:
    """The whole norms probe in one call: per-layer weight norms; spectral norms (warm-started
    from ``spectral_state``, the previous result's ``spectral.vectors``) unless ``spectral`` is
    false; total and per-layer norms of ``gradient``; the distance from ``initial``; update
    ratios since ``previous`` (the parameters at the previous probe, or before the last step).
    Everything but the spectral norms is one fused subtraction and one fused norm over all the
    tensors involved, brought to the host in one transfer; the spectral norms reuse the weight
    norms.
    """
    names, tensors = list(params), list(params.values())
    normed = [tensors]  # weights, then gradient and previous parameters if given
    bases = []  # the references to subtract: initial and previous parameters if given
    if gradient is not None:
        normed.append(_aligned(params, gradient, "gradient")[1])
    if initial is not None:
        bases.append(_aligned(params, initial, "initial")[1])
    if previous is not None:
        bases.append(_aligned(params, previous, "previous")[1])
        normed.append(bases[-1])
    values = _host_norms(sum(normed, []), tensors * len(bases), sum(bases, []))
    segments = iter(_split(values, len(normed) + len(bases)))

    weights = dict(zip(names, next(segments), strict=True))
    per_layer_gradient = total_gradient = distance_from_init = ratios = None
    if gradient is not None:
        per_layer_gradient = dict(zip(names, next(segments), strict=True))
        total_gradient = math.hypot(*per_layer_gradient.values())
    sizes = next(segments) if previous is not None else []
    if initial is not None:
        distance_from_init = math.hypot(*next(segments))
    if previous is not None:
        ratios = dict(zip(names, map(_ratio, next(segments), sizes), strict=True))
    return NormsResult(
        weight_norms=weights,
        spectral=(
            spectral_norms(params, spectral_state, tolerance=spectral_tolerance, frobenius=weights)
            if spectral
            else None
        ),
        gradient_norm=total_gradient,
        gradient_norms=per_layer_gradient,
        distance_from_init=distance_from_init,
        update_ratios=ratios,
    )


def _norms(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of each tensor, as one 1-D tensor (float64 if any input is, else float32),
    by one fused kernel summing squares in that precision: it may overflow (see
    :func:`_host_norms`)."""
    if not tensors:
        return torch.zeros(0)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))


def _host_norms(
    tensors: list[Tensor],
    minuends: list[Tensor] | None = None,
    subtrahends: list[Tensor] | None = None,
) -> list[float]:
    """The L2 norms of ``tensors``, then of the differences ``minuends[i] - subtrahends[i]``,
    on the host: one fused subtraction and one fused norm (:func:`_norms`), one transfer. A
    norm that came out infinite is taken again alone by :func:`rescaled_norm`: finite only if
    the tensor (the difference, taken in float64) is, so a float32 sum of squares that
    overflowed does not pass for an infinite tensor. Ordinary norms cost nothing more."""
    minuends, subtrahends = minuends or [], subtrahends or []
    differences = list(torch._foreach_sub(minuends, subtrahends)) if minuends else []
    values = _norms(tensors + differences).tolist()
    for index, value in enumerate(values):
        if value == math.inf:
            if index < len(tensors):
                values[index] = rescaled_norm(tensors[index])
            else:
                pair = index - len(tensors)
                values[index] = rescaled_norm(minuends[pair], subtrahends[pair])
    return values


def _ratio(moved: float, size: float) -> float:
    """``moved / size``: NaN (not measurable) unless both norms are finite; from a zero
    tensor, 0.0 if it did not move and ``inf`` if it did."""
    if not (math.isfinite(moved) and math.isfinite(size)):
        return math.nan
    if size == 0:
        return 0.0 if moved == 0 else math.inf
    return moved / size


def _split(values: list[float], parts: int) -> list[list[float]]:
    """``values`` cut into ``parts`` consecutive pieces of equal length."""
    size = len(values) // parts
    return [values[part * size : (part + 1) * size] for part in range(parts)]


def _same_keys(params: dict[str, Tensor], other: dict[str, Tensor], what: str) -> list[str]:
    """The names of ``params``, after checking that ``other`` has exactly the same ones."""
    if params.keys() != other.keys():
        missing = sorted(params.keys() - other.keys())
        extra = sorted(other.keys() - params.keys())
        raise ValueError(
            f"{what} must have the same parameter names as params; "
            f"missing {missing}, unexpected {extra}"
        )
    return list(params)


def _aligned(
    params: dict[str, Tensor], other: dict[str, Tensor], what: str
) -> tuple[list[Tensor], list[Tensor]]:
    """The tensors of ``params`` and of ``other``, in the same order of names."""
    names = _same_keys(params, other, what)
    return [params[name] for name in names], [other[name] for name in names]
