"""Multiresolution hash encoding in Triton (forward, backward, autograd wrapper).

The reference is ``radistill.fields.hashgrid.hash_encode``; the layout and hash are
tiny-cuda-nn's (see ``radistill.fields.hashgrid`` for the rules), so a table trained with
either backend works with the other.

One program handles ``BLOCK`` points at one level (the forward grid is ``[blocks, levels]``,
as in tiny-cuda-nn). Tables may be fp32 or fp16; interpolation always accumulates in fp32 and
the output has the table's dtype. The backward pass adds each corner's share of the upstream
gradient into an fp32 gradient table with relaxed atomics (no ordering is needed between
them), then casts it to the table's dtype (fp16 atomics would lose small updates). Its
programs run blocks first, like the forward pass's (level-fastest, which spreads concurrent
atomics over every level, measured slower). Floating-point contraction is off so that grid positions round as the reference's
do (with it, a point a rounding error from a cell face lands in the neighbouring cell).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

# Launch settings: the fastest of the sweep in benchmarks/results/kernels_cuda.json on an H100
BLOCK = 128  # points per program
NUM_WARPS = 4
# the order of the backward programs: blocks first measured faster on an H100 than level-fastest
# (benchmarks/results/kernels_cuda.json: 11.3 ms against 14.2 ms at 2^22 points, fp16 table)
BACKWARD_LEVEL_FASTEST = False


@triton.jit
def _corner(gx, gy, gz, fx, fy, fz, corner: tl.constexpr, resolution, size, offset, dense):
    """Table row and trilinear weight of one cell corner (corner bits: dx dy dz)."""
    dx: tl.constexpr = (corner >> 2) & 1
    dy: tl.constexpr = (corner >> 1) & 1
    dz: tl.constexpr = corner & 1
    cx = gx + dx
    cy = gy + dy
    cz = gz + dz
    # dense levels: i + j r + k r^2, wrapped modulo the level size (a corner can sit one past the grid)
    dense_index = (cx + cy * resolution + cz * resolution * resolution) % size
    dense_index = tl.where(dense_index < 0, dense_index + size, dense_index)  # Python's modulo, as the reference's
    # hashed levels: tiny-cuda-nn's xor of prime products in uint32; the size is a power of two
    hashed = cx.to(tl.uint32) ^ (cy.to(tl.uint32) * 2654435761) ^ (cz.to(tl.uint32) * 805459861)
    hashed_index = (hashed & (size - 1).to(tl.uint32)).to(tl.int32)
    row = tl.where(dense != 0, dense_index, hashed_index) + offset
    wx = fx if dx == 1 else 1.0 - fx
    wy = fy if dy == 1 else 1.0 - fy
    wz = fz if dz == 1 else 1.0 - fz
    return row, wx * wy * wz


@triton.jit
def _cell(u_ptr, points, mask, scale):
    """Integer cell and fraction of each point's grid position ``u * scale + 0.5``."""
    x = tl.load(u_ptr + points * 3 + 0, mask=mask, other=0.0)
    y = tl.load(u_ptr + points * 3 + 1, mask=mask, other=0.0)
    z = tl.load(u_ptr + points * 3 + 2, mask=mask, other=0.0)
    px = x * scale + 0.5
    py = y * scale + 0.5
    pz = z * scale + 0.5
    fx = tl.floor(px)
    fy = tl.floor(py)
    fz = tl.floor(pz)
    return fx.to(tl.int32), fy.to(tl.int32), fz.to(tl.int32), px - fx, py - fy, pz - fz


@triton.jit
def _level_cell(u_ptr, points, mask, level, scale_ptr, resolution_ptr, size_ptr, offset_ptr, dense_ptr):
    """One level's layout (resolution, size, offset, dense flag) and the points' cells in it."""
    gx, gy, gz, fx, fy, fz = _cell(u_ptr, points, mask, tl.load(scale_ptr + level))
    return (tl.load(resolution_ptr + level), tl.load(size_ptr + level), tl.load(offset_ptr + level),
            tl.load(dense_ptr + level), gx, gy, gz, fx, fy, fz)


@triton.jit
def _hash_encode_forward(u_ptr, table_ptr, out_ptr, scale_ptr, resolution_ptr, size_ptr, offset_ptr, dense_ptr,
                         n, levels, F: tl.constexpr, BLOCK: tl.constexpr):
    level = tl.program_id(1)
    points = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = points < n
    resolution, size, offset, dense, gx, gy, gz, fx, fy, fz = _level_cell(
        u_ptr, points, mask, level, scale_ptr, resolution_ptr, size_ptr, offset_ptr, dense_ptr)
    features = tl.arange(0, F)
    acc = tl.zeros([BLOCK, F], dtype=tl.float32)
    for corner in tl.static_range(8):
        row, w = _corner(gx, gy, gz, fx, fy, fz, corner, resolution, size, offset, dense)
        vals = tl.load(table_ptr + row[:, None].to(tl.int64) * F + features[None, :], mask=mask[:, None], other=0.0)
        acc += w[:, None] * vals.to(tl.float32)
    out = out_ptr + points[:, None].to(tl.int64) * (levels * F) + level * F + features[None, :]
    tl.store(out, acc, mask=mask[:, None])


@triton.jit
def _hash_encode_backward(u_ptr, grad_out_ptr, grad_table_ptr, scale_ptr, resolution_ptr, size_ptr, offset_ptr,
                          dense_ptr, n, levels, F: tl.constexpr, BLOCK: tl.constexpr, LEVEL_FASTEST: tl.constexpr):
    if LEVEL_FASTEST:  # programs running together spread their atomics over every level's rows
        level = tl.program_id(0) % levels
        block = tl.program_id(0) // levels
    else:  # programs running together work on one level (as the forward pass does)
        level = tl.program_id(1)
        block = tl.program_id(0)
    points = block * BLOCK + tl.arange(0, BLOCK)
    mask = points < n
    resolution, size, offset, dense, gx, gy, gz, fx, fy, fz = _level_cell(
        u_ptr, points, mask, level, scale_ptr, resolution_ptr, size_ptr, offset_ptr, dense_ptr)
    features = tl.arange(0, F)
    grad = tl.load(grad_out_ptr + points[:, None].to(tl.int64) * (levels * F) + level * F + features[None, :],
                   mask=mask[:, None], other=0.0).to(tl.float32)
    for corner in tl.static_range(8):
        row, w = _corner(gx, gy, gz, fx, fy, fz, corner, resolution, size, offset, dense)
        tl.atomic_add(grad_table_ptr + row[:, None].to(tl.int64) * F + features[None, :], w[:, None] * grad,
                      mask=mask[:, None], sem="relaxed")


def _layout_args(layout: dict[str, Tensor], device: torch.device) -> tuple[Tensor, ...]:
    return (layout["scale"].to(device=device, dtype=torch.float32).contiguous(),
            *(layout[k].to(device=device, dtype=torch.int32).contiguous() for k in ("resolution", "size", "offset", "dense")))


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, table: Tensor, *layout: Tensor) -> Tensor:
        n, levels, features = u.shape[0], layout[0].shape[0], table.shape[1]
        out = torch.empty(n, levels * features, dtype=table.dtype, device=u.device)
        if n:
            _hash_encode_forward[(triton.cdiv(n, BLOCK), levels)](u, table, out, *layout, n, levels, F=features,
                                                                 BLOCK=BLOCK, num_warps=NUM_WARPS,
                                                                 enable_fp_fusion=False)
        ctx.save_for_backward(u, *layout)
        ctx.table_shape, ctx.table_dtype = table.shape, table.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        u, *layout = ctx.saved_tensors
        n, levels = u.shape[0], layout[0].shape[0]
        grad_table = torch.zeros(ctx.table_shape, dtype=torch.float32, device=u.device)
        if n:
            blocks = triton.cdiv(n, BLOCK)
            grid = (blocks * levels,) if BACKWARD_LEVEL_FASTEST else (blocks, levels)
            _hash_encode_backward[grid](u, grad.contiguous(), grad_table, *layout, n, levels, F=ctx.table_shape[1],
                                        BLOCK=BLOCK, LEVEL_FASTEST=BACKWARD_LEVEL_FASTEST, num_warps=NUM_WARPS,
                                        enable_fp_fusion=False)
        return (None, grad_table.to(ctx.table_dtype), *([None] * len(layout)))


def hash_encode(u: Tensor, table: Tensor, layout: dict[str, Tensor]) -> Tensor:
    """Triton version of ``radistill.fields.hashgrid.hash_encode`` (same arguments and result).

    Args:
        u: normalised positions in [0, 1]^3.  # [N, 3]
        table: all levels' feature vectors (fp32 or fp16; 1, 2, 4 or 8 features).  # [sum(size), F]
        layout: per-level ``scale``, ``resolution``, ``size``, ``offset``, ``dense`` tensors.
    Returns:
        features, level-major per point, in the table's dtype.  # [N, L * F]
    """
    features = table.shape[1]
    if features not in (1, 2, 4, 8):
        raise ValueError(f"the Triton hash encoding takes 1, 2, 4 or 8 features per level, got {features}")
    u = u.detach().to(torch.float32).contiguous()
    return _HashEncode.apply(u, table.contiguous(), *_layout_args(layout, u.device))
