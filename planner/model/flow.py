"""Stateless flow matching (rectified flow), as in Alpamayo-R1's action expert.

Conventions pinned together (change one, change all, and the 1-D test):
- Time direction: t = 0 is pure noise, t = 1 is data.  x_t = t * x + (1 - t) * eps,
  eps ~ N(0, I).
- Target: the velocity dx_t/dt = x - eps (independent of t along one pair).
- Training time sampler: t ~ Beta(a, b) with (a, b) = (1.5, 1) by default: density
  proportional to t^0.5, so more training mass near the data end, where the trajectory's
  detail is decided.
- Sampling: explicit Euler from t = 0 (noise) to t = 1 (data) in N equal steps,
  x <- x + (1 / N) * v(x, t), with t = 0, 1/N, ..., (N-1)/N evaluated at the step start.

The network is passed in as a callable; nothing here holds state (LeRobot's pi0 split).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t (B,)) -> v


def sample_time(
    batch: int, a: float, b: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch,) flow times t ~ Beta(a, b) in (0, 1), drawn with an explicit generator.

    torch.distributions.Beta has no generator argument, so the Beta draw is built from two
    Gamma draws via the inverse-CDF-free ratio X / (X + Y); torch's Gamma sampler takes no
    generator either, hence numpy seeded from the generator for reproducibility."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.beta(a, b, size=batch).astype(np.float32))


def interpolate(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * x + (1 - t) * eps; t has shape (B,) and broadcasts over the rest."""
    tb = t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return tb * x + (1.0 - tb) * eps


def velocity_target(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """d x_t / d t = x - eps."""
    return x - eps


def flow_matching_loss(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    a: float,
    b: float,
    generator: torch.Generator | None = None,
    samples: int = 1,
) -> torch.Tensor:
    """Mean squared error between the predicted and target velocity (scalar).

    samples > 1 draws that many (t, eps) pairs per row of x: velocity_fn then sees a batch of
    B * samples rows, row i * samples + j belonging to x[i] (repeat_interleave order), and
    must expand its conditioning the same way (`repeat_rows`)."""
    if samples < 1:
        raise ValueError(f"flow samples must be >= 1, got {samples}")
    if samples > 1:
        x = x.repeat_interleave(samples, dim=0)
    t = sample_time(x.shape[0], a, b, generator).to(x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_t = interpolate(x, eps, t)
    return torch.mean((velocity_fn(x_t, t) - velocity_target(x, eps)) ** 2)


def repeat_rows(tensor: torch.Tensor, samples: int, dim: int = 0) -> torch.Tensor:
    """Repeat each row `samples` times along `dim` (the order flow_matching_loss uses)."""
    return tensor if samples == 1 else tensor.repeat_interleave(samples, dim=dim)


def repeat_context(
    samples: int,
    k: torch.Tensor,
    v: torch.Tensor,
    context_mask: torch.Tensor,
    offset: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The expert's conditioning for `samples` draws per row: K/V (layers, B, ...) along dim
    1, the (B, S) mask and (B,) offsets along dim 0 (shared by both model families)."""
    return (
        repeat_rows(k, samples, 1),
        repeat_rows(v, samples, 1),
        repeat_rows(context_mask, samples),
        repeat_rows(offset, samples),
    )


def euler_times(steps: int) -> np.ndarray:
    """(steps,) start times of the Euler steps: 0, 1/N, ..., (N-1)/N (float32)."""
    if steps < 1:
        raise ValueError(f"Euler steps must be >= 1, got {steps}")
    return (np.arange(steps) / steps).astype(np.float32)


def euler_step(x: np.ndarray, velocity: np.ndarray, steps: int) -> np.ndarray:
    """One Euler step of size 1/steps toward the data (t increasing)."""
    return x + velocity / steps


def sample(velocity_fn: VelocityFn, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate from noise (t=0) to data (t=1) with `steps` Euler steps (torch models)."""
    x = noise
    for t0 in euler_times(steps):
        t = torch.full((x.shape[0],), float(t0), dtype=x.dtype)
        x = x + velocity_fn(x, t) / steps
    return x
