"""Front-to-back compositing of packed samples in Triton (forward, backward, autograd wrapper).

The reference is ``radistill.render.volume.composite``. Samples are packed: the samples of a
ray are contiguous and in marching order, rays may have any number of samples (including
none). A program handles ``RAYS`` rays and walks their samples ``CHUNK`` at a time: a chunk
of a ray is contiguous in memory (coalesced loads), and the optical depth before each sample
is the running total plus a prefix sum within the chunk.

With ``tau_i = sigma_i * delta_i`` and ``b_i`` the optical depth before sample ``i`` (the sum of
the earlier ``tau``, plus what the ray crossed before this window), the weight is
``w_i = exp(-b_i) * (1 - exp(-tau_i))`` unless ``exp(-b_i) <= early_stop``, where it is 0: the
reference's early-termination rule. Outputs per ray: colour ``sum w c``, depth ``sum w t``,
opacity ``sum w``, and the total optical depth; per sample: ``w``.

Backward, with ``g_i`` the upstream gradient reaching ``w_i`` (through colour, depth, opacity
and the weights themselves): ``dL/dtau_k = g_k m_k exp(-b_{k+1}) - sum_{i>k} g_i w_i + dL/dtotal``
(``m_k`` is the early-termination mask). ``sum_i g_i w_i`` comes from the ray's outputs
(``g_C . C + g_D D + g_O O``; only an upstream gradient on the weights themselves needs an extra
pass over the samples), and one pass walks the prefix chunk by chunk. Upstream gradients that
are absent (outputs the loss does not use) skip their terms and their loads.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

# Launch settings: the fastest of the sweep in benchmarks/results/kernels_cuda.json on an H100
# (2^18 rays x 64 samples, forward and backward: 1.07 ms here, 1.36 ms at 16 rays and 4 warps).
RAYS = 4  # rays per program
CHUNK = 64  # samples of each ray loaded at once
NUM_WARPS = 1


@triton.jit
def _chunk(sigma_ptr, delta_ptr, start, count, live, j0, CHUNK: tl.constexpr):
    """Indices, mask, optical depths and their running sums of one chunk of each ray's samples."""
    j = j0 + tl.arange(0, CHUNK)
    on = live[:, None] & (j[None, :] < count[:, None])  # [RAYS, CHUNK]
    s = start[:, None] + j[None, :]
    delta = tl.load(delta_ptr + s, mask=on, other=0.0)
    tau = tl.load(sigma_ptr + s, mask=on, other=0.0).to(tl.float32) * delta
    inclusive = tl.cumsum(tau, axis=1)
    return s, on, delta, tau, inclusive


@triton.jit
def _composite_forward(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, start_ptr, count_ptr, before_ptr,
                       weights_ptr, out_rgb_ptr, depth_ptr, opacity_ptr, total_ptr, n_rays, early_stop,
                       RAYS: tl.constexpr, CHUNK: tl.constexpr):
    rays = tl.program_id(0) * RAYS + tl.arange(0, RAYS)
    live = rays < n_rays
    start = tl.load(start_ptr + rays, mask=live, other=0).to(tl.int64)
    count = tl.load(count_ptr + rays, mask=live, other=0)
    optical = tl.load(before_ptr + rays, mask=live, other=0.0)
    r = tl.zeros([RAYS], dtype=tl.float32)
    g = tl.zeros([RAYS], dtype=tl.float32)
    b = tl.zeros([RAYS], dtype=tl.float32)
    depth = tl.zeros([RAYS], dtype=tl.float32)
    opacity = tl.zeros([RAYS], dtype=tl.float32)
    for j0 in range(0, tl.max(count, axis=0), CHUNK):
        s, on, delta, tau, inclusive = _chunk(sigma_ptr, delta_ptr, start, count, live, j0, CHUNK)
        transmittance = tl.exp(-(optical[:, None] + (inclusive - tau)))
        w = tl.where(on & (transmittance > early_stop), transmittance * (1.0 - tl.exp(-tau)), 0.0)
        tl.store(weights_ptr + s, w, mask=on)
        r += tl.sum(w * tl.load(rgb_ptr + s * 3 + 0, mask=on, other=0.0).to(tl.float32), axis=1)
        g += tl.sum(w * tl.load(rgb_ptr + s * 3 + 1, mask=on, other=0.0).to(tl.float32), axis=1)
        b += tl.sum(w * tl.load(rgb_ptr + s * 3 + 2, mask=on, other=0.0).to(tl.float32), axis=1)
        depth += tl.sum(w * tl.load(t_ptr + s, mask=on, other=0.0), axis=1)
        opacity += tl.sum(w, axis=1)
        optical += tl.sum(tau, axis=1)
    tl.store(out_rgb_ptr + rays * 3 + 0, r, mask=live)
    tl.store(out_rgb_ptr + rays * 3 + 1, g, mask=live)
    tl.store(out_rgb_ptr + rays * 3 + 2, b, mask=live)
    tl.store(depth_ptr + rays, depth, mask=live)
    tl.store(opacity_ptr + rays, opacity, mask=live)
    tl.store(total_ptr + rays, optical, mask=live)


@triton.jit
def _upstream(s, on, rgb_ptr, t_ptr, grad_weights_ptr, gr, gg, gb, gd, go, HAS_RGB: tl.constexpr,
              HAS_DEPTH: tl.constexpr, HAS_WEIGHTS: tl.constexpr):
    """The gradient reaching each sample's weight: through colour, depth, opacity and the weight
    (the terms whose upstream gradient is absent are skipped, with their loads)."""
    c = tl.zeros(s.shape, dtype=tl.float32) + go[:, None]
    if HAS_RGB:
        c += gr[:, None] * tl.load(rgb_ptr + s * 3 + 0, mask=on, other=0.0).to(tl.float32)
        c += gg[:, None] * tl.load(rgb_ptr + s * 3 + 1, mask=on, other=0.0).to(tl.float32)
        c += gb[:, None] * tl.load(rgb_ptr + s * 3 + 2, mask=on, other=0.0).to(tl.float32)
    if HAS_DEPTH:
        c += gd[:, None] * tl.load(t_ptr + s, mask=on, other=0.0)
    if HAS_WEIGHTS:
        c += tl.load(grad_weights_ptr + s, mask=on, other=0.0)
    return c


@triton.jit
def _composite_backward(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, start_ptr, count_ptr, before_ptr, weights_ptr,
                        out_rgb_ptr, depth_ptr, opacity_ptr, grad_rgb_ptr, grad_depth_ptr, grad_opacity_ptr,
                        grad_total_ptr, grad_weights_ptr, grad_sigma_ptr, grad_sample_rgb_ptr, n_rays, early_stop,
                        HAS_RGB: tl.constexpr, HAS_DEPTH: tl.constexpr, HAS_OPACITY: tl.constexpr,
                        HAS_TOTAL: tl.constexpr, HAS_WEIGHTS: tl.constexpr, RAYS: tl.constexpr, CHUNK: tl.constexpr):
    rays = tl.program_id(0) * RAYS + tl.arange(0, RAYS)
    live = rays < n_rays
    start = tl.load(start_ptr + rays, mask=live, other=0).to(tl.int64)
    count = tl.load(count_ptr + rays, mask=live, other=0)
    zero = tl.zeros([RAYS], dtype=tl.float32)
    gr, gg, gb, gd, go, gt = zero, zero, zero, zero, zero, zero
    # sum_i g_i w_i, from the ray's outputs: g C + g_depth D + g_opacity O (+ the weights' own term below)
    total = zero
    if HAS_RGB:
        gr = tl.load(grad_rgb_ptr + rays * 3 + 0, mask=live, other=0.0)
        gg = tl.load(grad_rgb_ptr + rays * 3 + 1, mask=live, other=0.0)
        gb = tl.load(grad_rgb_ptr + rays * 3 + 2, mask=live, other=0.0)
        total += gr * tl.load(out_rgb_ptr + rays * 3 + 0, mask=live, other=0.0)
        total += gg * tl.load(out_rgb_ptr + rays * 3 + 1, mask=live, other=0.0)
        total += gb * tl.load(out_rgb_ptr + rays * 3 + 2, mask=live, other=0.0)
    if HAS_DEPTH:
        gd = tl.load(grad_depth_ptr + rays, mask=live, other=0.0)
        total += gd * tl.load(depth_ptr + rays, mask=live, other=0.0)
    if HAS_OPACITY:
        go = tl.load(grad_opacity_ptr + rays, mask=live, other=0.0)
        total += go * tl.load(opacity_ptr + rays, mask=live, other=0.0)
    if HAS_TOTAL:
        gt = tl.load(grad_total_ptr + rays, mask=live, other=0.0)
    steps = tl.max(count, axis=0)
    if HAS_WEIGHTS:  # the weights' own upstream term needs a pass over the samples
        for j0 in range(0, steps, CHUNK):
            j = j0 + tl.arange(0, CHUNK)
            on = live[:, None] & (j[None, :] < count[:, None])
            s = start[:, None] + j[None, :]
            w = tl.load(weights_ptr + s, mask=on, other=0.0)
            total += tl.sum(w * tl.load(grad_weights_ptr + s, mask=on, other=0.0), axis=1)
    optical = tl.load(before_ptr + rays, mask=live, other=0.0)
    prefix = zero  # sum of g_i w_i over the earlier chunks
    for j0 in range(0, steps, CHUNK):
        s, on, delta, tau, inclusive = _chunk(sigma_ptr, delta_ptr, start, count, live, j0, CHUNK)
        w = tl.load(weights_ptr + s, mask=on, other=0.0)
        up = _upstream(s, on, rgb_ptr, t_ptr, grad_weights_ptr, gr, gg, gb, gd, go, HAS_RGB, HAS_DEPTH, HAS_WEIGHTS)
        gw = w * up
        later = total[:, None] - (prefix[:, None] + tl.cumsum(gw, axis=1))  # sum over i > k of g_i w_i
        # the forward pass's own expression, so that the early-termination mask is the same
        kept = tl.exp(-(optical[:, None] + (inclusive - tau))) > early_stop
        after = tl.exp(-(optical[:, None] + inclusive))
        grad_tau = tl.where(kept, up * after, 0.0) - later + gt[:, None]
        tl.store(grad_sigma_ptr + s, grad_tau * delta, mask=on)
        if HAS_RGB:
            tl.store(grad_sample_rgb_ptr + s * 3 + 0, w * gr[:, None], mask=on)
            tl.store(grad_sample_rgb_ptr + s * 3 + 1, w * gg[:, None], mask=on)
            tl.store(grad_sample_rgb_ptr + s * 3 + 2, w * gb[:, None], mask=on)
        prefix += tl.sum(gw, axis=1)
        optical += tl.sum(tau, axis=1)


def _f32(grad: Tensor | None, like: Tensor) -> Tensor:
    """An upstream gradient as contiguous fp32 (a placeholder pointer when it is absent)."""
    return like if grad is None else grad.to(torch.float32).contiguous()


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, sigma: Tensor, rgb: Tensor, deltas: Tensor, t: Tensor, start: Tensor, count: Tensor,
                before: Tensor, early_stop: float):
        r, m, device = start.shape[0], sigma.shape[0], sigma.device
        weights = torch.empty(m, dtype=torch.float32, device=device)
        out_rgb = torch.empty(r, 3, dtype=torch.float32, device=device)
        depth, opacity, total = (torch.empty(r, dtype=torch.float32, device=device) for _ in range(3))
        if r:
            _composite_forward[(triton.cdiv(r, RAYS),)](sigma, rgb, deltas, t, start, count, before, weights, out_rgb, depth,
                                                        opacity, total, r, early_stop, RAYS=RAYS, CHUNK=CHUNK,
                                                        num_warps=NUM_WARPS)
        ctx.save_for_backward(sigma, rgb, deltas, t, start, count, before, weights, out_rgb, depth, opacity)
        ctx.early_stop = early_stop
        ctx.set_materialize_grads(False)  # unused outputs arrive as None: their terms and loads are skipped
        return out_rgb, depth, opacity, weights, total

    @staticmethod
    def backward(ctx: Any, grad_rgb, grad_depth, grad_opacity, grad_weights, grad_total):
        sigma, rgb, deltas, t, start, count, before, weights, out_rgb, depth, opacity = ctx.saved_tensors
        r = start.shape[0]
        grad_sigma = torch.empty_like(sigma, dtype=torch.float32)
        grad_sample_rgb = torch.empty_like(rgb, dtype=torch.float32) if grad_rgb is not None else None
        if r:
            _composite_backward[(triton.cdiv(r, RAYS),)](
                sigma, rgb, deltas, t, start, count, before, weights, out_rgb, depth, opacity,
                _f32(grad_rgb, out_rgb), _f32(grad_depth, depth), _f32(grad_opacity, opacity), _f32(grad_total, before),
                _f32(grad_weights, weights), grad_sigma, grad_sigma if grad_sample_rgb is None else grad_sample_rgb,
                r, ctx.early_stop, HAS_RGB=grad_rgb is not None, HAS_DEPTH=grad_depth is not None,
                HAS_OPACITY=grad_opacity is not None, HAS_TOTAL=grad_total is not None,
                HAS_WEIGHTS=grad_weights is not None, RAYS=RAYS, CHUNK=CHUNK, num_warps=NUM_WARPS)
        elif grad_sample_rgb is not None:
            grad_sample_rgb.zero_()
        grad_rgb_out = None if grad_sample_rgb is None else grad_sample_rgb.to(rgb.dtype)
        return grad_sigma.to(sigma.dtype), grad_rgb_out, None, None, None, None, None, None


def ray_segments(ray_ids: Tensor, n_rays: int) -> tuple[Tensor, Tensor]:
    """First sample and sample count of each ray, for packed samples sorted by ray.  # [R] int32 each

    A binary search per ray: cheaper than counting millions of samples with atomics."""
    bounds = torch.searchsorted(ray_ids, torch.arange(n_rays + 1, device=ray_ids.device, dtype=ray_ids.dtype))
    return bounds[:-1].to(torch.int32), (bounds[1:] - bounds[:-1]).to(torch.int32)


def composite(sigma: Tensor, rgb: Tensor, deltas: Tensor, t: Tensor, ray_ids: Tensor, n_rays: int,
              early_stop: float = 1e-4, optical_depth_before: Tensor | None = None) -> tuple[Tensor, ...]:
    """Composite packed samples (sorted by ray, in marching order) with the Triton kernels.

    Args:
        sigma: density per sample.  # [M]
        rgb: colour per sample.  # [M, 3]
        deltas, t: step length and ray parameter per sample.  # [M] each
        ray_ids: ray of each sample, non-decreasing.  # [M]
        n_rays: number of rays.
        early_stop: samples whose transmittance before them is at most this get weight 0.
        optical_depth_before: optical depth each ray already crossed.  # [R]
    Returns:
        ``(rgb [R, 3], depth [R], opacity [R], weights [M], total optical depth [R])``; gradients
        flow to ``sigma`` and ``rgb`` from all five (not to ``optical_depth_before``, which comes
        from earlier windows of an inference pass).
    """
    device = sigma.device
    start, count = ray_segments(ray_ids, n_rays)
    before = (torch.zeros(n_rays, device=device) if optical_depth_before is None
              else optical_depth_before.detach().to(torch.float32).contiguous())
    return _Composite.apply(sigma.contiguous(), rgb.contiguous(), deltas.detach().to(torch.float32).contiguous(),
                            t.detach().to(torch.float32).contiguous(), start, count, before, float(early_stop))
