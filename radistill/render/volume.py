"""Volume rendering in plain PyTorch: sampling inside the aabb, occupancy skipping, compositing.

Samples are *packed*: only the samples that fall inside the ray's aabb span and inside an
occupied cell are kept, as flat arrays with the ray index of each (``ray_ids``) and its slot
along the ray (``slots``). Compositing scatters the optical depths into a dense ``[R, K]``
array for an exact per-ray cumulative sum, so it needs no Python loop over rays or samples.

Early termination: a sample whose transmittance *before* it is at most ``early_stop`` gets
weight 0. The windowed marcher used for inference stops rays once their transmittance falls
to ``early_stop``, which by that rule changes nothing in the result.

``march`` and ``composite`` are the references of the fused Triton kernels in
``radistill.kernels.marching`` and ``radistill.kernels.compositing``; ``backend`` picks which
one runs (``"auto"``: Triton for CUDA tensors when it is installed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from radistill.kernels import resolve_backend
from radistill.render.occupancy import OccupancyGrid
from radistill.rng import uniform

QueryFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class Samples:
    """Packed samples of ``n_rays`` rays; ``slots`` index a dense ``[n_rays, n_slots]`` layout."""

    ray_ids: Tensor  # [M] long
    slots: Tensor  # [M] long
    t: Tensor  # [M] ray parameter of the sample
    deltas: Tensor  # [M] world-space length of the sample's step
    positions: Tensor  # [M, 3]
    n_rays: int
    n_slots: int


@dataclass
class Composited:
    rgb: Tensor  # [R, 3] (without background)
    depth: Tensor  # [R]
    opacity: Tensor  # [R]
    weights: Tensor  # [M]
    optical_depth: Tensor  # [R] total optical depth after the last sample


def ray_aabb(origins: Tensor, dirs: Tensor, aabb: Tensor) -> tuple[Tensor, Tensor]:
    """Entry and exit ray parameters of the box (slab test); exit < entry means a miss.  # [R], [R]"""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    ta = (aabb[0] - origins) / safe
    tb = (aabb[1] - origins) / safe
    return torch.minimum(ta, tb).amax(-1), torch.maximum(ta, tb).amin(-1)


def ray_ranges(rays, aabb: Tensor, step: float) -> tuple[Tensor, Tensor, Tensor]:
    """Start, end and parameter step of each ray inside the aabb.  # [R] each"""
    t0, t1 = ray_aabb(rays.origins, rays.directions, aabb)
    t0 = torch.maximum(t0, rays.near)
    t1 = torch.minimum(t1, rays.far)
    step_t = step / rays.directions.norm(dim=-1)
    return t0, t1, step_t


def slot_count(t0: Tensor, t1: Tensor, step_t: Tensor) -> int:
    """The number of sample slots the longest ray needs."""
    if t0.numel() == 0:
        return 0
    return max(int(torch.ceil(((t1 - t0) / step_t).clamp(min=0).max()).item()), 0)


def march(rays, aabb: Tensor, step: float, occupancy: OccupancyGrid | None = None, perturb: bool = False,
          generator: torch.Generator | None = None, first: int = 0, count: int | None = None,
          ranges: tuple[Tensor, Tensor, Tensor] | None = None, backend: str = "torch") -> Samples:
    """Samples every ``step`` (world units) along each ray inside the aabb, skipping empty cells.

    Args:
        rays: the rays (``Rays``).
        aabb: scene bounds.  # [2, 3]
        step: distance between samples in world units.
        occupancy: cells to keep; ``None`` keeps every sample inside the aabb.
        perturb: jitter each sample uniformly within its step (training).
        first, count: the window of slots to produce (all slots by default).
        backend: ``"torch"`` (this code), ``"triton"`` (the fused kernel) or ``"auto"``.
    """
    with torch.profiler.record_function("radistill.march"):
        t0, t1, step_t = ranges if ranges is not None else ray_ranges(rays, aabb, step)
        n_slots = slot_count(t0, t1, step_t)
        count = n_slots - first if count is None else min(count, n_slots - first)
        device = rays.origins.device
        r = len(rays)
        count = max(count, 0)
        u = uniform((r, count), generator, device) if perturb else None  # [R, K]
        if resolve_backend(backend, device) == "triton":
            from radistill.kernels.marching import march_packed

            occupied = None if occupancy is None else occupancy.occupied
            res = 1 if occupancy is None else occupancy.resolution
            ray_ids, cols, t, positions = march_packed(rays.origins, rays.directions, t0, t1, step_t, first, count, u,
                                                       occupied, aabb if occupancy is None else occupancy.aabb, res)
            return Samples(ray_ids, cols, t, torch.full_like(t, step), positions, r, first + count)
        return _march_dense(rays, t0, t1, step_t, step, first, count, u, occupancy)


def _march_dense(rays, t0: Tensor, t1: Tensor, step_t: Tensor, step: float, first: int, count: int, u: Tensor | None,
                 occupancy: OccupancyGrid | None) -> Samples:
    """The reference marcher: every candidate slot as a dense ``[R, K]`` array, then compaction."""
    device = rays.origins.device
    r = len(rays)
    k = torch.arange(first, first + count, device=device, dtype=torch.float32)
    if u is None:
        u = torch.full((r, count), 0.5, device=device)
    t = t0[:, None] + (k[None] + u) * step_t[:, None]  # [R, K]
    inside = t < t1[:, None]
    ray_ids, cols = inside.nonzero(as_tuple=True)
    t = t[ray_ids, cols]
    positions = rays.origins[ray_ids] + t[:, None] * rays.directions[ray_ids]
    if occupancy is not None and ray_ids.numel() > 0:
        keep = occupancy.is_occupied(positions)
        ray_ids, cols, t, positions = ray_ids[keep], cols[keep], t[keep], positions[keep]
    deltas = torch.full_like(t, step)
    return Samples(ray_ids, cols + first, t, deltas, positions, r, first + count)


def composite(sigma: Tensor, rgb: Tensor, samples: Samples, early_stop: float = 1e-4,
              optical_depth_before: Tensor | None = None, backend: str = "torch") -> Composited:
    """Alpha-composite packed samples front to back.

    Args:
        sigma: density of each sample.  # [M]
        rgb: colour of each sample.  # [M, 3]
        samples: where the samples are (their rays, slots and step lengths).
        early_stop: samples whose transmittance before them is at most this get weight 0.
        optical_depth_before: optical depth each ray already crossed (windowed marching).  # [R]
        backend: ``"torch"`` (this code), ``"triton"`` (the fused kernel, which needs the samples
            of each ray contiguous and in slot order, as ``march`` packs them) or ``"auto"``.
    """
    with torch.profiler.record_function("radistill.composite"):
        if resolve_backend(backend, sigma.device) == "triton":
            from radistill.kernels.compositing import composite as fused

            rgb_acc, depth, opacity, weights, total = fused(sigma, rgb, samples.deltas, samples.t, samples.ray_ids,
                                                             samples.n_rays, early_stop, optical_depth_before)
            return Composited(rgb_acc, depth, opacity, weights, total)
        return _composite_dense(sigma, rgb, samples, early_stop, optical_depth_before)


def _composite_dense(sigma: Tensor, rgb: Tensor, samples: Samples, early_stop: float,
                     optical_depth_before: Tensor | None) -> Composited:
    """The reference: optical depths scattered into a dense ``[R, K]`` array for an exact cumsum."""
    r, k = samples.n_rays, max(samples.n_slots, 1)
    tau = sigma * samples.deltas  # [M]
    dense = tau.new_zeros(r, k).index_put((samples.ray_ids, samples.slots), tau)
    cum = dense.cumsum(dim=1)
    before = (cum - dense)[samples.ray_ids, samples.slots]  # exclusive optical depth
    total = cum[:, -1]
    if optical_depth_before is not None:
        before = before + optical_depth_before[samples.ray_ids]
        total = total + optical_depth_before
    transmittance = torch.exp(-before)
    alpha = 1.0 - torch.exp(-tau)
    weights = torch.where(transmittance > early_stop, transmittance * alpha, torch.zeros_like(alpha))
    acc_rgb = rgb.new_zeros(r, 3).index_add(0, samples.ray_ids, weights[:, None] * rgb)
    opacity = weights.new_zeros(r).index_add(0, samples.ray_ids, weights)
    depth = weights.new_zeros(r).index_add(0, samples.ray_ids, weights * samples.t)
    return Composited(acc_rgb, depth, opacity, weights, total)


@dataclass
class VolumeOutputs:
    rgb: Tensor  # [R, 3]
    depth: Tensor  # [R]
    opacity: Tensor  # [R]
    weights: Tensor | None  # [M] (single pass only)
    samples: Samples | None  # (single pass only)
    n_samples: int


def render_rays(query_fn: QueryFn, rays, aabb: Tensor, step: float, occupancy: OccupancyGrid | None = None,
                background: Tensor | None = None, perturb: bool = False, generator: torch.Generator | None = None,
                early_stop: float = 1e-4, window: int | None = None, backend: str = "torch") -> VolumeOutputs:
    """Volume-render rays through a field given by ``query_fn(x, d) -> (sigma, rgb)``.

    With ``window=None`` all samples are taken in one differentiable pass (training). With a
    window of ``K`` slots the rays are marched ``K`` samples at a time and rays whose
    transmittance has fallen to ``early_stop`` are dropped (inference); the result is the same.
    ``backend`` picks the marching and compositing kernels (see ``march``).
    """
    r = len(rays)
    device = rays.origins.device
    bg = torch.zeros(3, device=device) if background is None else background.to(device)
    if window is None:
        samples = march(rays, aabb, step, occupancy, perturb, generator, backend=backend)
        if samples.ray_ids.numel() == 0:
            zeros = torch.zeros(r, device=device)
            return VolumeOutputs(bg.expand(r, 3).clone(), zeros, zeros.clone(), samples.t, samples, 0)
        sigma, rgb = query_fn(samples.positions, rays.viewdirs[samples.ray_ids])
        comp = composite(sigma, rgb, samples, early_stop, backend=backend)
        out_rgb = comp.rgb + (1.0 - comp.opacity)[:, None] * bg
        return VolumeOutputs(out_rgb, comp.depth, comp.opacity, comp.weights, samples, samples.ray_ids.numel())

    ranges = ray_ranges(rays, aabb, step)
    n_slots = slot_count(*ranges)
    acc_rgb = torch.zeros(r, 3, device=device)
    opacity = torch.zeros(r, device=device)
    depth = torch.zeros(r, device=device)
    optical = torch.zeros(r, device=device)
    active = torch.arange(r, device=device)
    n_total = 0
    stop_depth = -math.log(early_stop)
    for first in range(0, n_slots, window):
        if active.numel() == 0:
            break
        sub = rays[active]
        sub_ranges = tuple(x[active] for x in ranges)
        samples = march(sub, aabb, step, occupancy, perturb, generator, first=first, count=window, ranges=sub_ranges,
                        backend=backend)
        if samples.ray_ids.numel() > 0:
            sigma, rgb = query_fn(samples.positions, sub.viewdirs[samples.ray_ids])
            comp = composite(sigma, rgb, samples, early_stop, optical[active], backend=backend)
            acc_rgb[active] += comp.rgb
            opacity[active] += comp.opacity
            depth[active] += comp.depth
            optical[active] = comp.optical_depth
            n_total += samples.ray_ids.numel()
        active = active[optical[active] < stop_depth]
    return VolumeOutputs(acc_rgb + (1.0 - opacity)[:, None] * bg, depth, opacity, None, None, n_total)


def render_in_chunks(render_fn: Callable[..., object], rays, chunk: int = 8192) -> dict[str, Tensor]:
    """Render many rays at bounded memory; returns ``rgb``, ``depth``, ``opacity`` for all rays."""
    parts: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    with torch.no_grad():
        for i in range(0, len(rays), chunk):
            out = render_fn(rays[i:i + chunk])
            for key in parts:
                parts[key].append(getattr(out, key))
    return {k: torch.cat(v) for k, v in parts.items()}
