"""Rasterising 3D Gaussians: the plain-PyTorch reference (any device) and gsplat on CUDA.

The reference follows 3D Gaussian Splatting (Kerbl et al. 2023) and gsplat's conventions, so
the two backends agree on every pixel:

* projection: camera-space mean, EWA 2D covariance ``J W Sigma W^T J^T`` (the camera-space
  position clamped to 1.3x the field of view for the Jacobian) plus ``eps2d`` on the diagonal,
  radius ``ceil(3 sqrt(lambda_max))``; Gaussians closer than ``near`` are dropped;
* colour: given per Gaussian (the caller evaluates its view-dependent colour; 3DGS uses
  ``max(SH(normalize(mean - camera centre)) . coeffs + 0.5, 0)``);
* compositing, front to back in depth order, per tile, pixel centres at ``+0.5``:
  ``alpha = min(0.99, opacity exp(-power))``, skipped when ``power < 0`` or ``alpha < 1/255``;
  a pixel stops *before* the Gaussian that would bring its transmittance to ``1e-4`` or below.

A Gaussian is composited into the tiles its screen box overlaps; outside that box its alpha is
below 1/255 by construction, so the tile size changes nothing in the image, only the work: on
a CPU small tiles (4x4) are 2-4x faster than gsplat's 16x16, which suit a GPU's thread blocks.
The compositing runs on blocks of tiles with similar Gaussian counts, and along each tile's
depth-sorted list in blocks of ``depth_block`` Gaussians, carrying the transmittance, so that
memory stays bounded and a block of tiles stops once every pixel in it is saturated. The
compositing has a hand-written backward (``_CompositeGroup``: autograd through the
``[tiles, pixels, depth block]`` tensors took as long as the forward); projection and the rest
go through autograd. The returned ``means2d`` keeps its gradient for densification.

Cameras use radistill's convention (OpenGL axes: looks down -z, +y up).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from radistill.errors import BackendError

TILE = 4  # the reference's tile side; any size gives the same image (gsplat's CUDA uses 16)
ALPHA_MAX = 0.999  # gsplat 1.4-1.5 (the 3DGS paper code uses 0.99)
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
Backend = Literal["auto", "torch", "gsplat"]


@dataclass
class Camera:
    """One pinhole camera as the rasteriser needs it (OpenGL camera-to-world)."""

    c2w: Tensor  # [4, 4]
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_cameras(cls, cameras, index: int) -> "Camera":
        return cls(cameras.c2w[index], float(cameras.fx[index]), float(cameras.fy[index]), float(cameras.cx[index]),
                   float(cameras.cy[index]), int(cameras.width), int(cameras.height))

    def viewmat(self) -> Tensor:
        """World-to-camera matrix in OpenCV axes (x right, y down, z forward).  # [4, 4]"""
        w2c = torch.linalg.inv(self.c2w.float())
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=w2c.device))
        return flip @ w2c

    def intrinsics(self) -> Tensor:  # [3, 3]
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            device=self.c2w.device)


@dataclass
class SplatImage:
    """A rasterised image."""

    rgb: Tensor  # [H, W, 3] composited on the background
    opacity: Tensor  # [H, W] accumulated alpha
    depth: Tensor  # [H, W] alpha-weighted camera-space depth (not normalised by opacity)
    means2d: Tensor  # [N, 2] projected centres ([1, N, 2] from gsplat); its .grad after backward drives densification
    radii: Tensor  # [N, 2] pixel half-extent in x and y, 0 for Gaussians not drawn


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices of wxyz quaternions (normalised here).  # [N, 3, 3]"""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(-1, 3, 3)


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances ``R S S R^T`` from wxyz quaternions and (activated) scales.  # [N, 3, 3]"""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


@dataclass
class Projected:
    means2d: Tensor  # [N, 2]
    conics: Tensor  # [N, 3] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z
    radii: Tensor  # [N, 2] long pixel half-extent in x and y, 0 when culled


def project(means: Tensor, covs: Tensor, camera: Camera, opacities: Tensor | None = None, near: float = 0.01,
            eps2d: float = 0.3) -> Projected:
    """Project Gaussians into ``camera`` (EWA splatting, gsplat's conventions); with ``opacities``
    the screen-space box shrinks to where alpha stays above 1/255, as in gsplat."""
    view = camera.viewmat().to(means)
    p = means @ view[:3, :3].T + view[:3, 3]  # [N, 3] OpenCV camera space
    z = p[:, 2]
    valid = z > near
    zs = torch.where(valid, z, torch.ones_like(z))
    tan_x, tan_y = 0.5 * camera.width / camera.fx, 0.5 * camera.height / camera.fy
    lim_x_pos, lim_x_neg = (camera.width - camera.cx) / camera.fx + 0.3 * tan_x, camera.cx / camera.fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (camera.height - camera.cy) / camera.fy + 0.3 * tan_y, camera.cy / camera.fy + 0.3 * tan_y
    tx = zs * (p[:, 0] / zs).clamp(-lim_x_neg, lim_x_pos)
    ty = zs * (p[:, 1] / zs).clamp(-lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(zs)
    jac = torch.stack([camera.fx / zs, zero, -camera.fx * tx / zs**2,
                       zero, camera.fy / zs, -camera.fy * ty / zs**2], -1).reshape(-1, 2, 3)
    m = jac @ view[:3, :3]  # [N, 2, 3]
    cov2d = m @ covs @ m.transpose(1, 2)  # [N, 2, 2]
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = torch.stack([camera.fx * p[:, 0] / zs + camera.cx, camera.fy * p[:, 1] / zs + camera.cy], -1)
    with torch.no_grad():  # gsplat 1.5: an axis-aligned box out to where alpha falls to 1/255 (at most 3.33 sigma)
        extent = torch.full_like(a, 3.33)
        if opacities is not None:
            extent = torch.sqrt(2 * torch.log((opacities.detach() / ALPHA_MIN).clamp_min(1.0))).clamp(max=3.33)
            valid = valid & (opacities.detach() >= ALPHA_MIN)
        radii = torch.ceil(extent[:, None] * torch.stack([a, c], -1).clamp_min(0).sqrt()).long()  # [N, 2]
        off = ((means2d[:, 0] + radii[:, 0] <= 0) | (means2d[:, 0] - radii[:, 0] >= camera.width)
               | (means2d[:, 1] + radii[:, 1] <= 0) | (means2d[:, 1] - radii[:, 1] >= camera.height))
        drawn = valid & ~off & (radii > 0).any(-1)
        radii = torch.where(drawn[:, None], radii, torch.zeros_like(radii))
    return Projected(means2d, conics, z, radii)


def tile_pairs(proj: Projected, width: int, height: int, tile: int = TILE) -> tuple[Tensor, Tensor, Tensor]:
    """The (tile, Gaussian) pairs sorted by tile then depth.

    Returns:
        tile id of each pair, Gaussian index of each pair (both [P]), and the start of each
        tile's run in them ([n_tiles + 1]).
    """
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    n_tiles = tiles_x * tiles_y
    device = proj.radii.device
    drawn = torch.nonzero((proj.radii > 0).any(-1)).squeeze(1)
    mx, my = proj.means2d[drawn, 0].detach(), proj.means2d[drawn, 1].detach()
    rx, ry = proj.radii[drawn, 0].to(mx.dtype), proj.radii[drawn, 1].to(mx.dtype)
    x0 = torch.floor((mx - rx) / tile).clamp(0, tiles_x).long()
    x1 = torch.ceil((mx + rx) / tile).clamp(0, tiles_x).long()
    y0 = torch.floor((my - ry) / tile).clamp(0, tiles_y).long()
    y1 = torch.ceil((my + ry) / tile).clamp(0, tiles_y).long()
    wx, wy = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    counts = wx * wy
    owner = torch.repeat_interleave(torch.arange(drawn.numel(), device=device), counts)  # [P]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=device) - first[owner]
    tx = x0[owner] + local % wx[owner].clamp_min(1)
    ty = y0[owner] + local // wx[owner].clamp_min(1)
    tile_id = ty * tiles_x + tx
    gauss = drawn[owner]
    depth_rank = torch.empty_like(proj.depths, dtype=torch.long)
    depth_rank[torch.argsort(proj.depths.detach(), stable=True)] = torch.arange(proj.depths.numel(), device=device)
    order = torch.argsort(tile_id * proj.depths.numel() + depth_rank[gauss])
    tile_id, gauss = tile_id[order], gauss[order]
    starts = torch.zeros(n_tiles + 1, dtype=torch.long, device=device)
    starts[1:] = torch.cumsum(torch.bincount(tile_id, minlength=n_tiles), 0)
    return tile_id, gauss, starts


def composite_tiles(proj: Projected, colors: Tensor, opacities: Tensor, width: int, height: int,
                    depth_block: int = 128, max_elements: int = 1 << 23, tile: int = TILE) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back alpha compositing of every tile.

    Args:
        proj: projected Gaussians.
        colors: per-Gaussian colour.  # [N, 3]
        opacities: per-Gaussian opacity in [0, 1].  # [N]
        depth_block: Gaussians per tile processed at a time along the depth order.
        max_elements: bound on ``tiles x pixels x depth_block`` of one block (memory).
    Returns:
        colour (without background) [H, W, 3], opacity [H, W], weighted depth [H, W].
    """
    device = colors.device
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    n_tiles = tiles_x * tiles_y
    _, gauss, starts = tile_pairs(proj, width, height, tile)
    counts = starts[1:] - starts[:-1]
    out_rgb = colors.new_zeros(n_tiles, tile * tile, 3)
    out_alpha = colors.new_zeros(n_tiles, tile * tile)
    out_depth = colors.new_zeros(n_tiles, tile * tile)
    busy = torch.nonzero(counts > 0).squeeze(1)
    if busy.numel() == 0:
        return _untile(out_rgb, width, height, tile), _untile(out_alpha, width, height, tile), _untile(out_depth, width, height, tile)
    busy = busy[torch.argsort(counts[busy], descending=True)]
    local = torch.arange(tile * tile, device=device)
    group = max(1, max_elements // (tile * tile * depth_block))
    rgb_parts, alpha_parts, depth_parts, tile_parts = [], [], [], []
    for g0 in range(0, busy.numel(), group):
        tiles = busy[g0:g0 + group]  # [Tg]
        rgb, transmittance, depth = _CompositeGroup.apply(
            proj.means2d, proj.conics, opacities, colors, proj.depths, gauss, starts[tiles], counts[tiles],
            ((tiles % tiles_x)[:, None] * tile + local % tile + 0.5).to(colors.dtype),
            ((tiles // tiles_x)[:, None] * tile + local // tile + 0.5).to(colors.dtype), depth_block)
        rgb_parts.append(rgb)
        alpha_parts.append(1 - transmittance)
        depth_parts.append(depth)
        tile_parts.append(tiles)
    tiles = torch.cat(tile_parts)
    out_rgb = out_rgb.index_copy(0, tiles, torch.cat(rgb_parts))
    out_alpha = out_alpha.index_copy(0, tiles, torch.cat(alpha_parts))
    out_depth = out_depth.index_copy(0, tiles, torch.cat(depth_parts))
    return _untile(out_rgb, width, height, tile), _untile(out_alpha, width, height, tile), _untile(out_depth, width, height, tile)


class _CompositeGroup(torch.autograd.Function):
    """Front-to-back compositing of a group of tiles, block by block along their depth-sorted
    lists (a tile leaves the loop when its list ends or all its pixels are saturated), with a
    hand-written backward.

    The forward keeps only each block's alphas; the backward walks the blocks back to front,
    rebuilding transmittances from them, with the usual gradient of alpha compositing: for
    weights ``w_b = alpha_b T_b`` and ``T_b = t_in prod_{j<b} (1 - alpha_j)``,
    ``dL/dalpha_b = e_b T_b - (sum_{j>b} e_j w_j + g_out t_out) / (1 - alpha_b)`` where ``e_b``
    is the upstream gradient of the weight (colour and depth) and ``g_out`` that of the
    transmittance leaving the block. It gives autograd's gradients (``tests/test_splat.py``
    checks both against a brute-force oracle) at a fraction of the memory traffic.

    Inputs: ``means2d`` [N, 2], ``conics`` [N, 3], ``opacities`` [N], ``colors`` [N, 3],
    ``depths`` [N] (differentiable); ``gauss`` [P] (Gaussian of every sorted tile pair),
    ``start``/``count`` [Tg] (each tile's run in it), pixel centres ``px``/``py`` [Tg, tile * tile],
    ``depth_block``. Outputs: colour [Tg, P, 3], final transmittance [Tg, P], weighted depth [Tg, P].
    """

    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, depths: Tensor,
                gauss: Tensor, start: Tensor, count: Tensor, px: Tensor, py: Tensor,
                depth_block: int) -> tuple[Tensor, Tensor, Tensor]:
        n, p = px.shape
        device = px.device
        transmittance = colors.new_ones(n, p)
        rgb = colors.new_zeros(n, p, 3)
        depth = colors.new_zeros(n, p)
        done = torch.zeros(n, p, dtype=torch.bool, device=device)
        active = torch.arange(n, device=device)
        blocks = []
        keep_blocks = any(ctx.needs_input_grad[:5])  # nothing to keep for a render without gradients
        k0 = 0
        while active.numel():
            k = k0 + torch.arange(depth_block, device=device)  # [B]
            present = k[None, :] < count[active][:, None]  # [A, B]
            idx = gauss[(start[active][:, None] + k[None, :]).clamp(max=gauss.numel() - 1)]  # [A, B]
            dx, dy = _offsets(means2d, px[active], py[active], idx)  # [A, P, B]
            con = conics[idx]  # [A, B, 3]
            power = dx * (0.5 * con[:, None, :, 0] * dx + con[:, None, :, 1] * dy) + 0.5 * con[:, None, :, 2] * dy * dy
            alpha = torch.exp(torch.log(opacities[idx].clamp_min(1e-30))[:, None, :] - power).clamp_(max=ALPHA_MAX)
            keep = present[:, None, :] & (power >= 0) & (alpha >= ALPHA_MIN) & ~done[active][:, :, None]
            alpha = alpha.masked_fill_(~keep, 0.0)
            t_in = transmittance[active]
            cum = torch.cumprod(1 - alpha, -1)
            # stop before the Gaussian that would take the transmittance to T_MIN or below (and every
            # one after it: the product only falls), which is rare enough to redo the product then
            stopped = (t_in[:, :, None] * cum) <= T_MIN
            if bool(stopped.any()):
                alpha = alpha.masked_fill_(stopped, 0.0)
                cum = torch.cumprod(1 - alpha, -1)
            w = alpha * (t_in[:, :, None] * _exclusive(cum))
            rgb[active] += torch.einsum("apb,abc->apc", w, colors[idx])
            depth[active] += (w * depths[idx][:, None, :]).sum(-1)
            transmittance[active] = t_in * cum[:, :, -1]
            done[active] = done[active] | stopped[:, :, -1] | (transmittance[active] <= T_MIN)
            if keep_blocks:
                blocks.append((active, idx, alpha, t_in))
            k0 += depth_block
            still = (count[active] > k0) & ~done[active].all(-1)
            active = active[still]
        ctx.blocks = blocks
        ctx.save_for_backward(means2d, conics, opacities, colors, depths, px, py)
        return rgb, transmittance, depth

    @staticmethod
    def backward(ctx, g_rgb: Tensor | None, g_transmittance: Tensor | None, g_depth: Tensor | None):
        means2d, conics, opacities, colors, depths, px, py = ctx.saved_tensors
        n, p = px.shape
        g_rgb = colors.new_zeros(n, p, 3) if g_rgb is None else g_rgb
        g_depth = colors.new_zeros(n, p) if g_depth is None else g_depth
        # gradient w.r.t. each tile's transmittance where the next block (backwards: the last seen) took it over
        g_t = colors.new_zeros(n, p) if g_transmittance is None else g_transmittance.clone()
        g_means2d, g_conics = torch.zeros_like(means2d), torch.zeros_like(conics)
        g_opacities, g_colors, g_depths = torch.zeros_like(opacities), torch.zeros_like(colors), torch.zeros_like(depths)
        for active, idx, alpha, t_in in reversed(ctx.blocks):
            flat = idx.reshape(-1)
            cum = torch.cumprod(1 - alpha, -1)
            before = _exclusive(cum)  # transmittance before each Gaussian, over t_in
            t = t_in[:, :, None] * before
            w = alpha * t
            gr, gd = g_rgb[active], g_depth[active]  # [A, P, 3], [A, P]
            e = torch.einsum("apc,abc->apb", gr, colors[idx]) + gd[:, :, None] * depths[idx][:, None, :]
            g_colors.index_add_(0, flat, torch.einsum("apb,apc->abc", w, gr).reshape(-1, 3))
            g_depths.index_add_(0, flat, (w * gd[:, :, None]).sum(1).reshape(-1))
            ew = e * w
            total = ew.sum(-1)  # [A, P]
            behind = total[:, :, None] - torch.cumsum(ew, -1)  # sum over the Gaussians behind each
            g_out = g_t[active]
            t_out = t_in * cum[:, :, -1]
            g_alpha = e * t - (behind + (g_out * t_out)[:, :, None]) / (1 - alpha)
            g_t[active] = total / t_in + g_out * cum[:, :, -1]  # t_in > T_MIN wherever ew is not 0
            # alpha = opacity exp(-power) where it was composited unclamped: d alpha = alpha (d opacity / opacity - d power)
            g_log_alpha = (g_alpha * alpha).masked_fill_(alpha >= ALPHA_MAX, 0.0)  # [A, P, B]; 0 where alpha is 0
            g_opacities.index_add_(0, flat, (g_log_alpha.sum(1) / opacities[idx].clamp_min(ALPHA_MIN)).reshape(-1))
            dx, dy = _offsets(means2d, px[active], py[active], idx)
            con = conics[idx]  # [A, B, 3]
            g_power = -g_log_alpha
            gx, gy = g_power * dx, g_power * dy
            g_conics.index_add_(0, flat, torch.stack([0.5 * (gx * dx).sum(1), (gx * dy).sum(1),
                                                      0.5 * (gy * dy).sum(1)], -1).reshape(-1, 3))
            sx, sy = gx.sum(1), gy.sum(1)  # [A, B]: d power / d mean = -(a dx + b dy, b dx + c dy)
            g_means2d.index_add_(0, flat, -torch.stack([con[..., 0] * sx + con[..., 1] * sy,
                                                        con[..., 1] * sx + con[..., 2] * sy], -1).reshape(-1, 2))
        ctx.blocks = None
        return g_means2d, g_conics, g_opacities, g_colors, g_depths, None, None, None, None, None, None


def _offsets(means2d: Tensor, px: Tensor, py: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel centres minus the centres of Gaussians ``idx`` [A, B], for pixels [A, P].  # [A, P, B] x 2"""
    return px[:, :, None] - means2d[idx, 0][:, None, :], py[:, :, None] - means2d[idx, 1][:, None, :]


def _exclusive(cum: Tensor) -> Tensor:
    """An inclusive cumulative product along the last axis made exclusive (1 first).  # same shape"""
    return torch.cat([torch.ones_like(cum[..., :1]), cum[..., :-1]], -1)


def _untile(x: Tensor, width: int, height: int, tile: int = TILE) -> Tensor:
    """[n_tiles, tile * tile, ...] tiles back to an image [H, W, ...]."""
    tiles_x, tiles_y = (width + tile - 1) // tile, (height + tile - 1) // tile
    rest = x.shape[2:]
    img = x.reshape(tiles_y, tiles_x, tile, tile, *rest).transpose(1, 2).reshape(tiles_y * tile, tiles_x * tile, *rest)
    return img[:height, :width]


def rasterize_torch(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
                    background: Tensor | None = None, near: float = 0.01, eps2d: float = 0.3) -> SplatImage:
    """The reference rasteriser (plain PyTorch, differentiable, any device).

    Args:
        means: centres.  # [N, 3]
        quats: wxyz rotations (any norm).  # [N, 4]
        scales: activated standard deviations along the local axes.  # [N, 3]
        opacities: activated opacities in [0, 1].  # [N]
        colors: colour of each Gaussian as seen from this camera.  # [N, 3]
        camera: the view.
        background: colour behind the Gaussians.  # [3]
    """
    proj = project(means, covariances(quats, scales), camera, opacities, near, eps2d)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    rgb, alpha, depth = composite_tiles(proj, colors, opacities, camera.width, camera.height)
    if background is not None:
        rgb = rgb + (1 - alpha)[..., None] * background.to(rgb)
    return SplatImage(rgb, alpha, depth, proj.means2d, proj.radii)


_GSPLAT_OK: bool | None = None


def gsplat_available() -> bool:
    """Whether gsplat can rasterise here: CUDA present, gsplat importable and its kernels built
    (the first call builds them; a failed build makes ``auto`` fall back to the reference)."""
    global _GSPLAT_OK
    if _GSPLAT_OK is None:
        _GSPLAT_OK = False
        if torch.cuda.is_available():
            try:
                from gsplat.cuda._backend import _C

                _GSPLAT_OK = _C is not None
            except Exception as exc:  # an import or build failure: use the reference rasteriser
                warnings.warn(f"gsplat is not usable here ({exc}); using the PyTorch rasteriser", stacklevel=2)
    return _GSPLAT_OK


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
                     background: Tensor | None = None, near: float = 0.01, eps2d: float = 0.3) -> SplatImage:
    """The same image through gsplat's CUDA rasteriser (tensors must be on a CUDA device)."""
    try:
        from gsplat import rasterization
    except ImportError as exc:
        raise BackendError(f"the gsplat backend needs the gsplat package (pip install gsplat): {exc}") from None
    if means.device.type != "cuda":
        raise BackendError(f"the gsplat backend needs CUDA tensors, got {means.device}")
    bg = None if background is None else background.to(means).reshape(1, 3)
    colors, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, camera.viewmat().to(means)[None], camera.intrinsics().to(means)[None],
        camera.width, camera.height, near_plane=near, eps2d=eps2d, sh_degree=None, backgrounds=bg,
        render_mode="RGB+D", packed=False, rasterize_mode="classic")
    means2d = meta["means2d"]  # [1, N, 2]: the tensor the loss depends on, so its .grad is filled
    if means2d.requires_grad:
        means2d.retain_grad()
    alpha = alphas[0, ..., 0]
    depth = colors[0, ..., 3]
    radii = meta["radii"][0].long()
    if radii.ndim == 1:  # gsplat 1.4: one radius per Gaussian
        radii = radii[:, None].expand(-1, 2)
    return SplatImage(colors[0, ..., :3], alpha, depth, means2d, radii)


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, camera: Camera,
              background: Tensor | None = None, near: float = 0.01, eps2d: float = 0.3,
              backend: Backend = "auto") -> SplatImage:
    """Rasterise Gaussians into ``camera``: gsplat on CUDA when installed (``auto``), else the reference."""
    if backend not in ("auto", "torch", "gsplat"):
        raise BackendError(f"unknown rasteriser backend {backend!r}; expected auto, torch or gsplat")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.device.type == "cuda" and gsplat_available())
    fn = rasterize_gsplat if use_gsplat else rasterize_torch
    return fn(means, quats, scales, opacities, colors, camera, background, near, eps2d)
