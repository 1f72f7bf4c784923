"""The end-of-run landscapes of ``worker/geometry_probe.py`` when the trajectory has no plane
(the maths is tested in tests/worker/probes/test_landscape.py)."""

from __future__ import annotations

from dynascope.server.schemas.run_spec import LandscapeProbeSpec
from dynascope.worker.geometry_probe import measure_landscapes
from dynascope.worker.probes.params import detached_parameters
from tests.worker.probes.small_models import cross_entropy, gaussian, mlp


def test_slices_are_kept_when_the_pca_plane_cannot_be_drawn():
    # snapshots that never moved have no PCA: the plane is left out, the 1-D slices are not
    model, inputs, targets = mlp()
    final = detached_parameters(model)
    initial = gaussian(final, seed=2)
    options = LandscapeProbeSpec(plane="pca", grid=3, checkpoints=[2, 4])
    results = measure_landscapes(
        options, model, cross_entropy, "classification", (inputs, targets), (inputs, targets),
        checkpoints={2: final, 4: final}, initial=initial, final=final, last_step=4,
        snapshots=None, snapshot_steps=None, pca=None,
    )  # fmt: skip
    kinds = [(step, kind) for step, out in results for kind, _, _ in out.arrays]
    assert kinds == [(2, "landscape_random_1d"), (4, "landscape_random_1d"),
                     (4, "landscape_line")]  # fmt: skip
