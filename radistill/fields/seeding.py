"""Points where a teacher's scene is: the surfaces its renders show.

Used by the kinds that start from explicit primitives (Gaussians; meshing's surface points): the teacher
renders rays of some views, and every ray that is opaque enough (opacity >= 0.5) gives the
point where its accumulated render weight reaches half its opacity (the weighted median of
its samples: the surface the ray sees). Seeds are drawn from those points, so they lie on the
visible surfaces, never in the faint haze a field may keep in empty space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from radistill.cameras import Cameras, SphereSampler, framing_radius, pinhole_cameras
from radistill.fields.base import Representation
from radistill.render.volume import render_rays


def around_aabb_cameras(aabb: Tensor, n: int, resolution: int, generator: torch.Generator,
                        fov_deg: float = 40.0) -> Cameras:
    """``n`` pinhole cameras on a sphere around ``aabb`` (1.2 diagonals away), looking at its centre."""
    center = (aabb[0] + aabb[1]) / 2
    c2w = SphereSampler(framing_radius(aabb), tuple(center.tolist()), hemisphere=False).sample(n, generator)
    return pinhole_cameras(c2w, resolution, fov_deg)


RAYS_PER_SEED = 8
"""Rays rendered per requested seed in the first round: enough that the opaque ones outnumber
the seeds where the scene covers an eighth of the views (a smaller scene takes more rounds)."""


@torch.no_grad()
def seed_points(teacher: Representation, n: int, generator: torch.Generator, cameras: Cameras | None = None,
                views: int = 32, resolution: int = 64, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Up to ``n`` points drawn by the teacher's render weights, and the teacher's colour there.

    The teacher renders rays in rounds, the same share of random pixels of every view each
    round (``RAYS_PER_SEED * n`` rays in all, or every pixel when the views hold fewer), until
    ``n`` rays have found the scene or every pixel has been rendered: a teacher that is slow to
    render spends its time on the seeds asked for, and a scene small in the views still gets
    them.

    Args:
        cameras: the views to render (those the teacher is meant to be seen from); by default
            ``views`` cameras all around its aabb at ``resolution`` pixels.

    Returns:
        points [M, 3] (M <= n, fewer only when every pixel of every view shows fewer opaque
        rays) and their colours [M, 3] seen along the ray that found them.
    """
    aabb = teacher.aabb.detach().cpu()
    cams = around_aabb_cameras(aabb, views, resolution, generator) if cameras is None else cameras
    positions, dirs = [], []
    step = float((aabb[1] - aabb[0]).norm()) / 256
    pixels = cams.width * cams.height
    per_view = min(pixels, -(-RAYS_PER_SEED * n // len(cams)))
    orders: list[Tensor | None] = [None] * len(cams)  # each view's pixels in a random order, drawn once
    found, start = 0, 0
    while start < pixels and found < n:
        for v in range(len(cams)):
            rays = cams.image_rays(v)
            if per_view < pixels:
                if orders[v] is None:
                    orders[v] = torch.randperm(pixels, generator=generator)
                rays = rays[orders[v][start:start + per_view]]
            hits, points, hit_dirs = _median_points_of(teacher, rays, step, chunk)
            positions += points
            dirs += hit_dirs
            found += hits
        start += per_view
    if found == 0:
        return torch.zeros(0, 3), torch.zeros(0, 3)
    pos, d = torch.cat(positions), torch.cat(dirs)
    pick = torch.randperm(pos.shape[0], generator=generator)[:n]
    pos, d = pos[pick], d[pick]
    device = teacher.aabb.device
    rgb = torch.cat([teacher.query(pos[i:i + chunk].to(device), d[i:i + chunk].to(device)).rgb.cpu()
                     for i in range(0, pos.shape[0], chunk)])
    return pos, rgb


def _median_points_of(teacher: Representation, rays: Any, step: float, chunk: int) -> tuple[int, list[Tensor], list[Tensor]]:
    """The median points of the opaque ones of ``rays`` (rendered ``chunk`` at a time) and their
    directions: how many, and the parts to concatenate."""
    device = teacher.aabb.device
    rays = rays.to(device)
    positions, dirs, found = [], [], 0
    for i in range(0, len(rays), chunk):
        sub = rays[i:i + chunk]
        out = teacher.render(sub)
        if out.positions is None:  # a renderer without packed samples: march its volume view
            vol = render_rays(lambda x, d: _sigma_rgb(teacher, x, d), sub, teacher.aabb, step)
            if vol.samples is None:
                continue
            pos, w, ids = vol.samples.positions, vol.weights, vol.samples.ray_ids
        else:
            pos, w, ids = out.positions, out.weights, out.ray_ids
        if w.numel() == 0:  # every ray of the chunk missed the scene
            continue
        rays_hit, points = median_points(pos, w, ids, len(sub))
        positions.append(points.cpu())
        dirs.append(sub.viewdirs[rays_hit].cpu())
        found += int(rays_hit.numel())
    return found, positions, dirs


def median_points(positions: Tensor, weights: Tensor, ray_ids: Tensor, n_rays: int,
                  min_opacity: float = 0.5) -> tuple[Tensor, Tensor]:
    """For each ray with opacity >= ``min_opacity``, its first sample where the accumulated
    weight reaches half the ray's opacity.

    Args:
        positions, weights, ray_ids: packed samples, grouped by ray in marching order.  # [M, 3], [M], [M]
    Returns:
        the rays kept [R'] and their median points [R', 3].
    """
    opacity = torch.zeros(n_rays, device=weights.device).index_add(0, ray_ids, weights)
    total = torch.cumsum(weights, 0)
    count = torch.bincount(ray_ids, minlength=n_rays)
    before = torch.cumsum(count, 0) - count  # first sample of each ray
    start_total = torch.where(before > 0, total[(before - 1).clamp(min=0)], torch.zeros_like(opacity))
    within = total - start_total[ray_ids]  # accumulated weight along the ray, inclusive
    reached = (within >= 0.5 * opacity[ray_ids]) & (opacity[ray_ids] >= min_opacity)
    first = torch.full((n_rays,), weights.numel(), dtype=torch.long, device=weights.device)
    idx = torch.nonzero(reached).squeeze(1)
    first = first.scatter_reduce(0, ray_ids[idx], idx, reduce="amin")
    hit = torch.nonzero(first < weights.numel()).squeeze(1)
    return hit, positions[first[hit]]


def _sigma_rgb(teacher: Representation, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    out = teacher.query(x, d)
    return out.sigma, out.rgb
