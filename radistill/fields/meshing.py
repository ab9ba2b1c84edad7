"""From a teacher's density to a clean textured mesh: the steps of ``MeshField.from_teacher``.

1. ``density_grid``: the teacher's visible density on a regular grid over its aabb;
2. ``extract_surface``: marching cubes (scikit-image) at a density level (``surface_level``
   picks one from the teacher's renders);
3. ``drop_small_pieces``: connected pieces with few faces (floaters) are removed;
4. ``decimate``: quadric decimation (fast-simplification) down to a face budget;
5. ``uv_atlas``: a UV atlas (xatlas);
6. ``initial_texture``: each texel takes the teacher's colour at its point on the surface, and
   unused texels are filled from their neighbours so bilinear lookups never see black.

The distill engine then bakes the texture by fitting renders to the teacher's renders.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from radistill.errors import ConfigError
from radistill.render.raster import cover


def density_grid(field, resolution: int, chunk: int = 262144) -> Tensor:
    """``field.visible_density`` at the ``resolution``^3 points of a grid spanning its aabb
    (corners included).  # [R, R, R] indexed [x, y, z]"""
    lo, hi = field.aabb[0].detach(), field.aabb[1].detach()
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=lo.device) for i in range(3)]
    out = torch.empty(resolution**3)
    with torch.no_grad():
        for i in range(0, resolution**3, chunk):
            idx = torch.arange(i, min(i + chunk, resolution**3), device=lo.device)
            x = torch.stack([axes[0][idx // resolution**2], axes[1][(idx // resolution) % resolution],
                             axes[2][idx % resolution]], -1)
            out[i:i + idx.numel()] = field.visible_density(x).float().cpu()
    return out.reshape(resolution, resolution, resolution)


def surface_level(field, views=None, points: int = 20000, scale: float = 0.5) -> float:
    """``scale`` times the median density of ``field`` at the points where the rays of ``views``
    (default: views all around its aabb) reach half their opacity: a density level between the
    empty space and the surfaces its renders show, whatever the field's density scale."""
    from radistill.fields.seeding import seed_points

    surface, _ = seed_points(field, points, torch.Generator().manual_seed(0), views)
    if surface.shape[0] == 0:
        raise ConfigError(f"no surface: the {getattr(field, 'kind', 'teacher')} renders nothing opaque from its views")
    with torch.no_grad():
        density = field.visible_density(surface.to(field.aabb.device)).float().cpu()
    return scale * float(density.median())


def level_in_range(grid: Tensor, level: float) -> float:
    """The automatic ``level`` if the grid's densities cross it, else the middle of their range,
    with a warning: a teacher that shows no clear surface (too little training, say) still
    gives a mesh, whose renders then tell what is wrong."""
    lo_v, hi_v = float(grid.min()), float(grid.max())
    if lo_v < level < hi_v or not lo_v < hi_v:
        return level
    middle = 0.5 * (lo_v + hi_v)
    warnings.warn(f"the automatic surface level {level:.4g} is outside the teacher's density range [{lo_v:.4g}, "
                  f"{hi_v:.4g}]: it shows no clear surface (is it trained?); extracting at {middle:.4g} instead",
                  RuntimeWarning, stacklevel=2)
    return middle


def extract_surface(grid: Tensor, aabb: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Marching cubes on ``grid`` (values at the corners of the grid over ``aabb``) at ``level``:
    vertices [V, 3] in world units and faces [F, 3], wound counter-clockwise seen from outside."""
    from skimage.measure import marching_cubes

    lo_v, hi_v = float(grid.min()), float(grid.max())
    if not lo_v < level < hi_v:
        raise ConfigError(f"no surface: the density level {level:.4g} is outside the range of the teacher's density "
                          f"[{lo_v:.4g}, {hi_v:.4g}]; choose another level")
    res = torch.tensor(grid.shape, dtype=torch.float32)
    spacing = ((aabb[1] - aabb[0]).detach().cpu() / (res - 1)).tolist()
    verts, faces, _, _ = marching_cubes(grid.numpy(), level, spacing=tuple(spacing), allow_degenerate=False)
    verts = torch.from_numpy(verts.astype(np.float32)) + aabb[0].detach().cpu()
    faces = torch.from_numpy(faces.astype(np.int64))
    # scikit-image winds its triangles clockwise seen from the low side's opposite; flip to CCW outward
    return verts, faces[:, [0, 2, 1]]


def drop_small_pieces(vertices: Tensor, faces: Tensor, min_fraction: float) -> tuple[Tensor, Tensor]:
    """Remove connected pieces with fewer than ``min_fraction`` of all faces (and unused vertices)."""
    if faces.shape[0] == 0 or min_fraction <= 0:
        return compact(vertices, faces)
    face_label = torch.from_numpy(face_pieces(faces.numpy(), vertices.shape[0]))
    sizes = torch.bincount(face_label)
    keep = sizes[face_label] >= min_fraction * faces.shape[0]
    keep |= face_label == int(torch.argmax(sizes))  # never remove everything
    return compact(vertices, faces[keep])


def face_pieces(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """The connected piece of each face (faces sharing a vertex are in one piece).  # [F] int"""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n_vertices, n_vertices))
    _, label = connected_components(graph, directed=False)
    return label[faces[:, 0]].astype(np.int64)


def compact(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Drop vertices no face uses, renumbering the faces."""
    used, inverse = torch.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3)


def decimate(vertices: Tensor, faces: Tensor, max_faces: int) -> tuple[Tensor, Tensor]:
    """Quadric decimation down to about ``max_faces`` faces (no change when already below)."""
    if max_faces <= 0 or faces.shape[0] <= max_faces:
        return vertices, faces
    import fast_simplification

    v, f = fast_simplification.simplify(vertices.numpy().astype(np.float32), faces.numpy().astype(np.int64),
                                        target_reduction=1.0 - max_faces / faces.shape[0])
    return compact(torch.from_numpy(np.asarray(v, dtype=np.float32)), torch.from_numpy(np.asarray(f, dtype=np.int64)))


def uv_atlas(vertices: Tensor, faces: Tensor, texture_size: int, padding: int = 2) -> tuple[Tensor, Tensor]:
    """A UV atlas (xatlas) for ``texture_size``^2 texels: UVs [U, 2] in [0, 1] (``v`` down) and
    the UV index of each triangle corner [F, 3], in the order of ``faces``."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.numpy().astype(np.float32), faces.numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    vmapping = torch.from_numpy(vmapping.astype(np.int64))
    indices = torch.from_numpy(indices.astype(np.int64))
    if not torch.equal(vmapping[indices], faces):
        raise RuntimeError("xatlas reordered the faces; cannot pair UVs with triangles")
    return torch.from_numpy(uvs.astype(np.float32)), indices


def texel_points(vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor, height: int, width: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """The texels an atlas uses, with their surface points and the triangle's unit normal.
    Returns texel index ``row * width + col`` [P], points [P, 3], normals [P, 3]."""
    tri2d = uvs[uv_faces] * torch.tensor([float(width), float(height)])
    pix, tri, bary = cover(tri2d, width, height)
    corners = vertices[faces[tri]]
    points = (bary[..., None] * corners).sum(1)
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return pix, points, normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def initial_texture(field, vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor, size: int,
                    chunk: int = 65536) -> Tensor:
    """Each used texel gets ``field``'s colour at its surface point, looked at along the inward
    normal; the others are filled from their neighbours (``fill_empty``).  # [size, size, 3]"""
    pix, points, normals = texel_points(vertices, faces, uvs, uv_faces, size, size)
    color = torch.zeros(size * size, 3)
    device = field.aabb.device
    with torch.no_grad():
        for i in range(0, pix.numel(), chunk):
            out = field.query(points[i:i + chunk].to(device), -normals[i:i + chunk].to(device))
            color[pix[i:i + chunk]] = out.rgb.float().cpu().clamp(0, 1)
    used = torch.zeros(size * size, dtype=torch.bool)
    used[pix] = True
    return fill_empty(color.reshape(size, size, 3), used.reshape(size, size))


def fill_empty(texture: Tensor, used: Tensor, rounds: int = 64) -> Tensor:
    """Give unused texels the mean of their used neighbours, growing outwards ``rounds`` times;
    whatever is left gets the mean colour.  # [H, W, 3]"""
    img = texture.permute(2, 0, 1)[None].clone()
    mask = used[None, None].float()
    kernel = torch.ones(1, 1, 3, 3)
    for _ in range(rounds):
        if bool(mask.all()):
            break
        total = F.conv2d(img * mask, kernel.repeat(3, 1, 1, 1), padding=1, groups=3)
        count = F.conv2d(mask, kernel, padding=1)
        grow = (mask == 0) & (count > 0)
        img = torch.where(grow, total / count.clamp_min(1), img)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    if not bool(mask.all()):
        mean = (img * mask).sum((2, 3), keepdim=True) / mask.sum().clamp_min(1)
        img = torch.where(mask > 0, img, mean.expand_as(img))
    return img[0].permute(1, 2, 0).contiguous()
