"""The volumetric view of a triangle mesh: inside/outside, distance to the surface, nearest point.

* **Inside** is decided on a grid of cell centres by ray parity along each axis (a ray crossing
  the surface an odd number of times before a cell puts it inside), with a majority vote over
  the three axes so that a doubled triangle does not flip a whole row.
* **Distance** to the surface is exact near it: the nearest point among the candidate triangles
  of a KD-tree over points sampled on every triangle. Which points are near comes from a lower
  bound of the distance on the grid (a distance transform of the cells the triangles pass
  through), which also answers far from the surface without any search.
* **Open surfaces** enclose nothing: pieces of the mesh with a border (a sheet, a terrain, a
  scan with holes), which are kept out of the parity grid (it would fill them with nonsense),
  and parts with no inside cell near them (thinner than a cell). They count as sheets of a given thickness,
  so that they stop rays as their rasterised images do.

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
SHEET_REACH = 3
"""A point with no inside cell within this many cells (chessboard) is near an open surface."""
LATTICE_CHUNK = 4_000_000
"""Most lattice points made at once by ``surface_cells``."""


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
        closed = torch.from_numpy(closed_faces(self.vertices.numpy(), self.faces.numpy()))
        self.open_face = ~closed  # [F] bool
        inside = parity_inside(self.vertices, self.faces[closed], self.lo, self.step, resolution)
        self.inside = inside  # [R, R, R] bool, indexed [x, y, z]
        surface = surface_cells(self.vertices, self.faces, self.lo, self.step, resolution)
        self.coarse_distance = torch.from_numpy(coarse_distance(surface.numpy(), self.step.numpy()))  # [R, R, R]
        self.enclosed = torch.from_numpy(near_cells(inside.numpy(), SHEET_REACH))  # [R, R, R] bool
        # as grid_sample volumes [1, 1, Z, Y, X], made once: the lookups run at every query
        self._inside_volume, self._distance_volume, self._enclosed_volume = (
            v.permute(2, 1, 0)[None, None].float().contiguous() for v in (inside, self.coarse_distance, self.enclosed))
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

    def signed_distance(self, x: Tensor, margin: float, sheet_half_width: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        """Signed distance (positive inside), nearest triangle and barycentrics of the nearest
        point for points ``x`` [N, 3]. Within ``margin`` of the surface (by the coarse distance)
        all three are exact; beyond it the coarse distance (a lower bound) is returned with (the
        centre of) a triangle near the point's cell, which is all a point far from the surface
        needs.

        Inside or outside comes from the parity grid (trilinear). Taking the side of the nearest
        face instead within one cell of the surface was measured worse on lego (volume renders
        against rasterised ones, 29.3 dB against 33.1 dB): at thin parts and sharp edges the
        nearest face's normal points the wrong way. Outside, where the nearest face is on an open
        piece or no inside cell is within ``SHEET_REACH`` cells, the distance is to a sheet
        ``2 * sheet_half_width`` thick around the surface: ``sheet_half_width - distance``.
        Moving a point changes the result by at most the distance moved, plus
        ``sheet_half_width`` where the rule switches."""
        x = x.detach().float().cpu()
        coarse = self._grid(self._distance_volume, x)
        inside = self._grid(self._inside_volume, x) > 0.5
        near = coarse <= margin + float(self.step.max())
        signed = torch.where(inside, coarse, -coarse)
        tri = torch.zeros(x.shape[0], dtype=torch.long)
        bary = torch.full((x.shape[0], 3), 1.0 / 3.0)
        idx = torch.nonzero(near).squeeze(1)
        if idx.numel():
            dist, tri[idx], bary[idx] = self.closest(x[idx])
            sheet = ~inside[idx] & (self.open_face[tri[idx]] | (self._grid(self._enclosed_volume, x[idx]) < 0.5))
            signed[idx] = torch.where(inside[idx], dist, torch.where(sheet, sheet_half_width - dist, -dist))
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


def surface_cells(vertices: Tensor, faces: Tensor, lo: Tensor, step: Tensor, res: int) -> Tensor:
    """Cells of a ``res``^3 grid holding points of a lattice on every triangle, fine enough that
    every point of every triangle lies within one cell (along each axis) of a marked cell.

    A triangle's lattice steps along its longest and its shortest edge from the corner they
    share, by at most the smallest cell size ``h`` along each: every point of the triangle lies
    in a parallelogram of the lattice, within ``h`` of one of its corners (the parallelograms
    that cross the triangle's third edge keep all their corners). A sliver then costs about as
    many points as its area needs, not as its longest edge squared. Triangles outside the grid
    mark its border cells (the nearest ones), which only ever lowers the distances
    ``coarse_distance`` derives.  # [R, R, R] bool, indexed [x, y, z]"""
    corners = vertices[faces]  # [F, 3, 3]
    length = (corners.roll(-1, 1) - corners).norm(dim=-1)  # [F, 3]: edge k joins corners k and k + 1
    longest, shortest = length.argmax(-1), length.argmin(-1)
    shortest = torch.where(shortest == longest, (longest + 1) % 3, shortest)  # all sides equal
    shared = torch.where(shortest == (longest + 1) % 3, (longest + 1) % 3, longest)  # the corner both edges touch
    far_end = torch.where(shared == longest, (longest + 1) % 3, longest)  # the longest edge's other corner
    rows = torch.arange(faces.shape[0])
    origin = corners[rows, shared]
    u = corners[rows, far_end] - origin  # along the longest edge
    v = corners[rows, 3 - shared - far_end] - origin  # along the shortest
    h = float(step.min())
    nu = torch.ceil(u.norm(dim=-1) / h).long().clamp_min(1)
    nv = torch.ceil(v.norm(dim=-1) / h).long().clamp_min(1)
    marked = torch.zeros(res**3, dtype=torch.bool)
    pairs, group, count = torch.unique(torch.stack([nu, nv], -1), dim=0, return_inverse=True, return_counts=True)
    by_group = torch.argsort(group, stable=True).split(count.tolist())  # the triangles of each lattice shape
    for (a, b), members in zip(pairs.tolist(), by_group):
        i, j = torch.meshgrid(torch.arange(a + 1), torch.arange(b + 1), indexing="ij")
        keep = (i - 1) * b + (j - 1) * a <= a * b  # corners of the cells that reach the triangle
        su, sv = i[keep].float() / a, j[keep].float() / b  # [P]
        per_chunk = max(1, LATTICE_CHUNK // su.numel())
        for k in range(0, members.numel(), per_chunk):
            m = members[k:k + per_chunk]
            points = (origin[m, None] + su[None, :, None] * u[m, None] + sv[None, :, None] * v[m, None]).reshape(-1, 3)
            ijk = torch.floor((points - lo) / step).long().clamp(0, res - 1)
            marked[(ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2]] = True
    return marked.reshape(res, res, res)


def coarse_distance(surface: np.ndarray, step: np.ndarray) -> np.ndarray:
    """A lower bound of the distance from each cell centre to the surface, given the cells
    ``surface_cells`` marks: ``k - 1.5`` times the smallest cell size, ``k`` the chessboard
    distance in cells to the nearest marked cell (a surface point is within one cell of a marked
    one, so at least ``k - 1`` cells away along some axis, and a cell centre half a cell more).

    A lower bound is all the volumetric view needs: it picks the points near enough to the
    surface to search exactly (never fewer than exact distances would), and far from the
    surface only its sign counts. Exact Euclidean transforms took 8.4 s on lego's mesh at 256^3
    (and 11.7 s for a cube filling its box), a chessboard one about a second.  # [R, R, R] float32"""
    from scipy import ndimage

    cell = float(step.min())
    if not surface.any():
        return np.full(surface.shape, max(surface.shape) * cell, dtype=np.float32)
    cells = ndimage.distance_transform_cdt(~surface, metric="chessboard")
    return (np.maximum(cells - 1.5, 0.0) * cell).astype(np.float32)


def near_cells(mask: np.ndarray, reach: int) -> np.ndarray:
    """Cells within ``reach`` cells (chessboard) of a cell of ``mask``, those included.  # [R, R, R] bool"""
    from scipy import ndimage

    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return ndimage.distance_transform_cdt(~mask, metric="chessboard") <= reach


def closed_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces of the pieces without a border: every edge of the piece is shared by an even
    number of its faces (two, or four where surfaces touch). Vertices at the same position
    count as one, as files split them at UV seams.  # [F] bool"""
    from radistill.fields.meshing import face_pieces

    _, weld = np.unique(vertices, axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces]
    edges = np.sort(np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2), 1)
    _, edge, count = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    bordered = (count[edge.reshape(-1)] % 2 == 1).reshape(-1, 3).any(1)
    piece = face_pieces(f, int(weld.max()) + 1)
    return ~np.isin(piece, piece[bordered])


def parity_inside(vertices: Tensor, faces: Tensor, lo: Tensor, step: Tensor, res: int) -> Tensor:
    """Cells of a ``res``^3 grid inside a closed mesh, by ray parity along x, y and z and a
    majority vote (two of three).  # [R, R, R] bool, indexed [x, y, z]"""
    votes = torch.zeros(res, res, res, dtype=torch.int8)
    if faces.shape[0] == 0:
        return votes > 0
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
