"""The Jacobian probes of a run (``probes.jacobian``): singular values of the input-output
Jacobian and the empirical NTK's eigenvalues with its velocity, on the first ``n_inputs``
probe examples; the maths is in ``worker/probes/jacobian.py``."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor, nn

from dynascope.server.schemas.run_spec import JacobianProbeSpec
from dynascope.worker.curvature_probe import ProbeMeasurement
from dynascope.worker.probes.jacobian import input_output_singular_values, ntk_spectrum


class JacobianProber:
    """Runs ``probes.jacobian`` for one run, keeping the previous probe's kernel for the NTK
    velocity (its change since then)."""

    def __init__(self, options: JacobianProbeSpec, model: nn.Module, inputs: Tensor) -> None:
        self.options = options
        self.model = model
        self.inputs = inputs[: options.n_inputs]
        self._kernel: Tensor | None = None

    def measure(self) -> ProbeMeasurement:
        """The enabled Jacobian spectra at the model's current parameters (eval mode is the
        caller's)."""
        out = ProbeMeasurement()
        options = self.options
        if options.input_output:
            started = time.perf_counter()
            jac = input_output_singular_values(
                self.model, self.inputs, chunk_size=options.chunk_size
            )
            summary = np.stack([jac.mean.numpy(), jac.median.numpy(), jac.quantile_10.numpy(),
                                jac.quantile_90.numpy()])  # fmt: skip
            out.metrics |= {
                "jacobian/mean_largest": jac.mean_largest,
                "jacobian/mean_log_mean_square": jac.mean_log_mean_square,
                "jacobian/mean_frobenius": jac.mean_frobenius,
                "cost/jacobian/seconds": time.perf_counter() - started,
            }
            meta = {"rows": ["mean", "median", "quantile_10", "quantile_90"],
                    "inputs": int(self.inputs.shape[0])}  # fmt: skip
            out.arrays.append(("jacobian_input_output", summary, meta))
        if options.ntk:
            started = time.perf_counter()
            ntk = ntk_spectrum(
                self.model, self.inputs, chunk_size=options.chunk_size, previous=self._kernel
            )
            self._kernel = ntk.kernel
            top = ntk.eigenvalues[: options.top_k]
            out.metrics |= {"ntk/top_1": top[0].item(), "ntk/trace": ntk.trace}
            if ntk.velocity is not None:
                out.metrics["ntk/velocity"] = ntk.velocity
                out.metrics["ntk/alignment_distance"] = float(ntk.alignment_distance or 0.0)
            out.metrics["cost/ntk/seconds"] = time.perf_counter() - started
            meta = {"kernel_size": int(ntk.kernel.shape[0]), "rows": ntk.rows,
                    "trace": ntk.trace, "velocity": ntk.velocity}  # fmt: skip
            out.arrays.append(("ntk", top.to(torch.float64).numpy(), meta))
        return out
