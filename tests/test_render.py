import math

import pytest
import torch

from radistill.cameras import Rays
from radistill.render.occupancy import OccupancyGrid
from radistill.render.volume import composite, march, ray_aabb, render_rays

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def axis_rays(n: int = 4) -> Rays:
    o = torch.tensor([[-3.0, 0.0, 0.0]]).repeat(n, 1)
    o[:, 1] = torch.linspace(-0.5, 0.5, n)
    d = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    return Rays(o, d, d, torch.zeros(n), torch.full((n,), 100.0))


def test_ray_aabb_entry_exit():
    rays = axis_rays(2)
    t0, t1 = ray_aabb(rays.origins, rays.directions, AABB)
    assert torch.allclose(t0, torch.tensor([2.0, 2.0])) and torch.allclose(t1, torch.tensor([4.0, 4.0]))
    miss = Rays(torch.tensor([[-3.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]),
                torch.zeros(1), torch.full((1,), 100.0))
    t0, t1 = ray_aabb(miss.origins, miss.directions, AABB)
    assert t1 < t0
    assert march(miss, AABB, 0.1).ray_ids.numel() == 0


def slab(sigma0: float, x0: float, x1: float):
    """A constant-density slab x0 < x < x1, red; empty elsewhere."""
    def query(x, d):
        inside = (x[:, 0] > x0) & (x[:, 0] < x1)
        sigma = torch.where(inside, torch.full_like(x[:, 0], sigma0), torch.zeros_like(x[:, 0]))
        rgb = torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)
        return sigma, rgb
    return query


def test_constant_slab_matches_beer_lambert():
    rays = axis_rays()
    bg = torch.tensor([0.0, 0.0, 1.0])
    out = render_rays(slab(2.0, -0.5, 0.5), rays, AABB, step=0.001, background=bg)
    expected = 1 - math.exp(-2.0 * 1.0)
    assert torch.allclose(out.opacity, torch.full((4,), expected), atol=2e-3)
    assert torch.allclose(out.rgb, torch.tensor([expected, 0.0, 1 - expected]).expand(4, 3), atol=2e-3)
    # expected depth: t of the slab entry (2.5) plus the mean of a truncated exponential
    mean_in = 1 / 2.0 - 1.0 * math.exp(-2.0) / (1 - math.exp(-2.0))
    assert torch.allclose(out.depth / out.opacity, torch.full((4,), 2.5 + mean_in), atol=3e-3)


def naive_composite(sigma, rgb, ray_ids, deltas, n_rays, early_stop):
    """One ray at a time, one sample at a time: the textbook recurrence."""
    out = []
    for r in range(n_rays):
        trans, acc = 1.0, torch.zeros(3, dtype=sigma.dtype)
        for i in (ray_ids == r).nonzero()[:, 0].tolist():
            alpha = 1 - torch.exp(-sigma[i] * deltas[i])
            if trans > early_stop:
                acc = acc + trans * alpha * rgb[i]
            trans = trans * (1 - alpha)
        out.append(acc)
    return torch.stack(out)


def test_composite_values_and_gradients_match_the_naive_recurrence():
    torch.manual_seed(3)
    rays = axis_rays(5)
    samples = march(rays, AABB, step=0.2, perturb=True, generator=torch.Generator().manual_seed(1))
    m = samples.ray_ids.numel()
    sigma = (torch.rand(m, dtype=torch.float64) * 8).requires_grad_()
    rgb = torch.rand(m, 3, dtype=torch.float64).requires_grad_()
    samples.deltas = samples.deltas.double()
    samples.t = samples.t.double()
    upstream = torch.randn(5, 3, dtype=torch.float64)
    fast = composite(sigma, rgb, samples, early_stop=1e-3).rgb
    (fast * upstream).sum().backward()
    g_fast = sigma.grad.clone(), rgb.grad.clone()
    sigma.grad = rgb.grad = None
    slow = naive_composite(sigma, rgb, samples.ray_ids, samples.deltas, 5, 1e-3)
    (slow * upstream).sum().backward()
    assert torch.allclose(fast, slow, atol=1e-10)
    assert torch.allclose(g_fast[0], sigma.grad, atol=1e-9) and torch.allclose(g_fast[1], rgb.grad, atol=1e-9)


def test_windowed_marching_equals_single_pass_and_stops_early():
    rays = axis_rays(6)
    query = slab(40.0, -0.9, 0.9)  # opaque: rays terminate after ~0.25 units
    full = render_rays(query, rays, AABB, step=0.01, early_stop=1e-4)
    win = render_rays(query, rays, AABB, step=0.01, early_stop=1e-4, window=8)
    assert torch.allclose(full.rgb, win.rgb, atol=1e-6) and torch.allclose(full.depth, win.depth, atol=1e-5)
    assert win.n_samples < full.n_samples / 3, "terminated rays must stop being sampled"


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    def ball_density(x):
        return torch.where(x.norm(dim=-1) < 0.4, torch.full_like(x[:, 0], 5.0), torch.zeros_like(x[:, 0]))

    def query(x, d):
        return ball_density(x), torch.full((x.shape[0], 3), 0.5)

    grid = OccupancyGrid(AABB, resolution=16)
    gen = torch.Generator().manual_seed(0)
    for _ in range(16):  # jittered updates accumulate the maximum, as during training
        grid.update(ball_density, step_size=0.01, decay=1.0, generator=gen)
    frac = grid.fraction_occupied
    assert 0.0 < frac < 0.1  # the ball (plus the cells its surface cuts) is a small part of the box
    assert grid.is_occupied(torch.zeros(1, 3)).all() and not grid.is_occupied(torch.tensor([[0.9, 0.9, 0.9]])).any()
    rays = axis_rays(5)
    dense = render_rays(query, rays, AABB, step=0.01)
    skipped = render_rays(query, rays, AABB, step=0.01, occupancy=grid)
    # only cells that the ball barely grazes may be missed by the jittered updates
    assert torch.allclose(dense.rgb, skipped.rgb, atol=2e-2)
    assert skipped.n_samples < dense.n_samples / 2


def test_occupancy_grid_forgets_density_that_went_away():
    grid = OccupancyGrid(AABB, resolution=8)
    grid.update(lambda x: torch.full_like(x[:, 0], 100.0), step_size=0.01, decay=0.5)
    assert grid.fraction_occupied == 1.0
    for _ in range(12):
        grid.update(lambda x: torch.where(x[:, 0] > 0, 100.0, 0.0), step_size=0.01, decay=0.5)
    assert grid.fraction_occupied == pytest.approx(0.5)
