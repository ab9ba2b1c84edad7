"""Gaussians seen as a volume: density and colour at any point, with a spatial index.

Each Gaussian ``i`` (centre ``mu``, covariance ``Sigma``, opacity ``a``) contributes the density

    sigma_i(x, d) = tau_i * sqrt(d^T Sigma^-1 d) / sqrt(2 pi) * exp(-m(x) / 2),   tau_i = -ln(1 - a)

where ``m`` is the squared Mahalanobis distance to the centre, cut at 3 (``m <= 9``). Along a
ray of direction ``d`` through the centre the Gaussian's optical depth is then exactly
``tau_i``, so such a ray gets the Gaussian's opacity ``a``, whatever the Gaussian's shape;
off-centre rays see ``tau_i exp(-m_perp / 2)``, as the rasteriser's ``a exp(-power)`` to first
order. The colour is the density-weighted mean of the Gaussians' SH colours along ``d``.
Without a direction, the density is the largest over directions (``1 / smallest scale``),
which is what occupancy grids need.

The index is a pyramid of uniform grids over the aabb: every Gaussian is listed in the cells
its 3-sigma box overlaps, at the finest level where that is at most ``MAX_CELLS`` cells, so a
point only meets the Gaussians of its own cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from radistill.fields.sh import sh_basis

CUTOFF_SQ = 9.0
MAX_CELLS = 512
PAIR_BUDGET = 1 << 22
OPACITY_MAX = 0.99


def precision_matrices(quats: Tensor, log_scales: Tensor) -> Tensor:
    """Inverse covariances ``R diag(exp(-2 log_scales)) R^T`` (differentiable).  # [N, 3, 3]"""
    from radistill.render.splat import quat_to_rotmat

    r = quat_to_rotmat(quats)
    return (r * torch.exp(-2 * log_scales)[:, None, :]) @ r.transpose(1, 2)


@dataclass
class _Level:
    resolution: int
    starts: Tensor  # [C + 1] run of each cell in ``members``
    members: Tensor  # [P] Gaussian index of each (cell, Gaussian) entry, sorted by cell


@dataclass
class GaussianVolume:
    """The spatial index of a set of Gaussians (built without gradients; queries are differentiable).

    Levels of uniform grids over the aabb, from ``resolution`` cells per side halving down to
    one cell; each Gaussian is listed at the finest level where its 3-sigma box overlaps at
    most ``MAX_CELLS`` cells, in each of those cells. A point meets the Gaussians of its cell
    at every level.
    """

    aabb: Tensor  # [2, 3]
    levels: list[_Level]

    @classmethod
    @torch.no_grad()
    def build(cls, means: Tensor, quats: Tensor, scales: Tensor, aabb: Tensor, resolution: int = 64) -> "GaussianVolume":
        from radistill.render.splat import covariances

        device = means.device
        aabb = aabb.to(device)
        half = math.sqrt(CUTOFF_SQ) * torch.sqrt(torch.diagonal(covariances(quats, scales), dim1=1, dim2=2))  # [N, 3]
        unit_lo = (means - half - aabb[0]) / (aabb[1] - aabb[0])
        unit_hi = (means + half - aabb[0]) / (aabb[1] - aabb[0])
        pending = torch.arange(means.shape[0], device=device)
        levels = []
        r = resolution
        while pending.numel():
            lo = torch.floor(unit_lo[pending] * r).clamp(0, r - 1).long()
            hi = torch.floor(unit_hi[pending] * r).clamp(0, r - 1).long()
            spans = hi - lo + 1
            fits = (spans.prod(-1) <= MAX_CELLS) | (r == 1)
            levels.append(_build_level(r, pending[fits], lo[fits], spans[fits]))
            pending = pending[~fits]
            r = max(r // 2, 1)
        return cls(aabb, [lvl for lvl in levels if lvl.members.numel()])

    def cells(self, x: Tensor, resolution: int) -> Tensor:
        """Flat cell index of points ``x`` [N, 3] in a grid of ``resolution`` (clamped).  # [N]"""
        r = resolution
        ijk = ((x - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * r).long().clamp(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]

    def counts(self, x: Tensor) -> Tensor:
        """How many Gaussians each point meets.  # [N]"""
        total = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for lvl in self.levels:
            cell = self.cells(x, lvl.resolution)
            total += lvl.starts[cell + 1] - lvl.starts[cell]
        return total

    def pairs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every (point, Gaussian) pair to evaluate.  # [P], [P]"""
        device = x.device
        points, gaussians = [], []
        for lvl in self.levels:
            cell = self.cells(x, lvl.resolution)
            count = lvl.starts[cell + 1] - lvl.starts[cell]
            point = torch.repeat_interleave(torch.arange(x.shape[0], device=device), count)
            first = torch.cumsum(count, 0) - count
            offset = torch.arange(point.numel(), device=device) - first[point]
            points.append(point)
            gaussians.append(lvl.members[lvl.starts[cell][point] + offset])
        return torch.cat(points), torch.cat(gaussians)

    def query(self, x: Tensor, d: Tensor | None, means: Tensor, quats: Tensor, log_scales: Tensor, opacities: Tensor,
              sh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Density [N] and colour [N, 3] (``None`` without ``sh``) at points ``x`` [N, 3] along ``d``."""
        n = x.shape[0]
        if n == 0 or not self.levels:
            return x.new_zeros(n), (None if sh is None else x.new_zeros(n, 3))
        precision = precision_matrices(quats, log_scales)  # [G, 3, 3]
        tau = -torch.log1p(-opacities.clamp(max=OPACITY_MAX))  # [G]
        bounds = _chunks(self.counts(x), PAIR_BUDGET)
        sigmas, colours = [], []
        basis = None if (sh is None or d is None) else sh_basis(d, round(math.sqrt(sh.shape[1])) - 1)  # [N, K]
        sym = _symmetric(precision)  # [G, 6]
        for a, b in bounds:
            point, gauss = self.pairs(x[a:b])
            m = _quadratic(sym[gauss], x[a:b][point] - means[gauss])  # [P] squared Mahalanobis distance
            inside = torch.nonzero(m.detach() <= CUTOFF_SQ).squeeze(1)  # most pairs of a cell miss the ellipsoid
            point, gauss, m = point[inside], gauss[inside], m[inside]
            if d is None:
                inv_extent = torch.exp(-log_scales.amin(-1))[gauss]
            else:
                inv_extent = _quadratic(sym[gauss], d[a:b][point]).clamp_min(1e-20).sqrt()
            dens = tau[gauss] * inv_extent * torch.exp(-0.5 * m) / math.sqrt(2 * math.pi)  # [P]
            sigma = x.new_zeros(b - a).index_add(0, point, dens)
            sigmas.append(sigma)
            if basis is not None:
                col = ((basis[a:b][point][:, :, None] * sh[gauss]).sum(1) + 0.5).clamp_min(0.0)  # [P, 3]
                acc = x.new_zeros(b - a, 3).index_add(0, point, dens[:, None] * col)
                colours.append(acc / sigma.clamp_min(1e-12)[:, None])
        sigma = torch.cat(sigmas)
        return sigma, (torch.cat(colours).clamp(0, 1) if basis is not None else None)


def _symmetric(m: Tensor) -> Tensor:
    """The 6 distinct entries (xx, yy, zz, xy, xz, yz) of symmetric matrices [N, 3, 3].  # [N, 6]"""
    return torch.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], m[:, 0, 1], m[:, 0, 2], m[:, 1, 2]], -1)


def _quadratic(sym: Tensor, v: Tensor) -> Tensor:
    """``v^T M v`` for symmetric ``M`` given by ``_symmetric`` [P, 6] and vectors ``v`` [P, 3].  # [P]"""
    x, y, z = v.unbind(-1)
    return (sym[:, 0] * x * x + sym[:, 1] * y * y + sym[:, 2] * z * z
            + 2 * (sym[:, 3] * x * y + sym[:, 4] * x * z + sym[:, 5] * y * z))


def _build_level(resolution: int, ids: Tensor, lo: Tensor, spans: Tensor) -> _Level:
    """List Gaussians ``ids`` in every cell of their boxes (``lo`` corner and ``spans``, in cells)."""
    device = ids.device
    counts = spans.prod(-1)
    owner = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=device) - first[owner]
    sy, sz = spans[owner, 1], spans[owner, 2]
    i = lo[owner, 0] + local // (sy * sz)
    j = lo[owner, 1] + (local // sz) % sy
    k = lo[owner, 2] + local % sz
    flat = (i * resolution + j) * resolution + k
    order = torch.argsort(flat)
    starts = torch.zeros(resolution**3 + 1, dtype=torch.long, device=device)
    starts[1:] = torch.cumsum(torch.bincount(flat, minlength=resolution**3), 0)
    return _Level(resolution, starts, ids[owner[order]])


def _chunks(cost: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges of items whose summed ``cost`` stays within ``budget`` (at least one item each)."""
    total = torch.cumsum(cost, 0).cpu()
    bounds, a = [], 0
    n = cost.numel()
    while a < n:
        base = int(total[a - 1]) if a else 0
        b = int(torch.searchsorted(total, base + budget, right=True))
        b = max(b, a + 1)
        bounds.append((a, min(b, n)))
        a = min(b, n)
    return bounds
