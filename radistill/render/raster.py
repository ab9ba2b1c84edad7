"""Differentiable triangle rasterisation in plain PyTorch (the CPU path and the reference), with
nvdiffrast behind the same call when it is installed.

The image is made in three steps, as nvdiffrast does:

1. **coverage** (no gradient): every (pixel centre, triangle) pair with the centre inside the
   projected triangle, and a depth test that keeps the nearest triangle of each pixel;
2. **interpolation** (differentiable): perspective-correct barycentrics of each pixel in its
   triangle, computed from the projected vertices, interpolate the attributes (UVs or vertex
   colours) and the depth; a texture is sampled bilinearly;
3. **anti-aliasing** (differentiable): where a pixel and its right or lower neighbour lie on
   different sides of a *silhouette* edge (a boundary edge, or one between a front- and a
   back-facing triangle), the edge's crossing point along the line between the two pixel
   centres sets how much of the far pixel the near surface covers, and the two colours blend
   by that fraction. The crossing point depends on the edge's vertices, so the image has
   gradients with respect to vertex positions at silhouettes too, not only inside triangles.

Pixel centres are at ``+0.5`` (as in ``splat``); cameras are ``splat.Camera`` (OpenCV axes).
Triangles with a vertex closer than ``near`` are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from radistill.render.splat import Camera

PAIR_BUDGET = 4_000_000
"""Most (pixel, triangle) candidate pairs handled at once."""
Backend = Literal["auto", "torch", "nvdiffrast"]


def cover(tri2d: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every (pixel, triangle) pair whose pixel centre lies inside a 2D triangle (either winding;
    centres on an edge go to one side only, see ``owns``).

    Args:
        tri2d: triangle corners in pixel units (pixel ``(i, j)`` has its centre at
            ``(i + 0.5, j + 0.5)``).  # [F, 3, 2]
    Returns:
        pixel index ``y * width + x`` [P], triangle index [P], barycentrics [P, 3] (no gradient).
    """
    tri2d = tri2d.detach()
    device = tri2d.device
    lo = torch.ceil(tri2d.amin(1) - 0.5).clamp_min(0)
    hi = torch.floor(tri2d.amax(1) - 0.5)
    hi = torch.minimum(hi, torch.tensor([width - 1.0, height - 1.0], device=device))
    n = (hi - lo + 1).clamp_min(0)
    n = torch.where(torch.isfinite(n), n, torch.zeros_like(n)).long()
    counts = n[:, 0] * n[:, 1]
    pix, tri, bary = [], [], []
    cum = torch.cumsum(counts, 0)
    start = 0
    while start < counts.numel():  # chunks of at most PAIR_BUDGET candidates (or one big triangle)
        base = int(cum[start - 1]) if start else 0
        end = max(int(torch.searchsorted(cum, torch.tensor(base + PAIR_BUDGET, device=device), right=True)),
                  start + 1)
        ids = torch.arange(start, end, device=device)
        start = end
        c = counts[ids]
        t = torch.repeat_interleave(ids, c)
        if t.numel() == 0:
            continue
        first = torch.cumsum(c, 0) - c
        k = torch.arange(t.numel(), device=device) - torch.repeat_interleave(first, c)
        nx = n[t, 0]
        px = lo[t, 0].long() + k % nx
        py = lo[t, 1].long() + k // nx
        centre = torch.stack([px, py], -1).to(tri2d.dtype) + 0.5
        b = barycentrics(tri2d[t], centre)
        inside = owns(tri2d[t], centre)
        pix.append((py * width + px)[inside])
        tri.append(t[inside])
        bary.append(b[inside])
    if not pix:
        return (torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device),
                torch.zeros(0, 3, device=device))
    return torch.cat(pix), torch.cat(tri), torch.cat(bary)


def owns(tri2d: Tensor, p: Tensor) -> Tensor:
    """Whether points ``p`` [P, 2] belong to triangles ``tri2d`` [P, 3, 2]: strictly inside, or on
    an edge the triangle owns. Of two triangles on either side of a shared edge exactly one owns
    it (a fill rule like the top-left rule of GPUs), so a pixel centre or a grid ray on the edge
    is counted once: the depth test and ray parity rely on that.  # [P] bool"""
    a, b, c = tri2d.unbind(1)
    area = _cross(b - a, c - a)
    sign = torch.sign(area)[:, None]
    w = torch.stack([_cross(c - b, p - b), _cross(a - c, p - c), _cross(b - a, p - a)], -1) * sign
    d = torch.stack([c - b, a - c, b - a], 1) * sign[..., None]  # edges in counter-clockwise order
    owned = (d[..., 1] > 0) | ((d[..., 1] == 0) & (d[..., 0] < 0))
    return ((w > 0) | ((w == 0) & owned)).all(-1) & (area != 0)


def barycentrics(tri2d: Tensor, p: Tensor) -> Tensor:
    """Barycentric coordinates of points ``p`` [P, 2] in triangles ``tri2d`` [P, 3, 2]; all >= 0
    inside, whatever the winding; NaN-free for degenerate triangles (they get -1).  # [P, 3]"""
    a, b, c = tri2d.unbind(1)
    area = _cross(b - a, c - a)
    w = torch.stack([_cross(c - b, p - b), _cross(a - c, p - c), _cross(b - a, p - a)], -1)
    ok = area.abs() > 1e-12
    return torch.where(ok[:, None], w / torch.where(ok, area, torch.ones_like(area))[:, None], torch.full_like(w, -1.0))


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


@dataclass
class MeshImage:
    """A rasterised image."""

    rgb: Tensor  # [H, W, 3] anti-aliased, composited on the background
    opacity: Tensor  # [H, W] coverage (1 inside the mesh's silhouette, fractional at its edges)
    depth: Tensor  # [H, W] camera-space z of the visible surface, 0 where there is none
    triangle: Tensor  # [H, W] long index of the visible triangle, -1 where there is none


def project_vertices(vertices: Tensor, camera: Camera) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [V, 2] and camera-space z [V] of ``vertices`` [V, 3]."""
    view = camera.viewmat().to(vertices)
    p = vertices @ view[:3, :3].T + view[:3, 3]
    z = p[:, 2]
    zs = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    xy = torch.stack([camera.fx * p[:, 0] / zs + camera.cx, camera.fy * p[:, 1] / zs + camera.cy], -1)
    return xy, z


def visible_triangles(xy: Tensor, z: Tensor, faces: Tensor, width: int, height: int, near: float = 0.01) -> Tensor:
    """Index of the nearest triangle at each pixel, -1 where there is none (no gradient).  # [H * W]"""
    zf = z.detach()[faces]  # [F, 3]
    drawable = (zf > near).all(-1)
    ids = torch.nonzero(drawable).squeeze(1)
    pix, tri, bary = cover(xy.detach()[faces[ids]], width, height)
    tri = ids[tri]
    # perspective-correct depth of each candidate: 1 / sum(b_i / z_i)
    depth = 1.0 / (bary / zf[tri]).sum(-1)
    best = torch.full((width * height,), float("inf"), device=xy.device, dtype=depth.dtype)
    best.scatter_reduce_(0, pix, depth, "amin")
    win = depth <= best[pix]
    out = torch.full((width * height,), -1, dtype=torch.long, device=xy.device)
    out.scatter_reduce_(0, pix[win], tri[win], "amax", include_self=True)
    return out


def rasterize_torch(vertices: Tensor, faces: Tensor, camera: Camera, texture: Tensor | None = None,
                    uvs: Tensor | None = None, uv_faces: Tensor | None = None, vertex_colors: Tensor | None = None,
                    background: Tensor | None = None, near: float = 0.01, antialias: bool = True,
                    edges: tuple[Tensor, Tensor] | None = None) -> MeshImage:
    """The reference rasteriser (plain PyTorch, differentiable in vertices, texture and colours).

    Args:
        vertices: positions.  # [V, 3]
        faces: vertex indices of each triangle.  # [F, 3] long
        camera: the view.
        texture: base colour in [0, 1], row 0 at ``v = 0`` (glTF's convention).  # [T_h, T_w, 3]
        uvs, uv_faces: texture coordinates and their indices per triangle corner.  # [U, 2], [F, 3]
        vertex_colors: colours when there is no texture.  # [V, 3]
        background: colour where no surface is.  # [3]
        edges: ``edge_table(faces)``, when the caller keeps it between calls.
    """
    if (texture is None) == (vertex_colors is None):
        raise ValueError("rasterize: give either a texture (with uvs and uv_faces) or vertex_colors")
    w, h = camera.width, camera.height
    xy, z = project_vertices(vertices, camera)
    tri_id = visible_triangles(xy, z, faces, w, h, near)
    covered = torch.nonzero(tri_id >= 0).squeeze(1)
    t = tri_id[covered]
    px = torch.stack([covered % w, covered // w], -1).to(xy) + 0.5
    b = barycentrics(xy[faces[t]], px)  # [P, 3] screen-space, differentiable in the vertices
    inv_z = b / z[faces[t]]
    depth = 1.0 / inv_z.sum(-1)
    bp = inv_z * depth[:, None]  # perspective-correct
    if texture is not None:
        uv = (bp[:, :, None] * uvs[uv_faces[t]]).sum(1)
        color = sample_texture(texture, uv)
    else:
        color = (bp[:, :, None] * vertex_colors[faces[t]]).sum(1)
    bg = torch.zeros(3, device=xy.device, dtype=xy.dtype) if background is None else background.to(xy)
    rgb = bg.repeat(h * w, 1).index_put((covered,), color)
    alpha = torch.zeros(h * w, device=xy.device, dtype=xy.dtype).index_put((covered,), torch.ones_like(depth))
    depth_img = torch.zeros(h * w, device=xy.device, dtype=xy.dtype).index_put((covered,), depth)
    rgb, alpha = rgb.reshape(h, w, 3), alpha.reshape(h, w)
    tri_img, depth_img = tri_id.reshape(h, w), depth_img.reshape(h, w)
    if antialias and covered.numel():
        out = antialias_silhouettes(torch.cat([rgb, alpha[..., None]], -1), tri_img, depth_img, xy, faces, edges)
        rgb, alpha = out[..., :3], out[..., 3]
    return MeshImage(rgb, alpha, depth_img, tri_img)


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear texture lookup at ``uv`` [P, 2] in [0, 1] (``u`` right, ``v`` down; wraps around
    as glTF's default sampler does).  # [P, 3]"""
    uv = torch.remainder(uv, 1.0)
    grid = (uv * 2 - 1).reshape(1, -1, 1, 2)
    out = F.grid_sample(texture.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, :, 0].T


# ---------------------------------------------------------------------------- anti-aliasing

def edge_table(faces: Tensor) -> tuple[Tensor, Tensor]:
    """Edges of a triangle list: the edge id of each triangle's edge ``k`` (the one opposite its
    corner ``k``) [F, 3], and the two triangles of each edge [E, 2] (-1 for a boundary edge; a
    non-manifold edge keeps two of its triangles and is marked by [-2, -2])."""
    f = faces.shape[0]
    corners = torch.stack([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], 1).reshape(-1, 2)  # [3F, 2]
    key = torch.sort(corners, -1).values
    uniq, edge_of = torch.unique(key, dim=0, return_inverse=True)
    e = uniq.shape[0]
    tri_of = torch.arange(f, device=faces.device).repeat_interleave(3)
    count = torch.bincount(edge_of, minlength=e)
    order = torch.argsort(edge_of, stable=True)
    first = torch.cumsum(count, 0) - count
    pair = torch.full((e, 2), -1, dtype=torch.long, device=faces.device)
    pair[:, 0] = tri_of[order[first]]
    two = count >= 2
    pair[two, 1] = tri_of[order[first[two] + 1]]
    pair[count > 2] = -2
    return edge_of.reshape(f, 3), pair


def silhouette_edges(xy: Tensor, faces: Tensor, edges: tuple[Tensor, Tensor]) -> Tensor:
    """Which edges are silhouettes in this view: boundary or non-manifold edges, and edges between
    a front- and a back-facing triangle (by the sign of their projected area).  # [E] bool"""
    tri = xy.detach()[faces]
    facing = _cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) > 0
    pair = edges[1]
    lone = pair[:, 1] < 0
    return lone | (facing[pair[:, 0].clamp_min(0)] != facing[pair[:, 1].clamp_min(0)])


def antialias_silhouettes(image: Tensor, tri_img: Tensor, depth_img: Tensor, xy: Tensor, faces: Tensor,
                          edges: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Blend neighbouring pixels across silhouette edges by the covered fraction (module docstring).

    Args:
        image: channels to blend (colour, coverage).  # [H, W, C]
        tri_img: visible triangle per pixel, -1 for none.  # [H, W]
        depth_img: its depth.  # [H, W]
        xy: projected vertices (differentiable).  # [V, 2]
    """
    edges = edges if edges is not None else edge_table(faces)
    silhouette = silhouette_edges(xy, faces, edges)
    h, w, c = image.shape
    depth_inf = torch.where(tri_img >= 0, depth_img.detach(), torch.full_like(depth_img, float("inf")))
    delta = torch.zeros_like(image).reshape(-1, c)
    flat_img = image.reshape(-1, c)
    flat_tri, flat_depth = tri_img.reshape(-1), depth_inf.reshape(-1)
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    for dy, dx in ((0, 1), (1, 0)):
        a = (ys[: h - dy, : w - dx] * w + xs[: h - dy, : w - dx]).reshape(-1)
        b = a + dy * w + dx
        diff = flat_tri[a] != flat_tri[b]
        a, b = a[diff], b[diff]
        a_front = flat_depth[a] < flat_depth[b]
        front = torch.where(a_front, a, b)
        back = torch.where(a_front, b, a)
        tri = flat_tri[front]
        pf = torch.stack([front % w, front // w], -1).to(xy) + 0.5
        pb = torch.stack([back % w, back // w], -1).to(xy) + 0.5
        corners = xy[faces[tri]]  # [P, 3, 2]
        bf = barycentrics(corners, pf)
        bb = barycentrics(corners, pb)
        # where along front -> back each edge k is crossed (edge k: barycentric k reaches 0)
        leaving = bb < 0
        s = bf / (bf - torch.where(leaving, bb, -torch.ones_like(bb)))
        s = torch.where(leaving & (bf >= 0), s, torch.full_like(s, 2.0))
        s_min, k = s.min(-1)
        edge = edges[0][tri, k]
        use = (s_min <= 1.0) & silhouette[edge]
        front, back, s_min = front[use], back[use], s_min[use]
        cf, cb = flat_img[front], flat_img[back]
        # the near surface spills into the far pixel (s > 0.5) or leaves part of its own (s < 0.5)
        spill = (s_min - 0.5).clamp_min(0)[:, None]
        short = (0.5 - s_min).clamp_min(0)[:, None]
        delta = delta.index_add(0, back, spill * (cf - cb)).index_add(0, front, short * (cb - cf))
    return image + delta.reshape(h, w, c)


# ---------------------------------------------------------------------------- backends

_NVDR_OK: bool | None = None


def nvdiffrast_available() -> bool:
    """Whether nvdiffrast is importable here with CUDA (it is not on PyPI; users install it)."""
    global _NVDR_OK
    if _NVDR_OK is None:
        try:
            import nvdiffrast.torch  # noqa: F401  (only whether it imports)

            _NVDR_OK = torch.cuda.is_available()
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            _NVDR_OK = False
    return _NVDR_OK


_NVDR_CONTEXT = None


def rasterize_nvdiffrast(vertices: Tensor, faces: Tensor, camera: Camera, texture: Tensor | None = None,
                         uvs: Tensor | None = None, uv_faces: Tensor | None = None,
                         vertex_colors: Tensor | None = None, background: Tensor | None = None,
                         near: float = 0.01, antialias: bool = True) -> MeshImage:
    """The same image through nvdiffrast's CUDA rasteriser (``rasterize``, ``interpolate``,
    ``texture``, ``antialias``), with the same camera and pixel conventions."""
    import nvdiffrast.torch as dr

    global _NVDR_CONTEXT
    if _NVDR_CONTEXT is None:
        _NVDR_CONTEXT = dr.RasterizeCudaContext()
    w, h = camera.width, camera.height
    view = camera.viewmat().to(vertices)
    p = vertices @ view[:3, :3].T + view[:3, 3]
    far = float(p[:, 2].detach().max()) * 2 + 1
    # OpenCV pinhole -> clip space with y up and rows counted from the bottom, as nvdiffrast expects
    proj = torch.zeros(4, 4, device=vertices.device, dtype=vertices.dtype)
    proj[0, 0], proj[0, 2] = 2 * camera.fx / w, 2 * camera.cx / w - 1
    proj[1, 1], proj[1, 2] = -2 * camera.fy / h, 1 - 2 * camera.cy / h
    proj[2, 2], proj[2, 3] = (far + near) / (far - near), -2 * far * near / (far - near)
    proj[3, 2] = 1.0
    clip = torch.cat([p, torch.ones_like(p[:, :1])], -1) @ proj.T
    tri = faces.int().contiguous()
    rast, _ = dr.rasterize(_NVDR_CONTEXT, clip[None].contiguous(), tri, (h, w))
    covered = rast[..., 3:] > 0
    depth, _ = dr.interpolate(p[None, :, 2:].contiguous(), rast, tri)
    if texture is not None:
        uv, _ = dr.interpolate(uvs[None].contiguous(), rast, uv_faces.int().contiguous())
        color = dr.texture(texture[None].contiguous(), uv, filter_mode="linear", boundary_mode="wrap")
    else:
        color, _ = dr.interpolate(vertex_colors[None].contiguous(), rast, tri)
    bg = torch.zeros(3, device=vertices.device) if background is None else background.to(vertices)
    img = torch.cat([torch.where(covered, color, bg), covered.float()], -1)
    if antialias:
        img = dr.antialias(img.contiguous(), rast, clip[None].contiguous(), tri)
    img = img[0]
    tri_img = rast[0, ..., 3].long() - 1
    return MeshImage(img[..., :3], img[..., 3], torch.where(covered[0, ..., 0], depth[0, ..., 0], 0), tri_img)


def rasterize(vertices: Tensor, faces: Tensor, camera: Camera, texture: Tensor | None = None,
              uvs: Tensor | None = None, uv_faces: Tensor | None = None, vertex_colors: Tensor | None = None,
              background: Tensor | None = None, near: float = 0.01, antialias: bool = True,
              backend: Backend = "auto", edges: tuple[Tensor, Tensor] | None = None) -> MeshImage:
    """Rasterise a mesh: nvdiffrast on CUDA when installed (``auto``), else the PyTorch reference."""
    if backend not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"rasterize: backend must be auto, torch or nvdiffrast, got {backend!r}")
    use_nvdr = backend == "nvdiffrast" or (backend == "auto" and vertices.is_cuda and nvdiffrast_available())
    if use_nvdr:
        return rasterize_nvdiffrast(vertices, faces, camera, texture, uvs, uv_faces, vertex_colors, background, near,
                                    antialias)
    return rasterize_torch(vertices, faces, camera, texture, uvs, uv_faces, vertex_colors, background, near, antialias,
                           edges)
