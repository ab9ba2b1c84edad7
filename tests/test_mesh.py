"""The mesh kind: volumetric view, extraction from a density, files, bad input, conversions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.nn.functional import normalize as F_normalize

from radistill.errors import ConfigError, DatasetError
from radistill.fields.base import FieldOutputs, Representation, render_volumetric
from radistill.fields import meshing
from radistill.fields.mesh import MeshConfig, MeshField
from radistill.fields.mesh_volume import (closest_point_barycentrics, coarse_distance, parity_inside,
                                          surface_cells)
from radistill.io.mesh import MeshFileWarning, is_mesh_file, load_mesh, ply_has_faces, save_mesh


class Ball(Representation):
    """A density that is 50 inside a ball of radius 0.5, coloured by position: an analytic field
    (the teacher of the extraction tests), volume-rendered through the contract."""

    kind = "ball"

    def __init__(self, radius=0.5, center=(0.0, 0.0, 0.0)) -> None:
        super().__init__(None, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        self.radius = radius
        self.register_buffer("center", torch.tensor(center))

    def density(self, x):
        return 50.0 * ((x - self.center).norm(dim=-1) < self.radius).float()

    def query(self, x, d):
        return FieldOutputs(self.density(x), (x * 0.5 + 0.5).clamp(0, 1))

    def render(self, rays, background=None, **options):
        return render_volumetric(self, rays, 256, background)


def cube(half=0.5):
    """A closed unit cube, triangles wound counter-clockwise seen from outside."""
    v = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [[a, b, c], [a, c, d]]
    return v, torch.tensor(faces)


def cube_sdf(x, half=0.5):
    """Signed distance to the cube, positive inside."""
    q = x.abs() - half
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.max(-1).values.clamp_max(0)
    return -(outside + inside)


def test_cube_is_wound_outwards():
    v, f = cube()
    c = v[f]
    volume = (torch.linalg.cross(c[:, 0], c[:, 1]) * c[:, 2]).sum() / 6
    assert torch.isclose(volume, torch.tensor(1.0))


def test_closest_point_on_triangles_matches_dense_sampling():
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 3, 3, generator=g, dtype=torch.float64)
    p = torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 0.5
    bary = closest_point_barycentrics(p, corners)
    best = ((bary[..., None] * corners).sum(1) - p).norm(dim=-1)
    n = 120
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = i + j <= n
    u, v = (i[keep] / n).double(), (j[keep] / n).double()
    grid = torch.stack([1 - u - v, u, v], -1)  # [S, 3]
    pts = torch.einsum("sk,fkd->fsd", grid, corners)
    dense = (pts - p[:, None]).norm(dim=-1).min(-1).values
    assert bool((best <= dense + 1e-6).all())
    assert torch.allclose(best, dense, atol=2e-2)
    assert torch.allclose(bary.sum(-1), torch.ones(200, dtype=torch.float64))


def test_parity_fills_the_inside_of_a_closed_mesh_even_with_a_hole():
    v, f = cube(0.5)
    lo, res = torch.tensor([-1.0, -1.0, -1.0]), 20
    step = torch.full((3,), 2.0 / res)
    centres = lo + (torch.arange(res) + 0.5)[:, None] * step  # per axis
    x, y, z = torch.meshgrid(centres[:, 0], centres[:, 1], centres[:, 2], indexing="ij")
    truth = (x.abs() < 0.5) & (y.abs() < 0.5) & (z.abs() < 0.5)
    assert torch.equal(parity_inside(v, f, lo, step, res), truth)
    holed = parity_inside(v, f[1:], lo, step, res)  # one triangle missing: the vote keeps the inside
    assert (holed != truth).float().mean() < 0.01


def quad(corners):
    """An open square (two triangles) from its four corners in order."""
    return torch.tensor(corners, dtype=torch.float32), torch.tensor([[0, 1, 2], [0, 2, 3]])


def exact_distance(points, vertices, faces):
    """Distance from each point to the nearest point of any triangle, by brute force.  # [N]"""
    corners = vertices[faces].double()[None].expand(points.shape[0], -1, -1, -1)
    p = points.double()[:, None].expand(-1, faces.shape[0], -1)
    bary = closest_point_barycentrics(p, corners)
    return ((bary[..., None] * corners).sum(-2) - p).norm(dim=-1).min(-1).values.float()


def test_coarse_distance_is_a_lower_bound_of_the_distance_to_every_triangle_closed_or_open():
    """At every cell centre, against brute-force distances to a cube, an open square beside it
    and a sliver: never larger, and within a few cells of the truth."""
    cv, cf = cube(0.3)
    qv, qf = quad([[0.5, -0.8, -0.8], [0.5, 0.8, -0.8], [0.5, 0.8, 0.8], [0.5, -0.8, 0.8]])
    tv = torch.tensor([[-0.9, -0.9, 0.7], [0.9, -0.85, 0.75], [0.0, -0.88, 0.71]])
    vertices = torch.cat([cv, qv, tv])
    faces = torch.cat([cf, qf + 8, torch.tensor([[12, 13, 14]])])
    lo, res = torch.tensor([-1.0, -1.0, -1.0]), 32
    for step in (torch.full((3,), 2.0 / res), torch.tensor([2.0, 2.4, 2.2]) / res):
        surface = surface_cells(vertices, faces, lo, step, res)
        coarse = torch.from_numpy(coarse_distance(surface.numpy(), step.numpy())).reshape(-1)
        ijk = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
        centres = lo + (ijk + 0.5) * step
        exact = torch.cat([exact_distance(c, vertices, faces) for c in centres.split(4096)])
        cell = float(step.min())
        assert bool((coarse <= exact + 1e-5).all())
        # and not far below it: a marked cell is k cells away (coarse = (k - 1.5) cells) and holds a
        # lattice point within two cells of the surface
        assert bool((exact <= math.sqrt(3) * (coarse / cell + 2) * float(step.max()) + 2 * cell + 1e-5).all())
        assert (coarse == 0).float().mean() < 0.3  # not trivially zero
    # a triangle outside the grid marks the border cells nearest to it, not nothing
    far = surface_cells(torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.1, 0.0], [3.0, 0.0, 0.1]]), torch.tensor([[0, 1, 2]]),
                        lo, torch.full((3,), 2.0 / res), res)
    assert far[-1].any() and not far[:-1].any()


def test_an_open_surface_stops_rays_like_its_rasterised_image():
    """A lone square has no inside: it counts as a sheet one band thick, so rays crossing it are
    stopped (as the rasteriser draws it) and rays beside it pass; an open box stays hollow; a
    closed cube beside the square keeps its soft shell, a half band outside its faces."""
    qv, qf = quad([[-0.6, -0.6, 0.2], [0.6, -0.6, 0.2], [0.6, 0.6, 0.2], [-0.6, 0.6, 0.2]])
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    config = MeshConfig(occupancy_resolution=64, band=1.0)
    sheet = MeshField.from_arrays(qv, qf, aabb=aabb, config=config)
    band = 2.0 / 64
    x = torch.tensor([[0.1, -0.2, 0.2], [0.1, -0.2, 0.2 + 0.5 * band], [0.3, 0.1, 0.2 - band], [0.3, 0.1, 0.2 - 2 * band],
                      [0.8, 0.0, 0.2]])
    sigma = sheet.density(x)
    expected = torch.tensor([4 / band, 2 / band, 0.0, 0.0, 0.0])
    assert torch.allclose(sigma, expected, atol=1e-3 / band)
    # head-on and slanted rays through it are stopped; a ray beside it is not
    from radistill.cameras import Rays

    origins = torch.tensor([[0.0, 0.0, 1.0], [0.3, 0.0, 1.0], [0.9, 0.0, 1.0]])
    dirs = F_normalize(torch.tensor([[0.0, 0.0, -1.0], [-0.3, 0.1, -1.0], [0.0, 0.0, -1.0]]))
    rays = Rays(origins, dirs, dirs, torch.full((3,), 0.05), torch.full((3,), 3.0))
    opacity = sheet.render(rays).opacity
    assert bool((opacity[:2] > 0.95).all()) and float(opacity[2]) < 1e-4
    # a box without its lid: parity would fill it (rays along x and y cross two walls); as an
    # open piece it stays hollow, and a ray down through the open top stops at the floor
    bv, bf = cube(0.25)
    box = MeshField.from_arrays(bv, bf[:10], aabb=aabb, config=config)
    assert not box.volume().inside.any()
    down = Rays(torch.tensor([[0.0, 0.05, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.0, -1.0]]),
                torch.tensor([0.05]), torch.tensor([3.0]))
    out = box.render(down)
    assert float(out.opacity[0]) > 0.95 and abs(float(out.depth[0]) - 1.25) < 2 * band
    # with a closed cube in the mesh, its faces keep the closed rule
    cv, cf = cube(0.25)
    both = MeshField.from_arrays(torch.cat([qv, cv - torch.tensor([0.0, 0.0, 0.6])]), torch.cat([qf, cf + 4]),
                                 aabb=aabb, config=config)
    y = torch.tensor([[0.0, 0.05, -0.35 + 0.25 * band], [0.0, 0.05, -0.35 - 0.25 * band], [0.1, -0.2, 0.2]])
    assert torch.allclose(both.density(y), torch.tensor([4 / band * 0.25, 4 / band * 0.75, 4 / band]), atol=1e-3 / band)


def test_query_density_follows_the_signed_distance_and_colour_the_nearest_surface():
    v, f = cube(0.5)
    colors = torch.tensor([[1.0, 0, 0] if p[0] > 0 else [0.0, 0, 1] for p in v])
    mesh = MeshField.from_arrays(v, f, vertex_colors=colors, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                                 config=MeshConfig(occupancy_resolution=64, band=1.0))
    band = 2.0 / 64
    g = torch.Generator().manual_seed(1)
    x = torch.rand(500, 3, generator=g) * 1.6 - 0.8
    out = mesh.query(x, torch.zeros_like(x))
    sdf = cube_sdf(x)
    expected = 4 / band * (sdf / band + 0.5).clamp(0, 1)
    near = sdf.abs() < 6 * band
    assert torch.allclose(out.sigma[near], expected[near], rtol=1e-3, atol=1e-3)
    assert torch.equal(out.sigma[~near] == 0, sdf[~near] < 0)  # far away: empty outside, full inside
    assert torch.allclose(out.sigma[~near & (sdf > 0)], torch.full_like(out.sigma[~near & (sdf > 0)], 4 / band))
    # points just outside the +x face see red, just outside -x blue
    px = torch.tensor([[0.55, 0.1, -0.2], [-0.55, 0.0, 0.3]])
    rgb = mesh.query(px, torch.zeros_like(px)).rgb
    assert torch.allclose(rgb, torch.tensor([[1.0, 0, 0], [0.0, 0, 1]]), atol=1e-5)
    assert torch.allclose(mesh.density(x), out.sigma)


def test_a_students_occupancy_holds_every_cell_a_thin_slab_crosses():
    """A closed slab a sixth of a student's cell thick: jittered samples of its density miss
    cells it crosses, the mesh's bound over each cell finds all of them, and only cells near it."""
    from radistill.fields.hashgrid import HashGridConfig, HashGridField

    z, half = 0.03, 0.01  # inside a layer of the student's cells (0.125 wide), not on a boundary
    v, f = cube(0.5)
    v = v * torch.tensor([1.2, 1.2, 2 * half]) + torch.tensor([0.0, 0.0, z])  # 1.2 x 1.2 x 0.02
    slab = MeshField.from_arrays(v, f, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    student = HashGridField.from_teacher(slab, HashGridConfig(occupancy_resolution=16))
    centres = student.occupancy.cell_centers()
    cell = 2.0 / 16
    crossed = ((centres[:, 2] - z).abs() < cell / 2) & (centres[:, :2].abs() < 0.6).all(-1)
    near = ((centres[:, 2] - z).abs() < 2 * cell) & (centres[:, :2].abs() < 0.6 + 2 * cell).all(-1)
    occupied = student.occupancy.occupied
    assert crossed.sum() == 100 and occupied[crossed].all() and not occupied[~near].any()
    sampled = HashGridField(HashGridConfig(occupancy_resolution=16), slab.aabb)
    for _ in range(4):  # what four jittered samples of the density find
        sampled.occupancy.update(slab.visible_density, sampled.step_size, decay=1.0,
                                 generator=torch.Generator().manual_seed(0))
    assert not sampled.occupancy.occupied[crossed].all()
    with pytest.raises(NotImplementedError, match="does not bound its density"):
        student.max_density_near(centres[:2], 0.1)


def test_volume_render_of_the_cube_is_opaque_where_rays_hit_it():
    from radistill.cameras import Rays

    v, f = cube(0.5)
    mesh = MeshField.from_arrays(v, f, aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                                 config=MeshConfig(occupancy_resolution=64))
    o = torch.tensor([[0.0, 0.0, 3.0], [0.8, 0.8, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    out = mesh.render(Rays(o, d, d, torch.zeros(2), torch.full((2,), 6.0)), torch.ones(3))
    assert out.opacity[0] > 0.99 and out.opacity[1] < 1e-3
    assert abs(float(out.depth[0]) - 2.5) < 0.05  # the surface at z = 0.5


def test_extraction_finds_the_ball_surface_wound_outwards_and_drops_floaters():
    ball = Ball(0.5)
    grid = meshing.density_grid(ball, 64)
    level = 25.0
    v, f = meshing.extract_surface(grid, ball.aabb, level)
    r = v.norm(dim=-1)
    assert abs(float(r.mean()) - 0.5) < 2.0 / 63 and float((r - 0.5).abs().max()) < 2.0 / 63
    c = v[f]
    volume = float((torch.linalg.cross(c[:, 0], c[:, 1]) * c[:, 2]).sum() / 6)
    assert abs(volume - 4 / 3 * math.pi * 0.125) < 0.05
    # a second, tiny ball is a floater
    v2, f2 = meshing.extract_surface(meshing.density_grid(Ball(0.05, (0.8, 0.8, 0.8)), 64), ball.aabb, level)
    both_v, both_f = torch.cat([v, v2]), torch.cat([f, f2 + v.shape[0]])
    kept_v, kept_f = meshing.drop_small_pieces(both_v, both_f, 0.05)
    assert kept_f.shape[0] == f.shape[0] and float(kept_v.norm(dim=-1).max()) < 0.6


def test_seeds_of_a_scene_small_in_the_views_come_from_more_rounds_of_rays():
    """A ball that fills about 2% of each view: the first round of rays (8 per seed, spread over
    the views) finds too few opaque ones, so more rounds of the same views follow until the
    seeds asked for are found, all on the ball's surface, long before every pixel is rendered."""
    from radistill.fields.seeding import RAYS_PER_SEED, around_aabb_cameras, seed_points

    ball = Ball(0.25)
    cams = around_aabb_cameras(ball.aabb, 16, 64, torch.Generator().manual_seed(0))
    rendered = []
    render = ball.render
    ball.render = lambda rays, *a, **k: rendered.append(len(rays)) or render(rays, *a, **k)
    n = 200
    points, rgb = seed_points(ball, n, torch.Generator().manual_seed(0), cams)
    assert points.shape == (n, 3) and rgb.shape == (n, 3)
    assert ((points.norm(dim=-1) - 0.25).abs() < 0.03).all()
    per_view = RAYS_PER_SEED * n // 16
    assert sum(rendered) > RAYS_PER_SEED * n and sum(rendered) % (16 * per_view) == 0  # whole rounds
    assert sum(rendered) < 16 * 64 * 64 // 2
    # one view holds fewer opaque pixels than seeds asked for: each of its pixels is rendered
    # once, and the seeds there are come back
    rendered.clear()
    few, _ = seed_points(ball, n, torch.Generator().manual_seed(0), cams[:1])
    assert 0 < len(few) < n and sum(rendered) == 64 * 64


def test_a_level_without_surface_is_a_clear_error():
    grid = meshing.density_grid(Ball(), 16)
    with pytest.raises(ConfigError, match="no surface.*outside the range"):
        meshing.extract_surface(grid, torch.tensor([[-1.0] * 3, [1.0] * 3]), 1e6)
    with pytest.raises(ConfigError, match="no surface.*outside the range"):
        MeshField.from_teacher(Ball(), MeshConfig(resolution=16, level=1e6))


def test_an_automatic_level_outside_the_densities_falls_back_to_their_middle_with_a_warning():
    grid = meshing.density_grid(Ball(), 16)  # 0 outside the ball, 50 inside
    assert meshing.level_in_range(grid, 25.0) == 25.0
    with pytest.warns(RuntimeWarning, match="automatic surface level 60 is outside .* extracting at 25 instead"):
        assert meshing.level_in_range(grid, 60.0) == pytest.approx(25.0)
    with pytest.warns(RuntimeWarning, match="no clear surface"):
        assert meshing.level_in_range(grid, -1.0) == pytest.approx(25.0)


def test_the_automatic_level_lies_between_empty_space_and_the_surface():
    """The ball's density is 50 inside: rays reach half opacity inside it, so the level is 25."""
    assert meshing.surface_level(Ball()) == pytest.approx(25.0)


def test_from_teacher_gives_a_textured_ball_coloured_by_the_teacher():
    mesh = MeshField.from_teacher(Ball(), MeshConfig(resolution=48, texture_size=64, max_faces=2000))
    assert mesh.textured and 0 < mesh.faces.shape[0] <= 2100
    # every surface point's texture colour is the teacher's colour there (x * 0.5 + 0.5)
    g = torch.Generator().manual_seed(0)
    tri = torch.randint(mesh.faces.shape[0], (300,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3)).sample((300,))
    x = (bary[..., None] * mesh.vertices.detach()[mesh.faces[tri]]).sum(1)
    error = (mesh.surface_color(tri, bary) - (x * 0.5 + 0.5)).abs().amax(-1).detach()
    # a few points at chart borders of this tiny atlas get a neighbour's colour; baking fixes those
    assert float(error.median()) < 0.005 and float(error.quantile(0.9)) < 0.02


def textured_quad_mesh(texture_hw=(37, 53)):
    v = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.8]])
    f = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [0, 2, 1], [0, 3, 2]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]])
    uv_faces = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [5, 5, 5], [5, 5, 5]])
    tex = torch.rand(*texture_hw, 3, generator=torch.Generator().manual_seed(3))
    return MeshField.from_arrays(v, f, uvs, uv_faces, tex)


def views(n=3, resolution=40):
    from radistill.cameras import orbit_poses, pinhole_cameras

    return pinhole_cameras(orbit_poses(n, 4.0, 35.0), resolution)


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_textured_files_round_trip_with_odd_texture_sizes(tmp_path, suffix):
    mesh = textured_quad_mesh((37, 53))
    path = save_mesh(tmp_path / f"m{suffix}", mesh)
    back = load_mesh(path)
    assert back.textured and back.texture.shape == (37, 53, 3)
    assert torch.allclose(back.texture, mesh.texture.detach(), atol=0.5 / 255 + 1e-6)  # 8-bit PNG
    # same surface: the same set of triangles by position
    tri = {tuple(sorted(map(tuple, mesh.vertices.detach()[f].tolist()))) for f in mesh.faces}
    tri_back = {tuple(sorted(map(tuple, back.vertices.detach()[f].tolist()))) for f in back.faces}
    assert tri == tri_back
    cams = views()
    for k in range(3):
        a = mesh.render_image(cams, k, torch.ones(3))["rgb"]
        b = back.render_image(cams, k, torch.ones(3))["rgb"]
        assert (a - b).abs().max() < 2.0 / 255


def test_glb_is_valid_gltf_with_metallic_roughness_and_unlit_material(tmp_path):
    import pygltflib
    import trimesh

    mesh = textured_quad_mesh()
    path = save_mesh(tmp_path / "m.glb", mesh)
    gltf = pygltflib.GLTF2().load(str(path))
    material = gltf.materials[0]
    assert material.pbrMetallicRoughness.baseColorTexture.index == 0
    assert material.pbrMetallicRoughness.metallicFactor == 0.0
    assert material.pbrMetallicRoughness.roughnessFactor == 1.0
    assert "KHR_materials_unlit" in material.extensions and "KHR_materials_unlit" in gltf.extensionsUsed
    prim = gltf.meshes[0].primitives[0]
    assert prim.attributes.TEXCOORD_0 is not None and prim.attributes.NORMAL is not None
    pos = gltf.accessors[prim.attributes.POSITION]
    assert np.allclose(pos.min, mesh.vertices.detach().amin(0).tolist())
    scene = trimesh.load(path)
    assert sum(len(g.faces) for g in scene.geometry.values()) == mesh.faces.shape[0]


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_vertex_coloured_meshes_round_trip(tmp_path, suffix):
    v, f = cube()
    colors = torch.rand(8, 3, generator=torch.Generator().manual_seed(2))
    mesh = MeshField.from_arrays(v, f, vertex_colors=colors)
    back = load_mesh(save_mesh(tmp_path / f"c{suffix}", mesh))
    assert not back.textured
    order = [int(torch.nonzero((back.vertices.detach() == p).all(-1))[0]) for p in v]
    assert torch.allclose(back.vertex_colors.detach()[order], colors, atol=1.5 / 255)


def test_checkpoint_round_trip_is_exact(tmp_path):
    from radistill.io.checkpoint import load_field, save_field

    mesh = textured_quad_mesh((9, 12))
    back = load_field(save_field(tmp_path / "m.safetensors", mesh))
    for name in ("vertices", "faces", "uvs", "uv_faces", "texture", "vertex_colors"):
        assert torch.equal(getattr(back, name), getattr(mesh, name)), name
    cams = views(1)
    assert torch.equal(back.render_image(cams, 0)["rgb"], mesh.render_image(cams, 0)["rgb"])


def test_bad_meshes_give_clear_errors_or_documented_fallbacks(tmp_path):
    v, f = cube()
    with pytest.raises(ConfigError, match="empty"):
        MeshField.from_arrays(v, f[:0])
    with pytest.raises(ConfigError, match="outside 0..7"):
        MeshField.from_arrays(v, torch.tensor([[0, 1, 8]]))
    with pytest.raises(ConfigError, match="NaN"):
        MeshField.from_arrays(torch.where(torch.arange(8)[:, None] == 2, float("nan"), v), f)
    with pytest.raises(ConfigError, match="needs UVs"):
        MeshField.from_arrays(v, f, texture=torch.rand(4, 4, 3))
    # files: empty, garbage, no colours (grey fallback), degenerate faces (dropped with a count)
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(DatasetError, match="empty.obj"):
        load_mesh(tmp_path / "empty.obj")
    (tmp_path / "junk.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(DatasetError, match="junk.glb"):
        load_mesh(tmp_path / "junk.glb")
    with pytest.raises(DatasetError, match="no such"):
        load_mesh(tmp_path / "missing.obj")
    lines = [f"v {x} {y} {z}" for x, y, z in v.tolist()] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f.tolist()]
    (tmp_path / "plain.obj").write_text("\n".join(lines + ["f 1 1 2"]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = load_mesh(tmp_path / "plain.obj")
    messages = [str(w.message) for w in caught if issubclass(w.category, MeshFileWarning)]
    assert any("no colours" in m for m in messages)
    assert any("dropped 1 degenerate faces" in m for m in messages)
    assert plain.faces.shape[0] == 12 and torch.allclose(plain.vertex_colors, torch.full((8, 3), 0.7))


def test_non_manifold_meshes_render_and_answer_queries():
    """Three triangles on one edge (a 'book'): drawn, and the volumetric view still answers."""
    v = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.0], [0.6, 0.0, 0.0], [-0.5, 0.0, 0.3], [0.0, 0.0, -0.6]])
    f = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    mesh = MeshField.from_arrays(v, f, config=MeshConfig(occupancy_resolution=32))
    img = mesh.render_image(views(1), 0, torch.ones(3))
    assert img["opacity"].sum() > 10
    out = mesh.query(torch.tensor([[0.3, 0.0, 0.0], [0.9, 0.9, 0.9]]), torch.zeros(2, 3))
    assert out.sigma[0] > out.sigma[1] and torch.isfinite(out.rgb).all()


def test_ply_faces_decide_between_mesh_and_gaussians(tmp_path):
    import trimesh

    v, f = cube()
    path = tmp_path / "cube.ply"
    trimesh.Trimesh(v.numpy(), f.numpy(), process=False).export(path)
    assert ply_has_faces(path) and is_mesh_file(path)
    from radistill.distill.teachers import FieldTeacher

    assert FieldTeacher.from_checkpoint(path).kind == "mesh"


@pytest.mark.slow
def test_conversion_to_a_mesh_bakes_the_texture_and_back_to_a_field(tiny_teacher, tmp_path):
    """hashgrid -> mesh (.glb) improves the texture over its start; the .glb converts back."""
    from radistill.conversion import ConvertConfig, compare_on_views, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    options = {"resolution": 64, "texture_size": 128, "max_faces": 5000}
    start = MeshField.from_teacher(teacher.field, MeshConfig(**options))
    before = compare_on_views(start, teacher, 4)["psnr_vs_teacher"]
    cfg = ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 150)), progress=False, report_views=4)
    result = convert(tiny_teacher, "mesh", cfg, student_options=options, output=tmp_path / "scene.glb")
    assert result.path == tmp_path / "scene.glb" and result.path.is_file()
    after = compare_on_views(result.student, teacher, 4)["psnr_vs_teacher"]
    assert after > before + 0.5
    assert (tmp_path / "scene_convert" / "mesh.safetensors").is_file()
    mesh_teacher = FieldTeacher.from_checkpoint(tmp_path / "scene.glb")
    back = convert(mesh_teacher, "hashgrid",
                   ConvertConfig(distill=DistillConfig(stage_steps=(0, 30, 60)), progress=False, report_views=4))
    assert back.report["from"] == "mesh"
    fresh = compare_on_views(back.student.__class__(back.student.config, back.student.aabb), mesh_teacher, 4)
    assert back.report["psnr_vs_teacher"] > fresh["psnr_vs_teacher"] + 3


def test_cli_refuses_training_a_mesh_a_glb_output_for_a_field_and_a_broken_mesh(tiny_teacher, tmp_path, capsys):
    from conftest import run_cli_here

    def run_cli(*args):
        return run_cli_here(capsys, *args)

    out = run_cli("train", "--kind", "mesh", "--output", tmp_path / "t")
    assert out.returncode == 2 and "radistill convert FIELD --to mesh" in out.stderr
    out = run_cli("convert", tiny_teacher, "--to", "mlp", "--output", tmp_path / "x.glb")
    assert out.returncode == 2 and "x.glb: a .glb file holds a mesh scene" in out.stderr
    (tmp_path / "broken.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 7\n")
    out = run_cli("convert", tmp_path / "broken.obj", "--to", "hashgrid", "--output", tmp_path / "o")
    assert out.returncode == 2 and "broken.obj" in out.stderr and "Traceback" not in out.stderr


def test_a_mesh_teaches_log_density_at_its_own_scale_of_the_weight(monkeypatch):
    """The same step with the mesh's density_loss_scale (0.1) and with 1: the density loss
    scales with it, the colour loss does not."""
    from radistill.distill.objectives import DistillConfig, DistillObjective
    from radistill.distill.teachers import FieldTeacher
    from radistill.fields.hashgrid import HashGridConfig, HashGridField

    v, f = cube(0.5)
    mesh = MeshField.from_arrays(v, f, vertex_colors=(v + 0.5).clamp(0, 1), aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]),
                                 config=MeshConfig(occupancy_resolution=64))
    student = HashGridField.from_teacher(mesh, HashGridConfig(log2_table=12, max_resolution=64))

    def parts():
        config = DistillConfig(stage_steps=(0, 1, 0))
        objective = DistillObjective(FieldTeacher(mesh), config, torch.Generator().manual_seed(0))
        return objective.step(student, 256, 0, 0.5, torch.Generator().manual_seed(1)).parts

    scaled = parts()
    monkeypatch.setattr(MeshField, "density_loss_scale", 1.0)
    plain = parts()
    assert scaled["density"] > 0 and scaled["density"] == pytest.approx(0.1 * plain["density"], rel=1e-5)
    assert scaled["color"] == pytest.approx(plain["color"], rel=1e-6)


def test_a_short_conversion_of_a_mesh_renders_only_the_views_its_stage_3_can_use():
    """Stage 3 mixes the mesh's own renders in: about as many as its photo rays cover once (at
    least 4), all 64 when the time alone ends the run."""
    from radistill.conversion import ConvertConfig, rendered_view_count
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher
    from radistill.fields.hashgrid import HashGridField

    v, f = cube(0.5)
    teacher = FieldTeacher(MeshField.from_arrays(v, f))
    pixels = teacher.cameras.width * teacher.cameras.height

    def count(steps, seconds=None, batch=None):
        distill = DistillConfig(stage_steps=steps).for_student(HashGridField, seconds)
        return rendered_view_count(teacher, ConvertConfig(distill=distill, max_seconds=seconds, batch_rays=batch), 1024)

    assert count((5, 5, 10)) == 4  # 2,560 photo rays: less than one view
    assert count((0, 0, 400), batch=4096) == math.ceil(400 * 1024 / pixels)
    assert count(None) == min(64, math.ceil(2000 * 256 / pixels))  # the kind's own steps
    assert count(None, seconds=60) == 64


@pytest.mark.slow
def test_cli_converts_an_obj_mesh_to_a_field(tmp_path):
    from conftest import run_cli

    from radistill.io.checkpoint import load_field

    v, f = cube(0.5)
    colors = (v + 0.5).clamp(0, 1)
    save_mesh(tmp_path / "cube.obj", MeshField.from_arrays(v, f, vertex_colors=colors))
    out = run_cli("convert", tmp_path / "cube.obj", "--to", "hashgrid", "--output", tmp_path / "back",
                  "--stage-steps", "5", "5", "10", "--report-views", "0", "--set", "log2_table=12", "max_resolution=64")
    assert out.returncode == 0, out.stderr
    assert load_field(tmp_path / "back" / "hashgrid.safetensors").kind == "hashgrid"


@pytest.mark.slow
def test_every_kind_converts_to_and_from_a_mesh(tiny_teacher, tmp_path):
    """The pipeline runs between the mesh and every other kind: after a few steps each student
    shows the scene where the mesh does (silhouette IoU)."""
    from radistill.conversion import ConvertConfig, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher

    few = ConvertConfig(distill=DistillConfig(stage_steps=(0, 10, 20)), progress=False, report_views=2)
    mesh_options = {"resolution": 48, "texture_size": 64, "max_faces": 3000}
    mesh = convert(tiny_teacher, "mesh", few, mesh_options).student
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    mesh_teacher = FieldTeacher(mesh, teacher.cameras, teacher.background)
    cams = teacher.views(teacher.sample_poses(1, torch.Generator().manual_seed(5)))
    with torch.no_grad():
        covered = mesh.render_image(cams, 0, teacher.background)["opacity"] > 0.5
    small = {"mlp": {}, "tensorf-vm": {"final_resolution": 48}, "tensorf-cp": {"final_resolution": 48, "density_components": 96, "app_components": 288},
             "gaussians": {"initial_gaussians": 2000, "sh_degree": 0}}
    steps = {"tensorf-cp": ConvertConfig(distill=DistillConfig(stage_steps=(0, 40, 80)), progress=False,
                                         report_views=2)}  # the slowest learner of the kinds
    for kind, options in small.items():
        student = convert(mesh_teacher, kind, steps.get(kind, few), options).student
        with torch.no_grad():
            shown = student.render_image(cams, 0, teacher.background)["opacity"] > 0.5
        iou = float((shown & covered).sum() / (shown | covered).sum())
        assert iou > 0.5, (kind, iou)
        if kind == "gaussians":  # and back: Gaussians -> mesh
            gauss_teacher = FieldTeacher(student, teacher.cameras, teacher.background)
            again = convert(gauss_teacher, "mesh", few, mesh_options).student
            with torch.no_grad():
                shown = again.render_image(cams, 0, teacher.background)["opacity"] > 0.5
            iou = float((shown & covered).sum() / (shown | covered).sum())
            assert iou > 0.5



@pytest.mark.slow
def test_an_interrupted_mesh_conversion_resumes_exactly(tiny_teacher, tmp_path, monkeypatch):
    """Ctrl-C during baking, then --resume: the texture and vertices equal an uninterrupted run's."""
    from conftest import assert_same_state, interrupt_and_resume

    from radistill.conversion import ConvertConfig, convert
    from radistill.distill.active import ActiveConfig
    from radistill.distill.objectives import DistillConfig

    config = ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 16), active=ActiveConfig(view_pool=8,
                                                                                             refresh_every=5)),
                           checkpoint_every=0, progress=False, report_views=0)
    options = {"resolution": 40, "texture_size": 32, "max_faces": 1500}
    whole = convert(tiny_teacher, "mesh", config, options, output=tmp_path / "whole").student

    resumed = interrupt_and_resume(monkeypatch, MeshField, 11, lambda resume: convert(
        tiny_teacher, "mesh", config, options, output=tmp_path / "split", resume=resume))
    assert resumed.train.steps == 16 and all(h["step"] > 9 for h in resumed.train.history)
    assert_same_state(whole, resumed.student)
