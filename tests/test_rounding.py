"""`tflite.adaround.round_quadratic`, the up/down choice of each weight, on small problems checked flip by flip."""

from __future__ import annotations

import numpy as np
import pytest

from tflite.adaround import LEVELS, round_quadratic


def _objective(q, weights, scale, hessian, linear):
    delta = q * scale[None, :] - weights
    return float(np.einsum("io,ij,jo->", delta, hessian, delta) + 2 * np.sum(delta * linear))


@pytest.mark.parametrize("seed", range(5))
def test_rounding_with_a_linear_term_is_a_local_optimum_never_worse_than_nearest(seed):
    rng = np.random.default_rng(seed)
    dims = 6
    weights = rng.normal(size=(dims, 1))
    scale = np.abs(weights).max(axis=0) / LEVELS * 20  # a coarse grid, so that rounding matters
    factor = rng.normal(size=(dims, dims))
    hessian = factor @ factor.T  # a covariance
    linear = rng.normal(size=(dims, 1)) * scale  # the pull of an upstream error, on the grid's scale
    chosen = round_quadratic(weights, scale, hessian, sweeps=20, linear=linear)
    ratio = weights / scale
    assert np.all((chosen == np.floor(ratio)) | (chosen == np.ceil(ratio)))
    nearest = np.round(ratio)
    found = _objective(chosen, weights, scale, hessian, linear)
    assert found <= _objective(nearest, weights, scale, hessian, linear) + 1e-12
    for j in range(dims):  # no single flip lowers it
        flipped = chosen.copy()
        flipped[j] = np.ceil(ratio[j]) if chosen[j] == np.floor(ratio[j]) else np.floor(ratio[j])
        assert _objective(flipped, weights, scale, hessian, linear) >= found - 1e-12


def test_a_linear_term_moves_the_rounding_the_way_it_pulls():
    weights = np.array([[0.5 + 1e-3], [0.5 - 1e-3]])  # nearest: 1 and 0
    scale = np.array([1.0])
    hessian = np.eye(2)
    assert round_quadratic(weights, scale, hessian).ravel().tolist() == [1, 0]
    # an upstream error that adds +0.6 to the output through the first input pulls its weight down
    pulled = round_quadratic(weights, scale, hessian, linear=np.array([[0.6], [0.0]]))
    assert pulled.ravel().tolist() == [0, 0]


def test_the_channels_largest_weight_keeps_its_127_so_the_converters_scale_stays():
    weights = np.array([[1.0 - 1e-15], [0.3]])
    scale = np.array([1.0 / LEVELS])  # the largest weight's ratio is 126.9999...: its floor is 126
    pull = np.array([[10.0], [0.0]])  # an upstream error pulling it down hard
    assert round_quadratic(weights, scale, np.eye(2), linear=pull)[0, 0] == LEVELS
