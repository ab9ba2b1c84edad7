"""Ray marching through the occupancy grid in Triton: the packed samples of a batch of rays.

The reference is ``radistill.render.volume.march``: slot ``k`` of a ray sits at
``t = t0 + (k + u) * step_t`` (``u`` = 0.5, or the caller's jitter), is kept when ``t < t1`` and its
cell of the occupancy grid is occupied, and the kept samples are packed ray after ray in slot
order. The reference builds the whole ``[rays, slots]`` array of candidates, tests every one
and compacts them with ``nonzero``; here one program walks one ray's slots ``BLOCK`` at a time,
first counting the kept samples of each ray, then (after a prefix sum gives each ray its place)
writing them. Floating-point contraction is off and the division is correctly rounded, so the
kept samples are the reference's exactly, also on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 128


@triton.jit
def _cell_coordinate(x, lo, size, resolution):
    """The reference's ``((x - lo) / size * resolution).long().clamp(0, resolution - 1)``; clamping
    to [-1, resolution] before truncating gives the same cell and keeps far-away points in range."""
    v = tl.math.div_rn(x - lo, size) * resolution
    v = tl.minimum(tl.maximum(v, -1.0), resolution * 1.0)
    return tl.minimum(tl.maximum(v.to(tl.int32), 0), resolution - 1)


@triton.jit
def _slot_samples(o_ptr, d_ptr, ray, t0, t1, step_t, jitter_ptr, slots, first, count, lo_x, lo_y, lo_z,
                  size_x, size_y, size_z, occupied_ptr, resolution, HAS_JITTER: tl.constexpr,
                  HAS_GRID: tl.constexpr):
    """Parameter, position and kept-flag of a block of slots of one ray."""
    in_window = slots < count
    if HAS_JITTER:
        u = tl.load(jitter_ptr + ray.to(tl.int64) * count + slots, mask=in_window, other=0.5)
    else:
        u = tl.full(slots.shape, 0.5, tl.float32)
    t = t0 + ((first + slots).to(tl.float32) + u) * step_t
    keep = in_window & (t < t1)
    x = tl.load(o_ptr + ray * 3 + 0) + t * tl.load(d_ptr + ray * 3 + 0)
    y = tl.load(o_ptr + ray * 3 + 1) + t * tl.load(d_ptr + ray * 3 + 1)
    z = tl.load(o_ptr + ray * 3 + 2) + t * tl.load(d_ptr + ray * 3 + 2)
    if HAS_GRID:
        i = _cell_coordinate(x, lo_x, size_x, resolution)
        j = _cell_coordinate(y, lo_y, size_y, resolution)
        k = _cell_coordinate(z, lo_z, size_z, resolution)
        cell = (i * resolution + j) * resolution + k
        keep = keep & (tl.load(occupied_ptr + cell, mask=keep, other=0) != 0)
    return t, x, y, z, keep


@triton.jit
def _march_count(o_ptr, d_ptr, t0_ptr, t1_ptr, step_ptr, jitter_ptr, occupied_ptr, counts_ptr, first, count,
                 lo_x, lo_y, lo_z, size_x, size_y, size_z, resolution, HAS_JITTER: tl.constexpr,
                 HAS_GRID: tl.constexpr, BLOCK: tl.constexpr):
    ray = tl.program_id(0)
    t0 = tl.load(t0_ptr + ray)
    t1 = tl.load(t1_ptr + ray)
    step_t = tl.load(step_ptr + ray)
    kept = tl.zeros([], dtype=tl.int32)
    for block in range(0, tl.cdiv(count, BLOCK)):
        slots = block * BLOCK + tl.arange(0, BLOCK)
        _, _, _, _, keep = _slot_samples(o_ptr, d_ptr, ray, t0, t1, step_t, jitter_ptr, slots, first, count, lo_x,
                                         lo_y, lo_z, size_x, size_y, size_z, occupied_ptr, resolution, HAS_JITTER,
                                         HAS_GRID)
        kept += tl.sum(keep.to(tl.int32), axis=0)
    tl.store(counts_ptr + ray, kept)


@triton.jit
def _march_write(o_ptr, d_ptr, t0_ptr, t1_ptr, step_ptr, jitter_ptr, occupied_ptr, start_ptr, ray_ids_ptr, slots_ptr,
                 t_ptr, positions_ptr, first, count, lo_x, lo_y, lo_z, size_x, size_y, size_z, resolution,
                 HAS_JITTER: tl.constexpr, HAS_GRID: tl.constexpr, BLOCK: tl.constexpr):
    ray = tl.program_id(0)
    t0 = tl.load(t0_ptr + ray)
    t1 = tl.load(t1_ptr + ray)
    step_t = tl.load(step_ptr + ray)
    at = tl.load(start_ptr + ray)
    for block in range(0, tl.cdiv(count, BLOCK)):
        slots = block * BLOCK + tl.arange(0, BLOCK)
        t, x, y, z, keep = _slot_samples(o_ptr, d_ptr, ray, t0, t1, step_t, jitter_ptr, slots, first, count, lo_x,
                                         lo_y, lo_z, size_x, size_y, size_z, occupied_ptr, resolution, HAS_JITTER,
                                         HAS_GRID)
        flag = keep.to(tl.int64)
        where = at + tl.cumsum(flag, axis=0) - 1
        tl.store(ray_ids_ptr + where, ray.to(tl.int64), mask=keep)
        tl.store(slots_ptr + where, (first + slots).to(tl.int64), mask=keep)
        tl.store(t_ptr + where, t, mask=keep)
        tl.store(positions_ptr + where * 3 + 0, x, mask=keep)
        tl.store(positions_ptr + where * 3 + 1, y, mask=keep)
        tl.store(positions_ptr + where * 3 + 2, z, mask=keep)
        at += tl.sum(flag, axis=0)


def march_packed(origins: Tensor, directions: Tensor, t0: Tensor, t1: Tensor, step_t: Tensor, first: int, count: int,
                 jitter: Tensor | None, occupied: Tensor | None, aabb: Tensor, resolution: int
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Kept samples of slots ``first .. first + count - 1`` of every ray, packed ray by ray.

    Args:
        origins, directions: the rays.  # [R, 3] each
        t0, t1, step_t: each ray's entry and exit parameter and parameter step.  # [R] each
        first, count: the window of slots.
        jitter: offset of each slot within its step, in [0, 1) (None: 0.5, the step's middle).  # [R, count]
        occupied: the occupancy grid's cells, flat in (i, j, k) order (None: keep every slot).  # [res^3] bool
        aabb: the grid's bounds.  # [2, 3]
        resolution: cells per side of the grid.
    Returns:
        ``(ray_ids, slots, t, positions)`` of the kept samples.  # [M] long, [M] long, [M], [M, 3]
    """
    device = origins.device
    r = origins.shape[0]
    f32 = dict(dtype=torch.float32)
    origins, directions = origins.to(**f32).contiguous(), directions.to(**f32).contiguous()
    t0, t1, step_t = (x.to(**f32).contiguous() for x in (t0, t1, step_t))
    has_jitter, has_grid = jitter is not None, occupied is not None
    jitter = jitter.to(**f32).contiguous() if has_jitter else t0
    grid = occupied.to(torch.int8).contiguous() if has_grid else t0
    lo = [float(v) for v in aabb[0].tolist()]
    size = [float(v) for v in (aabb[1] - aabb[0]).tolist()]
    counts = torch.zeros(r, dtype=torch.int64, device=device)
    args = (first, count, *lo, *size, resolution)
    flags = dict(HAS_JITTER=has_jitter, HAS_GRID=has_grid, BLOCK=BLOCK, enable_fp_fusion=False)
    if r and count > 0:
        _march_count[(r,)](origins, directions, t0, t1, step_t, jitter, grid, counts, *args, **flags)
    ends = torch.cumsum(counts, 0)
    m = int(ends[-1]) if r else 0
    ray_ids = torch.empty(m, dtype=torch.int64, device=device)
    slots = torch.empty(m, dtype=torch.int64, device=device)
    t = torch.empty(m, dtype=torch.float32, device=device)
    positions = torch.empty(m, 3, dtype=torch.float32, device=device)
    if m:
        _march_write[(r,)](origins, directions, t0, t1, step_t, jitter, grid, ends - counts, ray_ids, slots, t,
                           positions, *args, **flags)
    return ray_ids, slots, t, positions
