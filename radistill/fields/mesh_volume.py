"""The volumetric view of a triangle mesh: inside/outside, distance to the surface, nearest point.

* **Inside** is decided on a grid of cell centres by ray parity along each axis (a ray crossing
  the surface an odd number of times before a cell puts it inside), with a majority vote over
  the three axes so that a small hole or a doubled triangle does not flip a whole row.
* **Distance** to the surface is exact near it: the nearest point among the candidate triangles
  of a KD-tree over points sampled on every triangle. Far from it, a distance transform of the
  inside grid answers without any search.

``MeshField.query`` turns the signed distance into a density with a soft band at the surface.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from radistill.render.raster import cover

NEIGHBOURS = 8
"""Candidate triangles examined per point (nearest surface samples)."""
MAX_SAMPLES = 2_000_000
"""Most surface samples in the KD-tree."""
COLOUR_GRID = 64
"""Cells per axis of the grid that gives points far from the surface a nearby triangle."""


class MeshVolume:
    """Inside grid, coarse signed distance and a nearest-triangle index of one mesh (fixed vertices)."""

    def __init__(self, vertices: Tensor, faces: Tensor, aabb: Tensor, resolution: int) -> None:
        from scipy import ndimage
        from scipy.spatial import cKDTree

        self.vertices = vertices.detach().float().cpu()
        self.faces = faces.cpu()
        self.lo = aabb[0].detach().float().cpu()
        self.hi = aabb[1].detach().float().cpu()
        self.resolution = resolution
        self.step = (self.hi - self.lo) / resolution  # [3] cell size per axis
        inside = parity_inside(self.vertices, self.faces, self.lo, self.step, resolution)
        self.inside = inside  # [R, R, R] bool, indexed [x, y, z]
        self.coarse_sdf = torch.from_numpy(coarse_signed_distance(inside.numpy(), self.step.numpy()))  # positive inside
        # both as grid_sample volumes [1, 1, Z, Y, X], made once: the lookups run at every query
        self._inside_volume = inside.permute(2, 1, 0)[None, None].float().contiguous()
        self._sdf_volume = self.coarse_sdf.permute(2, 1, 0)[None, None].contiguous()
        points, self.sample_triangle = surface_samples(self.vertices, self.faces, float(self.step.min()))
        self.tree = cKDTree(points.numpy())
        # far from the surface a KD-tree search visits most of the tree (many samples are about
        # equally far): there a coarse grid gives a nearby triangle instead
        cres = min(COLOUR_GRID, resolution)
        cell = self._cell(points, cres)
        owner = torch.full((cres**3,), -1, dtype=torch.long)
        owner[cell] = self.sample_triangle
        _, nearest = ndimage.distance_transform_edt((owner < 0).reshape(cres, cres, cres).numpy(), return_indices=True)
        nearest = torch.from_numpy(nearest.astype(np.int64)).reshape(3, -1)
        self.cell_triangle = owner[(nearest[0] * cres + nearest[1]) * cres + nearest[2]]  # [cres^3]
        self.colour_resolution = cres

    def _cell(self, x: Tensor, res: int) -> Tensor:
        """Flat index ``(i * res + j) * res + k`` of the cell of a ``res``^3 grid holding each point.  # [N]"""
        ijk = torch.floor((x - self.lo) / ((self.hi - self.lo) / res)).long().clamp(0, res - 1)
        return (ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2]

    def _grid(self, volume: Tensor, x: Tensor) -> Tensor:
        """Trilinear lookup of a cell-centred grid volume [1, 1, R, R, R] at ``x`` [N, 3].  # [N]"""
        g = (2 * (x - self.lo) / (self.hi - self.lo) - 1).reshape(1, -1, 1, 1, 3)
        return F.grid_sample(volume, g, mode="bilinear", padding_mode="border", align_corners=False).reshape(-1)

    def signed_distance(self, x: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
        """Signed distance (positive inside), nearest triangle and barycentrics of the nearest
        point for points ``x`` [N, 3]. Within ``margin`` of the surface (by the coarse distance)
        all three are exact; beyond it the coarse distance is returned with (the centre of) a
        triangle near the point's cell, which is all a point far from the surface needs.

        Inside or outside comes from the parity grid (trilinear). Taking the side of the nearest
        face instead within one cell of the surface was measured worse on lego (volume renders
        against rasterised ones, 29.3 dB against 33.1 dB): at thin parts and sharp edges the
        nearest face's normal points the wrong way."""
        x = x.detach().float().cpu()
        coarse = self._grid(self._sdf_volume, x)
        inside = self._grid(self._inside_volume, x) > 0.5
        near = coarse.abs() <= margin + float(self.step.max())
        signed = coarse.clone()
        tri = torch.zeros(x.shape[0], dtype=torch.long)
        bary = torch.full((x.shape[0], 3), 1.0 / 3.0)
        idx = torch.nonzero(near).squeeze(1)
        if idx.numel():
            dist, tri[idx], bary[idx] = self.closest(x[idx])
            signed[idx] = torch.where(inside[idx], dist, -dist)
        far = torch.nonzero(~near).squeeze(1)
        if far.numel():
            tri[far] = self.cell_triangle[self._cell(x[far], self.colour_resolution)]
        return signed, tri, bary

    def closest(self, x: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor, Tensor]:
        """Distance to the nearest surface point, its triangle and barycentrics.  # [N], [N], [N, 3]"""
        out_d, out_t, out_b = [], [], []
        k = min(NEIGHBOURS, self.sample_triangle.numel())
        for i in range(0, x.shape[0], chunk):
            p = x[i:i + chunk]
            _, idx = self.tree.query(p.numpy(), k=k, workers=-1)
            idx = torch.from_numpy(np.asarray(idx, dtype=np.int64)).reshape(p.shape[0], k)
            cand = self.sample_triangle[idx]  # [n, k]
            corners = self.vertices[self.faces[cand]]  # [n, k, 3, 3]
            bary = closest_point_barycentrics(p[:, None].expand(-1, k, -1), corners)
            point = (bary[..., None] * corners).sum(-2)
            dist = (point - p[:, None]).norm(dim=-1)
            best = dist.argmin(-1, keepdim=True)
            out_d.append(dist.gather(1, best)[:, 0])
            out_t.append(cand.gather(1, best)[:, 0])
            out_b.append(bary.gather(1, best[..., None].expand(-1, -1, 3))[:, 0])
        if not out_d:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, 3)
        return torch.cat(out_d), torch.cat(out_t), torch.cat(out_b)


def coarse_signed_distance(inside: np.ndarray, step: np.ndarray) -> np.ndarray:
    """A lower bound of the signed distance (positive inside) from each cell centre to the
    surface: the chessboard distance, in cells, to the nearest cell on the other side, times the
    smallest cell size, less half of it. Never more than the exact (Euclidean) distance between
    the cell centres, and at most sqrt(3) times less.

    A lower bound is all the volumetric view needs: it picks the points near enough to the
    surface to search exactly (more of them than exact distances would, never fewer), and far
    from the surface only its sign counts. Exact Euclidean transforms took 8.4 s on lego's mesh
    at 256^3 (and 11.7 s for a cube filling its box), these 0.5 s.  # [R, R, R] float32"""
    from scipy import ndimage

    cell, res = float(step.min()), max(inside.shape)

    def cells_to_other_side(mask: np.ndarray) -> np.ndarray:
        if mask.all():  # no cell on the other side: as far as the grid reaches
            return np.full(mask.shape, res, dtype=np.int32)
        return ndimage.distance_transform_cdt(mask, metric="chessboard")

    half = 0.5 * cell
    d_in, d_out = cells_to_other_side(inside) * cell, cells_to_other_side(~inside) * cell
    return np.where(inside, d_in - half, -(d_out - half)).astype(np.float32)


def parity_inside(vertices: Tensor, faces: Tensor, lo: Tensor, step: Tensor, res: int) -> Tensor:
    """Cells of a ``res``^3 grid inside a closed mesh, by ray parity along x, y and z and a
    majority vote (two of three).  # [R, R, R] bool, indexed [x, y, z]"""
    votes = torch.zeros(res, res, res, dtype=torch.int8)
    corners = vertices[faces]  # [F, 3, 3]
    for axis in range(3):
        b, c = [a for a in range(3) if a != axis]
        tri2d = (corners[..., [b, c]] - lo[[b, c]]) / step[[b, c]]
        pix, tri, bary = cover(tri2d, res, res)  # pix = c_index * res + b_index
        cross = (bary * corners[tri][..., axis]).sum(-1)
        first = torch.ceil((cross - lo[axis]) / step[axis] - 0.5).clamp(0, res).long()  # first cell past it
        counts = torch.zeros(res * res, res + 1, dtype=torch.int32)
        counts.index_put_((pix, first), torch.ones_like(first, dtype=torch.int32), accumulate=True)
        parity = (torch.cumsum(counts[:, :res], 1) % 2).to(torch.int8).reshape(res, res, res)  # [c, b, axis]
        order = [0, 0, 0]
        order[c], order[b], order[axis] = 0, 1, 2
        votes += parity.permute(*order)
    return votes >= 2


def surface_samples(vertices: Tensor, faces: Tensor, spacing: float) -> tuple[Tensor, Tensor]:
    """Points on every triangle (its centroid, plus area-proportional random points on triangles
    larger than ``spacing``^2) and the triangle of each.  # [S, 3], [S]"""
    corners = vertices[faces]
    area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
    extra = torch.ceil(area / spacing**2).long() - 1
    total = int(extra.sum())
    if total > MAX_SAMPLES:
        extra = (extra.float() * (MAX_SAMPLES / total)).long()
    tri = torch.cat([torch.arange(faces.shape[0]), torch.repeat_interleave(torch.arange(faces.shape[0]), extra)])
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(tri.numel(), 2, generator=g)
    flip = uv.sum(-1) > 1
    uv[flip] = 1 - uv[flip]
    bary = torch.stack([1 - uv.sum(-1), uv[:, 0], uv[:, 1]], -1)
    bary[: faces.shape[0]] = 1.0 / 3.0
    return (bary[..., None] * corners[tri]).sum(1), tri


def closest_point_barycentrics(p: Tensor, corners: Tensor) -> Tensor:
    """Barycentrics of the point of each triangle ``corners`` [..., 3, 3] nearest to ``p`` [..., 3]
    (the region tests of Ericson, Real-Time Collision Detection 5.1.5).  # [..., 3]"""
    a, b, c = corners.unbind(-2)
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    denom = va + vb + vc
    denom = torch.where(denom.abs() > 1e-30, denom, torch.full_like(denom, 1e-30))
    v, w = vb / denom, vc / denom
    out = torch.stack([1 - v - w, v, w], -1)  # inside the face

    def put(mask: Tensor, value: Tensor) -> Tensor:
        return torch.where(mask[..., None], value, out)

    def safe(n: Tensor, d: Tensor) -> Tensor:
        return n / torch.where(d.abs() > 1e-30, d, torch.full_like(d, 1e-30))

    zero = torch.zeros_like(d1)
    t = safe(d4 - d3, (d4 - d3) + (d5 - d6))
    out = put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([zero, 1 - t, t], -1))  # edge BC
    t = safe(d2, d2 - d6)
    out = put((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - t, zero, t], -1))  # edge AC
    out = put((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, zero + 1], -1))  # vertex C
    t = safe(d1, d1 - d3)
    out = put((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - t, t, zero], -1))  # edge AB
    out = put((d3 >= 0) & (d4 <= d3), torch.stack([zero, zero + 1, zero], -1))  # vertex B
    out = put((d1 <= 0) & (d2 <= 0), torch.stack([zero + 1, zero, zero], -1))  # vertex A
    return out.clamp(0, 1)


def soft_density(signed: Tensor, band: float) -> Tensor:
    """Density from a signed distance (positive inside): zero beyond half a ``band`` outside,
    rising linearly to ``4 / band`` half a band inside, constant deeper.

    A ray entering the surface head-on has half its transmittance left 0.09 band past the
    surface, 13% half a band further and 0.2% one and a half bands in. A density that never
    vanishes outside (a logistic of the distance) would leave a halo: rays grazing a surface
    gather its tail over a long path.  # [N]"""
    return (4.0 / band) * (signed / band + 0.5).clamp(0.0, 1.0)
