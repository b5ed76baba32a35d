"""Flow-matching math: invariants of the stateless functions in recap_core.models.flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_core.models import flow

torch.set_num_threads(1)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 4))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, steps=st.integers(1, 20), seed=st.integers(0, 2**31 - 1))
def test_euler_is_exact_for_a_constant_velocity_field(shape, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    velocity = torch.randn(shape, generator=generator, dtype=torch.float64)
    calls = []

    def field(x, eta):
        calls.append(eta)
        return velocity

    result = flow.euler_integrate(field, noise, steps)
    torch.testing.assert_close(result, noise + velocity, rtol=0, atol=1e-12)
    assert calls == pytest.approx([k / steps for k in range(steps)])


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_the_true_velocity_carries_noise_to_the_actions(shape, seed):
    """Integrating u = a - w from w lands on a (the straight path the loss trains towards)."""
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randn(shape, generator=generator, dtype=torch.float64)
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    landed = flow.euler_integrate(lambda x, eta: flow.target_velocity(actions, noise), noise, 10)
    torch.testing.assert_close(landed, actions, rtol=0, atol=1e-12)


def test_interpolation_end_points_and_direction():
    actions, noise = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    torch.testing.assert_close(flow.interpolate(actions, noise, torch.zeros(2)), noise)
    torch.testing.assert_close(flow.interpolate(actions, noise, torch.ones(2)), actions)
    eta = torch.tensor([0.25, 0.75])
    point = flow.interpolate(actions, noise, eta)
    step = 1e-3
    ahead = flow.interpolate(actions, noise, eta + step)
    torch.testing.assert_close((ahead - point) / step, flow.target_velocity(actions, noise), atol=1e-3, rtol=1e-3)


def test_interpolation_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        flow.interpolate(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1))


def test_loss_ignores_padded_steps_and_averages_valid_ones():
    target = torch.zeros(2, 4, 3)
    prediction = torch.zeros(2, 4, 3)
    prediction[0, 3] = 100.0  # padded: must not count
    prediction[1, 0] = 2.0  # valid: squared error 4 on one of four steps
    is_pad = torch.tensor([[False, False, False, True], [False, False, False, False]])
    loss = flow.flow_matching_loss(prediction, target, is_pad)
    torch.testing.assert_close(loss, torch.tensor([0.0, 1.0]))
    all_pad = flow.flow_matching_loss(prediction, target, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(all_pad, torch.zeros(2))


def test_guidance_with_beta_one_is_the_conditional_velocity_itself():
    conditional, unconditional = torch.randn(3, 4), torch.randn(3, 4)
    assert flow.guided_velocity(conditional, unconditional, 1.0) is conditional
    torch.testing.assert_close(flow.guided_velocity(conditional, unconditional, 0.0), unconditional)
    torch.testing.assert_close(flow.guided_velocity(conditional, unconditional, 2.0), 2.0 * conditional - unconditional)


def test_flow_times_stay_inside_and_favour_the_noise_end():
    generator = torch.Generator().manual_seed(0)
    eta = flow.sample_flow_time(20_000, generator)
    assert float(eta.min()) >= 0.0 and float(eta.max()) <= 1.0 - flow.FLOW_TIME_MIN + 1e-6
    # openpi's t ~ Beta(1.5, 1) has mean 0.6, so eta = 1 - t has mean ~0.4 (more noisy samples).
    assert float(eta.mean()) == pytest.approx(0.4, abs=0.01)
    again = flow.sample_flow_time(5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, flow.sample_flow_time(5, torch.Generator().manual_seed(3)))


def test_time_embedding_separates_nearby_times():
    times = torch.tensor([0.0, 0.001, 0.5, 1.0])
    embedding = flow.sinusoidal_time_embedding(times, 32)
    assert embedding.shape == (4, 32)
    assert float((embedding[0] - embedding[1]).norm()) > 1e-2
    assert np.isclose(float(embedding[0, 16:].min()), 1.0)  # cos(0) = 1
    with pytest.raises(ValueError, match="even"):
        flow.sinusoidal_time_embedding(times, 5)


def test_euler_refuses_nonsense_step_counts():
    with pytest.raises(ValueError, match="positive integer"):
        flow.euler_integrate(lambda x, eta: x, torch.zeros(1), 0)
    assert math.isfinite(float(flow.euler_integrate(lambda x, eta: -x, torch.ones(1), 3)))
