"""The triangle rasteriser against an independent oracle (ray casting), and its gradients."""

from __future__ import annotations

import pytest
import torch

from radistill.cameras import look_at
from radistill.render.raster import (barycentrics, cover, edge_table, nvdiffrast_available, rasterize,
                                     rasterize_torch, sample_texture)
from radistill.render.splat import Camera


def camera(width=24, height=20, eye=(0.3, -0.2, 3.0), dtype=torch.float64) -> Camera:
    c2w = look_at(torch.tensor([eye], dtype=torch.float32), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))[0].to(dtype)
    return Camera(c2w, 22.0, 21.0, width / 2 + 0.3, height / 2 - 0.2, width, height)


def pixel_rays(cam: Camera):
    """Origin and direction of the ray through each pixel centre, built from c2w (not the projection)."""
    j, i = torch.meshgrid(torch.arange(cam.height, dtype=torch.float64), torch.arange(cam.width, dtype=torch.float64),
                          indexing="ij")
    d_cam = torch.stack([(i + 0.5 - cam.cx) / cam.fx, -(j + 0.5 - cam.cy) / cam.fy, -torch.ones_like(i)], -1)
    d = d_cam.reshape(-1, 3) @ cam.c2w[:3, :3].T.double()
    return cam.c2w[:3, 3].double().expand_as(d), d


def ray_cast(vertices, faces, colors, cam: Camera, background):
    """Oracle: Moller-Trumbore against every triangle, nearest hit wins, colour by 3D barycentrics."""
    o, d = pixel_rays(cam)
    a, b, c = (vertices[faces[:, k]].double() for k in range(3))
    e1, e2 = b - a, c - a  # [F, 3]
    p = torch.linalg.cross(d[:, None], e2[None])  # [P, F, 3]
    det = (e1[None] * p).sum(-1)
    inv = 1 / det
    s = o[:, None] - a[None]
    u = (s * p).sum(-1) * inv
    q = torch.linalg.cross(s, e1[None].expand_as(s))
    v = (d[:, None] * q).sum(-1) * inv
    t = (e2[None] * q).sum(-1) * inv
    hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = torch.where(hit, t, torch.full_like(t, float("inf")))
    best = t.argmin(-1)
    any_hit = torch.isfinite(t.min(-1).values)
    uu, vv = u.gather(1, best[:, None])[:, 0], v.gather(1, best[:, None])[:, 0]
    bary = torch.stack([1 - uu - vv, uu, vv], -1)
    col = (bary[:, :, None] * colors[faces[best]].double()).sum(1)
    out = torch.where(any_hit[:, None], col, background.double())
    return out.reshape(cam.height, cam.width, 3), any_hit.reshape(cam.height, cam.width)


def scene():
    """Two overlapping triangles at different depths (the far one listed first) and a third apart."""
    vertices = torch.tensor([[-1.0, -0.8, -0.5], [1.0, -0.7, -0.5], [0.0, 0.9, -0.5],
                             [-0.6, -0.2, 0.4], [0.7, 0.0, 0.4], [-0.1, 0.8, 0.3],
                             [0.6, 0.5, 0.0], [1.1, 0.6, 0.0], [0.9, 1.0, 0.1]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    colors = torch.rand(9, 3, dtype=torch.float64)
    return vertices, faces, colors


def test_cover_finds_exactly_the_pixel_centres_inside_each_triangle():
    g = torch.Generator().manual_seed(1)
    tri = torch.rand(40, 3, 2, generator=g) * torch.tensor([30.0, 20.0]) - 3  # some leave the image
    pix, t, bary = cover(tri, 25, 17)
    found = set(zip(pix.tolist(), t.tolist()))
    expected = set()
    for k in range(40):
        for y in range(17):
            for x in range(25):
                b = barycentrics(tri[k:k + 1], torch.tensor([[x + 0.5, y + 0.5]]))
                if bool((b > 0).all()):  # random corners: no centre lies exactly on an edge
                    expected.add((y * 25 + x, k))
    assert found == expected and len(found) > 50
    assert torch.allclose((bary[:, :, None] * tri[t]).sum(1),
                          torch.stack([pix % 25, pix // 25], -1).float() + 0.5, atol=1e-4)


def test_centres_on_a_shared_edge_or_corner_are_counted_once():
    """A 4x4 grid of squares cut along diagonals through pixel centres: every centre in once."""
    pts = torch.tensor([[x, y] for y in (0.5, 4.5, 8.5) for x in (0.5, 4.5, 8.5)])
    tris = []
    for r in range(2):
        for c in range(2):
            i = r * 3 + c
            quad = [i, i + 1, i + 4, i + 3]
            tris += [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]] if (r + c) % 2 else \
                    [[quad[0], quad[2], quad[1]], [quad[0], quad[3], quad[2]]]  # mixed windings
    pix, _, _ = cover(pts[torch.tensor(tris)], 9, 9)
    counts = torch.bincount(pix, minlength=81).reshape(9, 9)
    # centres of the closed square [0.5, 8.5]^2: those on its outer border may belong to nobody
    assert bool((counts[1:8, 1:8] == 1).all())
    assert int(counts.max()) == 1


def test_image_equals_ray_casting_with_the_nearest_surface_in_front():
    vertices, faces, colors = scene()
    cam = camera()
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    img = rasterize_torch(vertices, faces, cam, vertex_colors=colors, background=bg, antialias=False)
    ref, hit = ray_cast(vertices, faces, colors, cam, bg)
    assert hit.sum() > 60 and (~hit).sum() > 50
    assert torch.allclose(img.rgb, ref, atol=1e-9)
    assert torch.equal(img.opacity > 0, hit)
    # the depth is the camera-space z of the hit
    o, d = pixel_rays(cam)
    view = cam.viewmat().double()
    assert bool((img.depth[hit] > 0).all())
    front = img.triangle.reshape(-1)
    assert set(front[hit.reshape(-1)].tolist()) == {0, 1, 2}
    # the near triangle (1) hides the far one (0) where they overlap, whatever their order
    flipped = rasterize_torch(vertices, faces.flip(0), cam, vertex_colors=colors, background=bg, antialias=False)
    assert torch.allclose(flipped.rgb, img.rgb, atol=1e-12)
    del view, o, d


def test_texture_lookups_are_bilinear_and_perspective_correct():
    vertices, faces, _ = scene()
    tex = torch.rand(5, 7, 3, dtype=torch.float64)
    uvs = torch.rand(9, 2, dtype=torch.float64)
    cam = camera()
    img = rasterize_torch(vertices, faces, cam, texture=tex, uvs=uvs, uv_faces=faces, antialias=False)
    # oracle: the 3D-barycentric UV of the ray hit, then a hand-written bilinear lookup
    uv_img, hit = ray_cast(vertices, faces, torch.cat([uvs, torch.zeros(9, 1, dtype=torch.float64)], 1), cam,
                           torch.zeros(3))
    uv = uv_img[hit][:, :2]
    x, y = uv[:, 0] * 7 - 0.5, uv[:, 1] * 5 - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]

    def at(yy, xx):
        return tex[yy.clamp(0, 4).long(), xx.clamp(0, 6).long()]

    ref = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy) + at(y0 + 1, x0) * (1 - fx) * fy
           + at(y0 + 1, x0 + 1) * fx * fy)
    assert torch.allclose(img.rgb[hit], ref, atol=1e-9)
    assert torch.allclose(sample_texture(tex, uv), ref, atol=1e-12)


def test_gradients_reach_texture_colours_and_vertices_and_match_finite_differences():
    vertices, faces, colors = scene()
    cam = camera()
    weights = torch.rand(cam.height, cam.width, 3, dtype=torch.float64)

    def loss(v, c):
        return (rasterize_torch(v, faces, cam, vertex_colors=c, background=torch.ones(3, dtype=torch.float64),
                                antialias=True).rgb * weights).sum()

    v = vertices.clone().requires_grad_(True)
    c = colors.clone().requires_grad_(True)
    loss(v, c).backward()
    assert v.grad.abs().sum() > 0
    eps = 1e-6
    for k, axis in [(1, 0), (3, 1), (5, 0), (7, 2), (2, 1)]:
        dv = torch.zeros_like(vertices)
        dv[k, axis] = eps
        fd = (loss(vertices + dv, colors) - loss(vertices - dv, colors)) / (2 * eps)
        assert torch.allclose(v.grad[k, axis], fd, rtol=1e-4, atol=1e-6), (k, axis, float(v.grad[k, axis]), float(fd))
    dc = torch.zeros_like(colors)
    dc[4, 1] = eps
    fd = (loss(vertices, colors + dc) - loss(vertices, colors - dc)) / (2 * eps)
    assert torch.allclose(c.grad[4, 1], fd, rtol=1e-6)


def test_antialiasing_gives_silhouette_vertices_gradients_that_a_hard_edge_lacks():
    """A flat-coloured triangle: without anti-aliasing moving a corner changes nothing until a pixel
    centre crosses the edge; with it the image changes smoothly and the gradient is that change."""
    vertices = torch.tensor([[-0.7, -0.6, 0.0], [0.8, -0.5, 0.0], [0.1, 0.7, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    colors = torch.full((3, 3), 0.2, dtype=torch.float64)
    cam = camera(40, 36)
    bg = torch.ones(3, dtype=torch.float64)

    def coverage(v, aa):
        return rasterize_torch(v, faces, cam, vertex_colors=colors, background=bg, antialias=aa).rgb.sum()

    for aa in (False, True):
        v = vertices.clone().requires_grad_(True)
        coverage(v, aa).backward()
        if not aa:
            assert v.grad.abs().max() < 1e-12
        else:
            assert v.grad.abs().max() > 1
            # moving a corner outwards by 0.01 darkens the image by about what the gradient says
            step = torch.zeros_like(vertices)
            step[2, 1] = 0.01
            change = coverage(vertices + step, True) - coverage(vertices, True)
            assert abs(float(change) - 0.01 * float(v.grad[2, 1])) < 0.25 * abs(float(change))
            assert float(change) < 0


def test_interior_edges_are_not_blurred_by_antialiasing():
    """Two triangles of one quad with different colours: the shared edge is not a silhouette."""
    vertices = torch.tensor([[-0.8, -0.8, 0.0], [0.8, -0.8, 0.0], [0.8, 0.8, 0.0], [-0.8, 0.8, 0.0]],
                            dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    colors = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 1]], dtype=torch.float64)
    cam = camera(30, 30, eye=(0.0, 0.0, 3.0))
    a = rasterize_torch(vertices, faces, cam, vertex_colors=colors, antialias=False)
    b = rasterize_torch(vertices, faces, cam, vertex_colors=colors, antialias=True)
    inside = (a.opacity > 0)
    interior = inside.clone()
    interior[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    interior[[0, -1]] = False
    interior[:, [0, -1]] = False
    assert torch.equal(a.rgb[interior], b.rgb[interior])
    assert not torch.equal(a.rgb[inside & ~interior], b.rgb[inside & ~interior])


def test_edge_table_pairs_triangles_and_marks_boundaries():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [2, 1, 4]])
    edge_of, pair = edge_table(faces)
    shared = edge_of[0, 1]  # edge (2, 0) of triangle 0 is edge (0, 2) of triangle 1
    assert shared == edge_of[1, 2]
    assert sorted(pair[shared].tolist()) == [0, 1]
    assert (pair[:, 1] == -1).sum() == 5  # 7 edges, 2 shared


def test_bad_arguments_are_refused():
    vertices, faces, colors = scene()
    with pytest.raises(ValueError, match="either a texture"):
        rasterize_torch(vertices, faces, camera())
    with pytest.raises(ValueError, match="backend"):
        rasterize(vertices, faces, camera(), vertex_colors=colors, backend="opengl")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not nvdiffrast_available(), reason="needs CUDA and nvdiffrast")
def test_nvdiffrast_matches_the_reference_values_and_gradients():
    vertices, faces, colors = scene()
    cam = camera(64, 48, dtype=torch.float32)
    cam.c2w = cam.c2w.cuda()
    v = vertices.float().cuda().requires_grad_(True)
    c = colors.float().cuda().requires_grad_(True)
    out = {}
    for backend in ("torch", "nvdiffrast"):
        img = rasterize(v, faces.cuda(), cam, vertex_colors=c, background=torch.ones(3, device="cuda"),
                        antialias=False, backend=backend)
        g = torch.autograd.grad(img.rgb.sum(), [c])
        out[backend] = (img.rgb.detach(), g[0])
    assert torch.allclose(out["torch"][0], out["nvdiffrast"][0], atol=1e-4)
    assert torch.allclose(out["torch"][1], out["nvdiffrast"][1], atol=1e-3)
