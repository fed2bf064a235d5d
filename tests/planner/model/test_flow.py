"""Flow matching conventions (t=0 noise, t=1 data, Beta(1.5, 1) times, Euler toward data)
and recovery of a known 1-D bimodal distribution."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from planner.model import flow


def test_time_direction_and_target() -> None:
    x, eps = torch.full((3, 2), 2.0), torch.full((3, 2), -1.0)
    assert torch.allclose(flow.interpolate(x, eps, torch.zeros(3)), eps)  # t=0: noise
    assert torch.allclose(flow.interpolate(x, eps, torch.ones(3)), x)  # t=1: data
    # the target is the time derivative of x_t
    t0, dt = torch.full((3,), 0.3), 1e-3
    deriv = (flow.interpolate(x, eps, t0 + dt) - flow.interpolate(x, eps, t0)) / dt
    assert torch.allclose(deriv, flow.velocity_target(x, eps), atol=1e-2)
    assert np.allclose(flow.euler_times(4), [0.0, 0.25, 0.5, 0.75])


def test_time_sampler_is_beta_1p5_1_and_seeded() -> None:
    t = flow.sample_time(20000, 1.5, 1.0, torch.Generator().manual_seed(0))
    assert 0.0 < float(t.min()) and float(t.max()) < 1.0
    assert abs(float(t.mean()) - 0.6) < 0.01  # Beta(1.5, 1) mean = 1.5 / 2.5
    again = flow.sample_time(20000, 1.5, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_euler_with_exact_velocity_reaches_data() -> None:
    # For a single data point x*, the optimal velocity at (x_t, t) is (x* - x_t) / (1 - t):
    # Euler from noise must land on x* (checks the Euler direction and step size).
    target = torch.tensor([[3.0]])

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (target - x_t) / (1.0 - t[:, None])

    out = flow.sample(velocity, torch.randn(1, 1, generator=torch.Generator().manual_seed(0)), 10)
    assert torch.allclose(out, target, atol=1e-5)


class _Velocity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1)
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, t[:, None]], dim=1))


def test_bimodal_distribution_recovers_both_modes() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    model = _Velocity()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        signs = torch.randint(0, 2, (256, 1), generator=gen).float() * 2 - 1
        data = 2.0 * signs + 0.1 * torch.randn(256, 1, generator=gen)
        loss = flow.flow_matching_loss(model, data, 1.5, 1.0, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        samples = flow.sample(model, torch.randn(4000, 1, generator=gen), 20).squeeze(1)
    near_pos = ((samples - 2.0).abs() < 0.5).float().mean().item()
    near_neg = ((samples + 2.0).abs() < 0.5).float().mean().item()
    assert 0.35 < near_pos < 0.65 and 0.35 < near_neg < 0.65, (near_pos, near_neg)
    assert near_pos + near_neg > 0.85  # little mass between the modes


def test_several_draws_per_sample_keep_each_rows_data() -> None:
    """flow_samples > 1: velocity_fn sees B * n rows in repeat_interleave order; the exact
    velocity of each row's own data gives zero loss, a shuffled order does not."""
    x = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, 3, 2).contiguous()
    n = 3
    x_rep = flow.repeat_rows(x, n)

    def exact(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert x_t.shape == (4 * n, 3, 2)
        return (x_rep - x_t) / (1.0 - t)[:, None, None]  # x - eps, since x_t = t x + (1-t) eps

    def wrong_order(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x.repeat(n, 1, 1) - x_t) / (1.0 - t)[:, None, None]

    gen = torch.Generator().manual_seed(0)
    assert float(flow.flow_matching_loss(exact, x, 1.5, 1.0, gen, samples=n)) < 1e-6
    gen = torch.Generator().manual_seed(0)
    assert float(flow.flow_matching_loss(wrong_order, x, 1.5, 1.0, gen, samples=n)) > 0.1
    try:
        flow.flow_matching_loss(exact, x, 1.5, 1.0, gen, samples=0)
    except ValueError as exc:
        assert "flow samples" in str(exc)
    else:
        raise AssertionError("samples=0 was accepted")


def test_time_feature_layouts() -> None:
    """Periods log-spaced in [min, max] (pi0): the slowest pair is monotonic in t over [0, 1];
    min_period=0 keeps the first checkpoint's layout exactly."""
    from planner.model.action_expert import fourier_time_features

    t = torch.linspace(0, 1, 101)
    f = fourier_time_features(t, 8, 4.0, 0.004)
    assert f.shape == (101, 16)
    slow_sin = f[:, 7]  # sin(2 pi t / 4): rises over [0, 1]
    assert bool((slow_sin[1:] > slow_sin[:-1]).all())
    fast_sin = f[:, 0]  # period 0.004: many cycles
    assert int((fast_sin[1:] * fast_sin[:-1] < 0).sum()) > 10
    legacy = fourier_time_features(t, 8, 1000.0)
    freqs = torch.exp(-np.log(1000.0) * torch.arange(8) / 8)
    angles = 2 * np.pi * 1000.0 * t[:, None] * freqs[None]
    assert torch.allclose(legacy, torch.cat([torch.sin(angles), torch.cos(angles)], -1))
