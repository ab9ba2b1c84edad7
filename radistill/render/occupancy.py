"""An occupancy grid that lets the ray marcher skip empty space (Instant-NGP style).

The grid keeps an exponential moving maximum of the density sampled in each cell and marks a
cell occupied when that density would give a sample of the nominal step more than
``threshold_alpha`` opacity (or when it exceeds the mean, early in training). It is a buffer
of the field that owns it, so it is saved and loaded with the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from radistill.rng import uniform


class OccupancyGrid(nn.Module):
    """A ``resolution^3`` grid over ``aabb``."""

    def __init__(self, aabb: Tensor, resolution: int = 64) -> None:
        super().__init__()
        self.resolution = int(resolution)
        n = self.resolution**3
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("density", torch.zeros(n))
        self.register_buffer("occupied", torch.ones(n, dtype=torch.bool))

    def cell_index(self, x: Tensor) -> Tensor:
        """Flat cell index of points ``x`` [N, 3] (clamped to the grid).  # [N] long"""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        ijk = (u * self.resolution).long().clamp(0, self.resolution - 1)
        return (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2]

    def is_occupied(self, x: Tensor) -> Tensor:
        """Whether points ``x`` [N, 3] lie in occupied cells.  # [N] bool"""
        return self.occupied[self.cell_index(x)]

    def cell_centers(self, jitter: Tensor | None = None) -> Tensor:
        """World positions of all cell centres (optionally jittered within the cell).  # [C, 3]"""
        r = self.resolution
        idx = torch.arange(r, device=self.aabb.device, dtype=torch.float32)
        ijk = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3)
        offset = 0.5 if jitter is None else jitter
        return self.aabb[0] + (ijk + offset) / r * (self.aabb[1] - self.aabb[0])

    @property
    def cell_radius(self) -> float:
        """Half the diagonal of a cell: every point of a cell lies this close to its centre."""
        return 0.5 * float(((self.aabb[1] - self.aabb[0]) / self.resolution).norm())

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step_size: float, decay: float = 0.95,
               threshold_alpha: float = 0.01, generator: torch.Generator | None = None, chunk: int = 1 << 16,
               at_centres: bool = False) -> None:
        """Re-sample the density in every cell and refresh the occupancy mask.

        Args:
            density_fn: density at world points [N, 3] -> [N].
            step_size: the ray marcher's nominal step (world units).
            decay: how fast old maxima fade.
            threshold_alpha: opacity of one step below which a cell counts as empty.
            at_centres: sample the cell centres (for a ``density_fn`` that bounds the density over
                a cell) instead of a random point of each cell.
        """
        n = self.density.shape[0]
        jitter = None if at_centres else uniform((n, 3), generator, self.aabb.device)
        points = self.cell_centers(jitter)
        fresh = torch.cat([density_fn(points[i:i + chunk]) for i in range(0, n, chunk)])
        self.density.copy_(torch.maximum(self.density * decay, fresh.float()))
        threshold = min(-math.log(1.0 - threshold_alpha) / step_size, float(self.density.mean()))
        self.occupied.copy_(self.density > threshold)

    @property
    def fraction_occupied(self) -> float:
        return float(self.occupied.float().mean())
