"""Probes: pure functions of a model, a loss function, a batch and parameter dictionaries that
measure how training goes. They never modify the model being trained (see :mod:`.params`)."""

from dynascope.worker.probes.evaluation import (
    Evaluation,
    Task,
    correct_predictions,
    evaluate,
    evaluation_sums,
)
from dynascope.worker.probes.norms import (
    NormsResult,
    distance,
    gradient_norm,
    gradient_norms,
    measure_norms,
    update_ratios,
    weight_norms,
)
from dynascope.worker.probes.params import (
    LossFunction,
    buffers_of,
    call_at,
    detached_parameters,
    loss_and_gradient,
)
from dynascope.worker.probes.spectral import SpectralNorms, spectral_norms, spectral_norms_exact

__all__ = [
    "Evaluation",
    "LossFunction",
    "NormsResult",
    "SpectralNorms",
    "Task",
    "buffers_of",
    "call_at",
    "correct_predictions",
    "detached_parameters",
    "distance",
    "evaluate",
    "evaluation_sums",
    "gradient_norm",
    "gradient_norms",
    "loss_and_gradient",
    "measure_norms",
    "spectral_norms",
    "spectral_norms_exact",
    "update_ratios",
    "weight_norms",
]
