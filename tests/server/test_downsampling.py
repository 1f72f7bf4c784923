import numpy as np
import pytest

from dynascope.server.services.downsampling import downsample_extremes


def test_short_series_is_returned_whole():
    steps = np.arange(10)
    values = np.linspace(0, 1, 10)
    out_steps, out_values = downsample_extremes(steps, values, 100)
    assert np.array_equal(out_steps, steps) and np.array_equal(out_values, values)


def test_bounded_sorted_and_spikes_survive():
    rng = np.random.default_rng(0)
    steps = np.arange(100_000)
    values = rng.normal(size=100_000)
    values[12_345] = 50.0  # a spike
    values[77_777] = -40.0  # a dip
    out_steps, out_values = downsample_extremes(steps, values, 1000)
    assert len(out_steps) <= 1000
    assert np.all(np.diff(out_steps) > 0)
    assert 12_345 in out_steps and 77_777 in out_steps
    assert out_steps[0] == 0 and out_steps[-1] == 99_999
    # every kept point is a real point of the series
    assert np.array_equal(values[out_steps], out_values)


def test_each_bucket_keeps_its_extremes():
    steps = np.arange(1002)
    values = np.sin(steps / 7.0)
    out_steps, out_values = downsample_extremes(steps, values, 102)
    edges = np.linspace(1, 1001, 51).astype(int)
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        chunk = values[start:stop]
        inside = out_values[(out_steps >= start) & (out_steps < stop)]
        assert inside.min() == chunk.min() and inside.max() == chunk.max()


def test_nan_points_do_not_hide_extremes():
    steps = np.arange(10_000)
    values = np.cos(steps / 100.0)
    values[5000:5100] = np.nan
    values[9000] = 3.0
    out_steps, out_values = downsample_extremes(steps, values, 200)
    assert 9000 in out_steps
    assert np.nanmax(out_values) == 3.0


def test_rejects_tiny_max_points():
    with pytest.raises(ValueError):
        downsample_extremes(np.arange(10), np.arange(10.0), 3)
