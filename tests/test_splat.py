"""The Gaussian rasteriser: values and gradients against a brute-force oracle, the compositing
rules, and parity with gsplat's CUDA rasteriser where CUDA and gsplat exist."""

from __future__ import annotations

import math

import pytest
import torch

from radistill.cameras import look_at
from radistill.render.splat import (ALPHA_MAX, ALPHA_MIN, T_MIN, Camera, composite_tiles, covariances, project,
                                    rasterize_torch)


def camera(width: int = 40, height: int = 30, focal: float = 40.0) -> Camera:
    c2w = look_at(torch.tensor([[0.3, -4.0, 0.5]]), torch.zeros(3))[0]
    return Camera(c2w, focal, focal * 1.1, width / 2 + 0.7, height / 2 - 0.4, width, height)


def random_gaussians(n: int, seed: int = 0, spread: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * spread
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.15 + 0.02
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    return means, quats, scales, opacities, colors


def brute_force(means, quats, scales, opacities, colors, cam: Camera, background):
    """Every pixel against every Gaussian in depth order, with the rasteriser's rules (no tiles)."""
    proj = project(means, covariances(quats, scales), cam, opacities)
    drawn = (proj.radii > 0).any(-1)
    order = torch.argsort(proj.depths.detach())
    order = order[drawn[order]]
    ys, xs = torch.meshgrid(torch.arange(cam.height) + 0.5, torch.arange(cam.width) + 0.5, indexing="ij")
    dx = xs.reshape(-1, 1) - proj.means2d[order, 0]  # [P, N]
    dy = ys.reshape(-1, 1) - proj.means2d[order, 1]
    a, b, c = proj.conics[order].unbind(-1)
    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (opacities[order] * torch.exp(-power)).clamp(max=ALPHA_MAX)
    alpha = torch.where((power >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        stop = torch.cumsum((torch.cumprod(1 - alpha, -1) <= T_MIN) & (alpha > 0), -1) > 0
    alpha = torch.where(stop, torch.zeros_like(alpha), alpha)
    t = torch.cumprod(1 - alpha, -1)
    w = alpha * torch.cat([torch.ones_like(t[:, :1]), t[:, :-1]], -1)
    rgb = w @ colors[order] + (1 - w.sum(-1, keepdim=True)) * background
    depth = w @ proj.depths[order]
    return rgb.reshape(cam.height, cam.width, 3), w.sum(-1).reshape(cam.height, cam.width), depth.reshape(cam.height, cam.width)


def test_lone_gaussian_pixel_has_the_ewa_alpha():
    cam = camera(64, 64, 100.0)
    cam.cx = cam.cy = 32.0
    means = cam.c2w[:3, 3][None] + 4.0 * -cam.c2w[:3, 2][None]  # on the optical axis, 4 units away
    scale, opacity = 0.05, 0.7
    img = rasterize_torch(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), scale), torch.tensor([opacity]),
                          torch.tensor([[1.0, 0.5, 0.25]]), cam, torch.zeros(3))
    var_x = (cam.fx * scale / 4.0) ** 2 + 0.3  # EWA variances in pixels plus the low-pass
    var_y = (cam.fy * scale / 4.0) ** 2 + 0.3
    expected = opacity * math.exp(-0.5 * (0.5**2 / var_x + 0.5**2 / var_y))  # pixel (32.5, 32.5), mean (32, 32)
    assert img.opacity[32, 32].item() == pytest.approx(expected, rel=1e-4)
    assert torch.allclose(img.rgb[32, 32], torch.tensor([1.0, 0.5, 0.25]) * expected, rtol=1e-4)
    assert img.opacity[0, 0] == 0  # beyond where alpha falls under 1/255


@pytest.mark.parametrize("tile, depth_block", [(16, 4), (16, 128), (4, 8), (7, 32)])
def test_tiles_match_brute_force_values_and_gradients(tile, depth_block):
    cam = camera()  # 40x30: tiles that cross the image border
    params = [p.requires_grad_() for p in random_gaussians(80)]
    bg = torch.tensor([0.2, 0.3, 0.4])
    proj = project(params[0], covariances(params[1], params[2]), cam, params[3])
    rgb, alpha, depth = composite_tiles(proj, params[4], params[3], cam.width, cam.height, depth_block=depth_block,
                                        tile=tile)
    rgb = rgb + (1 - alpha)[..., None] * bg
    ref_rgb, ref_alpha, ref_depth = brute_force(*params, cam, bg)
    assert torch.allclose(rgb, ref_rgb, atol=1e-5) and torch.allclose(alpha, ref_alpha, atol=1e-5)
    assert torch.allclose(depth, ref_depth, atol=1e-4)
    # random upstream gradients on every output: colour, opacity and depth
    up = [torch.randn_like(rgb), torch.randn_like(alpha), torch.randn_like(depth)]

    def loss(outputs):
        return sum((o * u).sum() for o, u in zip(outputs, up))

    grads = torch.autograd.grad(loss((rgb, alpha, depth)), params)
    ref_grads = torch.autograd.grad(loss((ref_rgb, ref_alpha, ref_depth)), params)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-4, rtol=1e-3)
        assert r.abs().sum() > 0  # every parameter gets a gradient here


def test_saturated_pixels_stop_before_transmittance_reaches_the_floor():
    cam = camera(16, 16, 20.0)
    cam.cx = cam.cy = 8.5  # the centre pixel sees every Gaussian at its peak
    n = 40
    centre = cam.c2w[:3, 3] - 3.0 * cam.c2w[:3, 2]
    means = centre + torch.linspace(0, 0.5, n)[:, None] * -cam.c2w[:3, 2]  # a stack along the view axis
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))
    img = rasterize_torch(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 1.0),
                          torch.full((n,), 0.6), colors, cam, torch.zeros(3))
    # 0.4^k > 1e-4 up to k = 10: exactly ten Gaussians are composited at the centre pixel
    assert img.opacity[8, 8].item() == pytest.approx(1 - 0.4**10, rel=1e-5)
    weights = 0.6 * 0.4 ** torch.arange(10.0)
    assert torch.allclose(img.rgb[8, 8], (weights[:, None] * colors[:10]).sum(0), atol=1e-6)


def test_culled_gaussians_get_no_gradient_and_means2d_keeps_its_gradient():
    cam = camera()
    means, quats, scales, opacities, colors = random_gaussians(10)
    means[0] = cam.c2w[:3, 3] + 1.0 * cam.c2w[:3, 2]  # behind the camera
    means.requires_grad_()
    img = rasterize_torch(means, quats, scales, opacities, colors, cam, torch.ones(3))
    img.rgb.sum().backward()
    assert (img.radii[0] == 0).all() and means.grad[0].abs().sum() == 0
    assert img.means2d.grad is not None and img.means2d.grad[(img.radii > 0).any(-1)].abs().sum() > 0


def _cuda_gsplat() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_gsplat(), reason="needs CUDA and gsplat")
def test_gsplat_matches_the_reference_values_and_gradients():
    from radistill.render.splat import rasterize_gsplat

    cam = camera(64, 48, 60.0)
    cpu = [p.requires_grad_() for p in random_gaussians(200, seed=3)]
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    cam_gpu = Camera(cam.c2w.cuda(), cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    bg = torch.tensor([0.1, 0.2, 0.3])
    ref = rasterize_torch(*cpu, cam, bg)
    out = rasterize_gsplat(*gpu, cam_gpu, bg.cuda())
    assert torch.allclose(out.rgb.cpu(), ref.rgb, atol=2e-3)
    assert torch.allclose(out.opacity.cpu(), ref.opacity, atol=2e-3)
    upstream = torch.randn_like(ref.rgb)
    g_ref = torch.autograd.grad((ref.rgb * upstream).sum(), cpu)
    g_out = torch.autograd.grad((out.rgb * upstream.cuda()).sum(), gpu)
    for a, b in zip(g_out, g_ref):
        assert torch.allclose(a.cpu(), b, atol=5e-3, rtol=5e-2)
