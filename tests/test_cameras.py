import math

import pytest
import torch

from radistill.cameras import NDC, Cameras, LikeCamerasSampler, Similarity, SphereSampler, look_at, ndc_rays, orbit_poses


def make_cams(c2w: torch.Tensor, w: int = 40, h: int = 30, f: float = 35.0) -> Cameras:
    return Cameras(c2w, torch.tensor(f), torch.tensor(f * 1.1), torch.tensor(w / 2 + 1.5), torch.tensor(h / 2 - 2.0), w, h)


def test_rays_project_back_to_their_pixels():
    c2w = look_at(torch.tensor([[2.0, -3.0, 1.5]]), torch.zeros(3))
    cams = make_cams(c2w)
    px, py = torch.tensor([0.5, 17.25, 39.5]), torch.tensor([0.5, 12.0, 29.5])
    rays = cams.rays_for_pixels(torch.zeros(3, dtype=torch.long), px, py)
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(3))
    points = rays.origins + 2.7 * rays.directions
    w2c = torch.linalg.inv(c2w[0])
    cam_pts = (w2c[:3, :3] @ points.T).T + w2c[:3, 3]
    assert (cam_pts[:, 2] < 0).all(), "OpenGL cameras look down -z"
    u = cams.fx[0] * cam_pts[:, 0] / -cam_pts[:, 2] + cams.cx[0]
    v = -cams.fy[0] * cam_pts[:, 1] / -cam_pts[:, 2] + cams.cy[0]
    assert torch.allclose(u, px, atol=1e-4) and torch.allclose(v, py, atol=1e-4)


def test_look_at_centre_ray_hits_target_and_is_rigid():
    eye = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])  # the second looks straight down +z's opposite
    c2w = look_at(eye, torch.tensor([0.5, -0.2, 0.1]))
    for m in c2w:
        r = m[:3, :3]
        assert torch.allclose(r.T @ r, torch.eye(3), atol=1e-5)
        assert torch.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    forward = -c2w[:, :3, 2]
    to_target = torch.tensor([0.5, -0.2, 0.1]) - eye
    assert torch.allclose(forward, to_target / to_target.norm(dim=-1, keepdim=True), atol=1e-5)


def test_ndc_rays_follow_the_ndc_map_of_their_points():
    ndc = NDC(focal=50.0, width=64, height=48, near=1.0)
    o = torch.tensor([[0.1, -0.2, 0.3]])
    d = torch.nn.functional.normalize(torch.tensor([[0.05, 0.1, -1.0]]), dim=-1)
    o_ndc, d_ndc = ndc_rays(o, d, ndc)

    def to_ndc(p):
        return torch.stack([-2 * ndc.focal / ndc.width * p[:, 0] / p[:, 2], -2 * ndc.focal / ndc.height * p[:, 1] / p[:, 2],
                            1 + 2 * ndc.near / p[:, 2]], -1)

    for s in (1.5, 4.0, 20.0):
        p_ndc = to_ndc(o + s * d)
        # the NDC point must lie on the NDC ray: p = o_ndc + t d_ndc for some t in [0, 1]
        t = (p_ndc[0, 2] - o_ndc[0, 2]) / d_ndc[0, 2]
        assert 0 <= float(t) <= 1
        assert torch.allclose(o_ndc + t * d_ndc, p_ndc, atol=1e-5)


def test_sphere_sampler_respects_radius_and_hemisphere():
    poses = SphereSampler(radius=3.0, hemisphere=True).sample(200, torch.Generator().manual_seed(1))
    centers = poses[:, :3, 3]
    assert torch.allclose(centers.norm(dim=-1), torch.full((200,), 3.0), atol=1e-4)
    assert (centers[:, 2] >= 0).all()
    forward = -poses[:, :3, 2]
    assert torch.allclose(forward, -centers / 3.0, atol=1e-4)


def test_like_cameras_sampler_draws_from_the_camera_distribution():
    cams = make_cams(orbit_poses(30, radius=4.0, elevation_deg=20.0))
    poses = LikeCamerasSampler(cams, jitter_radius=0.02, jitter_angle_deg=3.0).sample(500, torch.Generator().manual_seed(0))
    r = poses[:, :3, 3].norm(dim=-1)
    elev = torch.rad2deg(torch.asin(poses[:, 2, 3] / r))
    assert abs(float(r.mean()) - 4.0) < 0.05 and float(r.std()) < 0.2
    assert abs(float(elev.mean()) - 20.0) < 1.0 and float(elev.std()) < 6.0


def test_perturbed_copies_of_perturbed_copies_stay_where_the_cameras_are():
    """Pose-level active learning perturbs the worst views again and again; chains of
    perturbations must not wander below the ground or towards the object."""
    cams = make_cams(orbit_poses(30, radius=4.0, elevation_deg=20.0))
    sampler = LikeCamerasSampler(cams, jitter_radius=0.05, jitter_angle_deg=10.0)
    r_min, r_max, el_min, el_max = sampler.bounds()
    assert (r_min, r_max) == pytest.approx((4.0 * 0.9, 4.0 * 1.1), rel=1e-4)
    assert (math.degrees(el_min), math.degrees(el_max)) == pytest.approx((0.0, 40.0), abs=1e-3)
    generator = torch.Generator().manual_seed(0)
    poses = sampler.sample(64, generator)
    first = sampler.perturb(poses, generator)
    assert float((first[:, :3, 3] - poses[:, :3, 3]).norm(dim=-1).min()) > 0  # each copy moved
    for _ in range(300):
        poses = sampler.perturb(poses, generator)
    r = poses[:, :3, 3].norm(dim=-1)
    elev = torch.asin(poses[:, 2, 3] / r)
    assert float(r.min()) >= r_min - 1e-4 and float(r.max()) <= r_max + 1e-4
    assert float(elev.min()) >= el_min - 1e-4 and float(elev.max()) <= el_max + 1e-4
    # they still spread over the allowed range rather than piling up at one end
    assert float(elev.max() - elev.min()) > 0.5 * (el_max - el_min)

def test_perturbed_forward_facing_copies_stay_near_the_cameras():
    """The same for forward-facing (NDC) captures: copies keep the orientation and stay
    within the box of the camera centres widened by their spread."""
    c2w = torch.eye(4).repeat(9, 1, 1)
    c2w[:, 0, 3] = torch.linspace(-0.3, 0.3, 9)
    c2w[:, 1, 3] = torch.linspace(-0.1, 0.1, 9).flip(0)
    cams = make_cams(c2w)
    cams.ndc = NDC(focal=35.0, width=40, height=30)
    sampler = LikeCamerasSampler(cams)
    generator = torch.Generator().manual_seed(0)
    poses = sampler.sample(64, generator)
    spread = cams.centers.std(dim=0)
    lo, hi = cams.centers.min(0).values - spread, cams.centers.max(0).values + spread
    for _ in range(300):
        poses = sampler.perturb(poses, generator)
    centers = poses[:, :3, 3]
    assert bool((centers >= lo - 1e-6).all()) and bool((centers <= hi + 1e-6).all())
    assert torch.allclose(poses[:, :3, :3], torch.eye(3).expand(64, 3, 3))
    assert float(centers[:, 0].max() - centers[:, 0].min()) > 0.5 * float(hi[0] - lo[0])  # still spread out



def test_like_cameras_sampler_finds_the_point_the_cameras_look_at():
    from radistill.cameras import look_at_point

    target = torch.tensor([0.3, -0.2, 0.5])
    cams = make_cams(orbit_poses(12, radius=3.0, elevation_deg=25.0, center=tuple(target.tolist())))
    assert torch.allclose(look_at_point(cams.c2w), target, atol=1e-4)
    poses = LikeCamerasSampler(cams, jitter_radius=0.0, jitter_angle_deg=5.0).sample(50, torch.Generator().manual_seed(2))
    to_target = torch.nn.functional.normalize(target - poses[:, :3, 3], dim=-1)
    assert torch.allclose(-poses[:, :3, 2], to_target, atol=1e-4)


def test_cameras_dict_round_trip_and_scaling():
    cams = make_cams(orbit_poses(3, 2.0))
    back = Cameras.from_dict(cams.to_dict())
    assert torch.allclose(back.c2w, cams.c2w) and back.width == cams.width and torch.allclose(back.fy, cams.fy)
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (20, 15)
    assert torch.allclose(half.fx, cams.fx / 2)
    # the same scene point lands on the same relative image position
    r_full = cams.rays_for_pixels(torch.tensor([1]), torch.tensor([10.0]), torch.tensor([6.0]))
    r_half = half.rays_for_pixels(torch.tensor([1]), torch.tensor([5.0]), torch.tensor([3.0]))
    assert torch.allclose(r_full.directions, r_half.directions, atol=1e-5)


def random_similarity() -> Similarity:
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    return Similarity(q * torch.sign(torch.det(q)), torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64), 0.37)


def test_similarity_maps_points_directions_and_cameras_consistently():
    move = random_similarity()
    p = torch.randn(20, 3, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    r, t, s = move.rotation, move.translation, move.scale
    torch.testing.assert_close(move.points(p), s * (p @ r.T + t))
    torch.testing.assert_close(move.inverse().points(move.points(p)), p)
    torch.testing.assert_close(move.inverse().inverse().points(p), move.points(p))
    # a direction moves like the difference of two points, up to the scale; it stays unit
    torch.testing.assert_close(move.points(p + d) - move.points(p), s * move.directions(d))
    torch.testing.assert_close(move.directions(d).norm(dim=-1), torch.ones(20, dtype=torch.float64))
    # a moved camera sees a moved point where the camera saw the point, scaled by s
    c2w = look_at(torch.tensor([[2.0, 1.0, 3.0]]), torch.zeros(1, 3)).double()
    moved = move.c2w(c2w[:, :3])  # 3x4 in, 4x4 out
    in_camera = (p - c2w[0, :3, 3]) @ c2w[0, :3, :3]
    torch.testing.assert_close((move.points(p) - moved[0, :3, 3]) @ moved[0, :3, :3], s * in_camera)
    torch.testing.assert_close(moved[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert move.points(p.float()).dtype == torch.float32  # follows its input


def test_bad_c2w_shape_is_a_clear_error():
    from radistill.errors import ConfigError

    with pytest.raises(ConfigError, match="c2w"):
        make_cams(torch.zeros(2, 2, 4))


def test_orbit_poses_are_evenly_spaced():
    poses = orbit_poses(8, 3.0, elevation_deg=0.0)
    az = torch.atan2(poses[:, 1, 3], poses[:, 0, 3])
    diffs = torch.remainder(az.diff(), 2 * math.pi)
    assert torch.allclose(diffs, torch.full_like(diffs, 2 * math.pi / 8), atol=1e-5)


def test_turntable_paths():
    from radistill.turntable import turntable_cameras

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    train = make_cams(orbit_poses(10, radius=3.0, elevation_deg=40.0))
    orbit = turntable_cameras(train, aabb, frames=12, elevation_deg=30.0, width=20)
    assert len(orbit) == 12 and orbit.width == 20 and orbit.height == 15
    assert torch.allclose(orbit.centers.norm(dim=-1), torch.full((12,), 3.0), atol=1e-4)
    assert torch.allclose(orbit.centers[:, 2], torch.full((12,), 3.0 * math.sin(math.radians(30))), atol=1e-4)
    # forward-facing captures: a circle in the mean camera's image plane, keeping its orientation
    ff = make_cams(torch.eye(4).repeat(5, 1, 1))
    ff.c2w[:, 0, 3] = torch.linspace(-0.2, 0.2, 5)
    ff.ndc = NDC(focal=35.0, width=40, height=30)
    path = turntable_cameras(ff, aabb, frames=8)
    assert torch.allclose(path.c2w[:, :3, :3], torch.eye(3).expand(8, 3, 3), atol=1e-5)
    assert torch.allclose(path.centers[:, 2], torch.zeros(8), atol=1e-6)
    radius = path.centers[:, :2].norm(dim=-1)
    assert torch.allclose(radius, radius[:1].expand(8), atol=1e-5) and float(radius[0]) > 0
