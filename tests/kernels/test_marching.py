"""The Triton ray marcher against its reference, ``radistill.render.volume.march``: the same
samples, bit for bit (they decide which cells are queried, so near-misses are not allowed)."""

from __future__ import annotations

import pytest
import torch

from radistill.cameras import Rays
from radistill.render.occupancy import OccupancyGrid
from radistill.render.volume import march, ray_ranges

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def rays_towards_the_box(n: int, device: torch.device) -> Rays:
    origins = torch.randn(n, 3) * 0.4 + torch.tensor([0.0, 0.0, -3.0])
    dirs = torch.nn.functional.normalize(torch.randn(n, 3) * 0.35 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    dirs[0] = torch.tensor([0.0, 1.0, 0.0])  # misses the box
    near, far = torch.zeros(n), torch.full((n,), 10.0)
    far[1] = 2.5  # stops inside the box
    return Rays(origins, dirs, dirs, near, far).to(device)


def grid(device: torch.device, fraction: float) -> OccupancyGrid:
    occ = OccupancyGrid(AABB, 16).to(device)
    occ.occupied.copy_(torch.rand(16**3, device=device) < fraction)
    return occ


def assert_same_samples(a, b):
    assert (a.n_rays, a.n_slots) == (b.n_rays, b.n_slots)
    for name in ("ray_ids", "slots", "t", "deltas", "positions"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize("perturb", [False, True])
@pytest.mark.parametrize("fraction", [None, 0.3, 0.0])
def test_same_samples_as_the_reference(device, perturb, fraction):
    rays = rays_towards_the_box(64, device)
    occ = None if fraction is None else grid(device, fraction)
    expected = march(rays, AABB.to(device), 0.02, occ, perturb, torch.Generator().manual_seed(3), backend="torch")
    got = march(rays, AABB.to(device), 0.02, occ, perturb, torch.Generator().manual_seed(3), backend="triton")
    assert_same_samples(got, expected)
    if fraction != 0.0:
        assert expected.ray_ids.numel() > 500 and got.ray_ids[0] > 0  # the first ray misses


def test_windows_of_slots(device):
    rays = rays_towards_the_box(40, device)
    occ = grid(device, 0.5)
    ranges = ray_ranges(rays, AABB.to(device), 0.02)
    for first, count in ((0, 50), (50, 50), (120, 200)):
        kwargs = dict(first=first, count=count, ranges=ranges)
        expected = march(rays, AABB.to(device), 0.02, occ, True, torch.Generator().manual_seed(1), backend="torch", **kwargs)
        got = march(rays, AABB.to(device), 0.02, occ, True, torch.Generator().manual_seed(1), backend="triton", **kwargs)
        assert_same_samples(got, expected)
        assert (got.slots >= first).all() and (got.slots < first + count).all()
