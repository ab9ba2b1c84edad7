"""Weighted row gathers: the interpolation primitive of grid encodings (hash grids, TensoRF).

``weighted_rows(table, rows, weights)[m] = sum_k weights[m, k] * table[rows[m, k]]`` is a
trilinear (8 rows) or bilinear (4) or linear (2) lookup once the caller has computed the
corner rows and weights. The forward pass is ``embedding_bag``; the backward pass scatters
into the table with ``bincount`` for narrow tables (a hash grid's 1-8 features), which is
several times faster on CPU than ``index_add`` there. Wide tables (TensoRF's lines and planes)
take the transposed interpolation matrix as a sparse product on CPU (2-4x faster than
``index_add`` of the weighted rows: 66 against 278 ms for 300k points into 768 rows of 288
channels on 2 cores) and ``index_add`` elsewhere. Gradients flow to ``table`` only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NARROW = 8


class _WeightedRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(rows, weights)
        ctx.table_shape = table.shape
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        rows, weights = ctx.saved_tensors
        total, channels = ctx.table_shape
        flat_rows = rows.reshape(-1)
        if channels <= NARROW:
            # bincount sums in fp32 at least (and takes no fp16 weights on CUDA). Each column is
            # written into one preallocated table: stacking the columns made one more table-sized
            # tensor and copy (tensorf-cp -> hashgrid at 2^19 entries: 6-20% more steps without).
            summed = torch.promote_types(grad.dtype, torch.float32)
            table_grad = torch.empty(total, channels, dtype=summed, device=grad.device)
            for c in range(channels):
                table_grad[:, c] = torch.bincount(flat_rows, weights=(weights * grad[:, c:c + 1]).reshape(-1).to(summed),
                                                  minlength=total)
            return table_grad.to(grad.dtype), None, None
        if grad.device.type == "cpu" and grad.dtype in (torch.float32, torch.float64):
            points = torch.arange(rows.shape[0], device=rows.device).repeat_interleave(rows.shape[1])
            spread = torch.sparse_coo_tensor(torch.stack([flat_rows.long(), points]), weights.reshape(-1).to(grad.dtype),
                                             (total, rows.shape[0]), check_invariants=False)
            return torch.sparse.mm(spread, grad), None, None
        vals = (weights[..., None] * grad[:, None, :]).reshape(-1, channels)
        return grad.new_zeros(total, channels).index_add_(0, flat_rows.long(), vals), None, None


def weighted_rows(table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
    """Weighted sums of table rows.

    Args:
        table: the rows to interpolate.  # [T, C]
        rows: row indices per output (int32 or int64).  # [M, K]
        weights: weight of each row.  # [M, K]
    Returns:
        ``sum_k weights[:, k, None] * table[rows[:, k]]``.  # [M, C]
    """
    return _WeightedRows.apply(table, rows, weights.to(table.dtype))


def linear_corners(coord: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Lower grid index and fraction of coordinates in [0, 1] on a grid of ``resolution``
    nodes with the end nodes on 0 and 1 (``align_corners=True``).  # [...] long, [...] float"""
    pos = coord.clamp(0.0, 1.0) * (resolution - 1)
    low = pos.floor().clamp(max=resolution - 2)
    return low.long(), pos - low
