"""The ``gaussians`` kind: its volumetric view, files, densification, and conversions both ways."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import assert_same_state, interrupt_and_resume, run_cli

from radistill.errors import ConfigError
from radistill.fields.gaussian_volume import GaussianVolume, precision_matrices
from radistill.fields.gaussians import GaussiansConfig, GaussiansField
from radistill.fields.sh import sh_basis
from radistill.io.checkpoint import load_field, save_field
from radistill.io.ply import load_gaussians, read_gaussian_ply, save_gaussians
from radistill.render.volume import Samples, composite

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def random_field(n: int = 50, degree: int = 1, seed: int = 0, big: int = 3) -> GaussiansField:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    log_scales = torch.log(torch.rand(n, 3, generator=g) * 0.1 + 0.02)
    log_scales[:big] = math.log(0.8)  # a few Gaussians larger than the finest index cells
    return GaussiansField.from_params((torch.rand(n, 3, generator=g) * 2 - 1) * 0.7, torch.randn(n, 4, generator=g),
                                      log_scales, torch.randn(n, generator=g), torch.randn(n, k, 3, generator=g) * 0.3,
                                      AABB)


def brute_force_density(field: GaussiansField, x, d):
    """Every Gaussian at every point, by the formula of ``gaussian_volume``."""
    prec = precision_matrices(field.quats, field.volume_log_scales())  # widened by the 3D low-pass
    diff = x[:, None, :] - field.means[None]  # [N, G, 3]
    m = torch.einsum("ngi,gij,ngj->ng", diff, prec, diff)
    kernel = torch.where(m <= 9, torch.exp(-0.5 * m), torch.zeros_like(m))
    tau = -torch.log1p(-field.opacities.clamp(max=0.99))
    inv_extent = torch.einsum("ni,gij,nj->ng", d, prec, d).sqrt()
    dens = tau * inv_extent * kernel / math.sqrt(2 * math.pi)  # [N, G]
    basis = sh_basis(d, field.config.sh_degree)
    colours = ((basis[:, None, :, None] * field.sh[None]).sum(2) + 0.5).clamp_min(0)  # [N, G, 3]
    return dens.sum(1), (dens[..., None] * colours).sum(1) / dens.sum(1, keepdim=True).clamp_min(1e-12)


def test_query_with_the_index_equals_every_gaussian_at_every_point_values_and_gradients():
    field = random_field()
    x = (torch.rand(300, 3) * 2 - 1) * 0.9
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    out = field.query(x, d)
    ref_sigma, ref_rgb = brute_force_density(field, x, d)
    assert (out.sigma > 0).float().mean() > 0.3  # the points do meet Gaussians
    assert torch.allclose(out.sigma, ref_sigma, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out.rgb, ref_rgb.clamp(0, 1), atol=1e-5)
    up = torch.randn(300)
    params = [field.means, field.log_scales, field.quats, field.logit_opacities]
    grads = torch.autograd.grad((out.sigma * up).sum(), params)
    ref = torch.autograd.grad((ref_sigma * up).sum(), params)
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("direction", [(0.0, 0.0, 1.0), (0.6, -0.48, 0.64)])
def test_a_ray_through_a_lone_gaussians_centre_gets_its_opacity(direction):
    quat = torch.nn.functional.normalize(torch.tensor([[0.9, 0.3, -0.2, 0.1]]), dim=-1)
    field = GaussiansField.from_params(torch.zeros(1, 3), quat, torch.log(torch.tensor([[0.05, 0.2, 0.01]])),
                                       torch.logit(torch.tensor([0.7])), torch.zeros(1, 1, 3), AABB)
    d = torch.tensor([direction])
    t = torch.linspace(-1.5, 1.5, 6001)
    x = t[:, None] * d
    out = field.query(x, d.expand_as(x))
    samples = Samples(torch.zeros(t.numel(), dtype=torch.long), torch.arange(t.numel()), t,
                      torch.full_like(t, float(t[1] - t[0])), x, 1, t.numel())
    opacity = composite(out.sigma, out.rgb, samples, early_stop=0.0).opacity
    kept = math.erf(3 / math.sqrt(2))  # the 3-sigma cut keeps 99.73% of the optical depth
    assert opacity.item() == pytest.approx(1 - (1 - 0.7) ** kept, abs=1e-4)


def test_density_without_direction_bounds_every_direction():
    field = random_field(big=0)
    x = (torch.rand(200, 3) * 2 - 1) * 0.7
    top = field.density(x)
    for _ in range(3):
        d = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
        assert (field.query(x, d).sigma <= top + 1e-5).all()


def test_index_levels_hold_each_gaussian_once_at_its_finest_fitting_level():
    field = random_field(200)
    vol = GaussianVolume.build(field.means.detach(), field.quats.detach(), field.scales.detach(), AABB)
    listed = torch.cat([torch.unique(level.members) for level in vol.levels])
    assert torch.equal(torch.sort(listed).values, torch.arange(200))
    assert vol.levels[0].resolution == 64 and vol.levels[-1].resolution < 64  # the large ones sit coarser


def test_checkpoint_and_ply_round_trips_are_exact(tmp_path):
    field = random_field(30, degree=3)
    back = load_field(save_field(tmp_path / "g.safetensors", field))
    assert isinstance(back, GaussiansField) and len(back) == 30
    for name in ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN"):
        assert torch.equal(getattr(back, name), getattr(field, name))
    ply = save_gaussians(tmp_path / "g.ply", field)
    umask = os.umask(0)
    os.umask(umask)
    assert ply.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file (not mkstemp's 0600): a web viewer can read it
    arrays = read_gaussian_ply(ply)
    assert arrays.sh_degree == 3 and torch.equal(arrays.sh, field.sh.detach())
    again = load_gaussians(ply)
    assert torch.equal(again.means, field.means) and torch.equal(again.sh, field.sh)


def test_donut_imports_renders_and_round_trips(shared_data, tmp_path):
    from radistill.distill.teachers import default_cameras

    field = load_gaussians(shared_data / "splats" / "donut_fused.ply")
    assert len(field) == 45624 and field.config.sh_degree == 0
    cams = default_cameras(field.aabb, resolution=48)
    with torch.no_grad():
        img = field.render_image(cams, 0, torch.ones(3))
    # the donut fills the middle of the frame and leaves the corners to the background
    assert img["opacity"][20:28, 20:28].mean() > 0.95 and img["opacity"][:4, :4].max() < 0.05
    back = load_gaussians(save_gaussians(tmp_path / "donut.ply", field))
    for name in ("means", "quats", "log_scales", "logit_opacities", "sh0"):
        assert torch.equal(getattr(back, name), getattr(field, name))


def test_densify_clones_small_splits_large_prunes_transparent_and_keeps_adam_state():
    field = GaussiansField.from_params(torch.zeros(4, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
                                       torch.log(torch.tensor([[0.001] * 3, [0.3] * 3, [0.001] * 3, [0.001] * 3])),
                                       torch.logit(torch.tensor([0.5, 0.5, 0.5, 0.001])), torch.zeros(4, 1, 3), AABB)
    opt = torch.optim.Adam([{"params": [p]} for p in (field.means, field.log_scales, field.quats,
                                                      field.logit_opacities, field.sh0, field.shN)])
    field.means.grad = torch.ones(4, 3)
    for g in opt.param_groups[1:]:
        g["params"][0].grad = torch.zeros_like(g["params"][0])
    opt.step()
    field.grad_sum = torch.tensor([1.0, 1.0, 0.0, 0.0])  # rows 0 and 1 have large screen gradients
    field.grad_count = torch.ones(4)
    stats = field.densify_and_prune(torch.Generator().manual_seed(0))
    assert stats == {"cloned": 1, "split": 1, "pruned": 1, "gaussians": 5}  # keep 0, 2; clone 0; split 1 in two
    assert torch.allclose(field.scales[-2:], torch.full((2, 3), 0.3 / 1.6))
    new = torch.optim.Adam([{"params": [p]} for p in (field.means, field.log_scales, field.quats,
                                                      field.logit_opacities, field.sh0, field.shN)])
    field.carry_optimizer_state(opt, new)
    moments = new.state[field.means]["exp_avg"]
    assert torch.allclose(moments[:2], opt.state[opt.param_groups[0]["params"][0]]["exp_avg"][[0, 2]])
    assert (moments[2:] == 0).all()


def test_seeds_lie_where_the_teacher_is_dense(tiny_teacher):
    from radistill.distill.teachers import FieldTeacher

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    views = teacher.views(teacher.sample_poses(8, torch.Generator().manual_seed(0)))
    rendered = []
    render = teacher.field.render
    teacher.field.render = lambda rays, *a, **k: rendered.append(len(rays)) or render(rays, *a, **k)
    field = GaussiansField.from_teacher(teacher.field, GaussiansConfig(initial_gaussians=500, sh_degree=1), views)
    assert 0 < len(field) <= 500
    # 8 rays a seed, spread evenly over the views, when the views hold more pixels than that
    assert views.width * views.height * 8 > 8 * 500 and sum(rendered) == 8 * 500
    with torch.no_grad():
        at_seeds = teacher.field.density(field.means).median()
        anywhere = teacher.field.density(torch.rand(500, 3) * 2 - 1).median()
    assert at_seeds > 10 * anywhere


def test_initial_scales_are_the_mean_distance_to_the_three_nearest_other_seeds():
    from radistill.fields.gaussians import nearest_spacing

    g = torch.Generator().manual_seed(3)
    points = torch.rand(300, 3, generator=g)
    points[7] = points[8]  # twins: each other's nearest neighbour at distance 0
    d = torch.linalg.norm(points[:, None, :].double() - points[None, :, :].double(), dim=-1)
    d.fill_diagonal_(float("inf"))
    expected = d.topk(3, largest=False).values.mean(-1)
    spacing = nearest_spacing(points, 3)
    assert spacing.dtype == points.dtype
    torch.testing.assert_close(spacing.double(), expected, rtol=1e-6, atol=1e-7)
    assert float(spacing[7]) == pytest.approx(float(expected[7])) and float(d[7, 8]) == 0.0
    # fewer points than neighbours asked for: the mean over those there are; a lone point gets 0.01
    three = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    torch.testing.assert_close(nearest_spacing(three, 3), torch.tensor([2.0, (1 + 10**0.5) / 2, (3 + 10**0.5) / 2]))
    torch.testing.assert_close(nearest_spacing(three[:1], 3), torch.tensor([0.01]))
    assert nearest_spacing(three[:0], 3).shape == (0,)


def test_a_lone_seed_does_not_start_as_a_blob_over_the_scene():
    """A teacher with a dense cluster and a few small Gaussians far from it: seeded sparsely (200
    seeds), a lone Gaussian's seed is far from every other seed, and uncapped it would start as a
    Gaussian as wide as that distance."""
    from radistill.distill.teachers import default_cameras
    from radistill.metrics import psnr

    g = torch.Generator().manual_seed(0)
    cluster = torch.nn.functional.normalize(torch.randn(600, 3, generator=g), dim=-1) * 0.3
    lone = torch.tensor([[0.8, 0.8, 0.0], [-0.8, 0.0, 0.8], [0.0, -0.8, -0.8]])  # small: a few rays each
    means = torch.cat([cluster, lone])
    n = means.shape[0]
    sh = torch.zeros(n, 1, 3)
    sh[:, 0] = torch.tensor([0.4, -0.3, 0.1])
    teacher = GaussiansField.from_params(means, torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
                                         torch.cat([torch.full((600, 3), math.log(0.04)), torch.full((3, 3), math.log(0.012))]),
                                         torch.full((n,), 4.0), sh,
                                         AABB, GaussiansConfig(sh_degree=0))
    views = default_cameras(AABB, resolution=48)
    white = torch.ones(3)

    def seeded(cap: float) -> tuple[GaussiansField, float]:
        field = GaussiansField.from_teacher(teacher, GaussiansConfig(sh_degree=0, initial_gaussians=200,
                                                                     initial_scale_cap=cap), views,
                                            torch.Generator().manual_seed(1))
        with torch.no_grad():
            score = sum(psnr(field.render_image(views, k, white)["rgb"].clamp(0, 1),
                             teacher.render_image(views, k, white)["rgb"].clamp(0, 1)) for k in range(4)) / 4
        return field, float(score)

    capped, capped_psnr = seeded(GaussiansConfig().initial_scale_cap)
    uncapped, uncapped_psnr = seeded(math.inf)
    near_lone = torch.cdist(capped.means, lone).min(1).values < 0.1
    assert near_lone.any()  # the lone Gaussians were seen and seeded
    spacing = uncapped.scales[:, 0]
    assert spacing[near_lone].max() > 5 * spacing.median()  # uncapped, a seed far from the rest starts wide
    assert torch.allclose(capped.scales[:, 0].max(), spacing.median() * GaussiansConfig().initial_scale_cap)
    assert capped_psnr > uncapped_psnr + 1.0
    with pytest.raises(ConfigError, match="initial_scale_cap must be positive"):
        GaussiansConfig(initial_scale_cap=0)


@pytest.mark.slow
def test_conversion_into_gaussians_and_back_improves_on_the_start(tiny_teacher, tmp_path):
    from radistill.conversion import ConvertConfig, compare_on_views, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    options = {"initial_gaussians": 1500, "sh_degree": 1}
    start = GaussiansField.from_teacher(teacher.field, GaussiansConfig(**options),
                                        teacher.views(teacher.sample_poses(32, torch.Generator().manual_seed(0))))
    before = compare_on_views(start, teacher, 4)["psnr_vs_teacher"]
    cfg = ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 150)), progress=False, report_views=4)
    result = convert(teacher, "gaussians", cfg, options, output=tmp_path / "scene.ply")
    assert result.path == tmp_path / "scene.ply" and len(read_gaussian_ply(result.path)) == len(result.student)
    assert result.report["psnr_vs_teacher"] > before + 3
    # and back: a hashgrid learns the Gaussians from their rasterised renders
    gauss_teacher = FieldTeacher(result.student, teacher.cameras, teacher.background)
    back = convert(gauss_teacher, "hashgrid", ConvertConfig(distill=DistillConfig(stage_steps=(30, 30, 90)),
                                                            progress=False, report_views=4),
                   {"log2_table": 12, "max_resolution": 64, "samples_per_ray": 64})
    fresh = compare_on_views(back.student.__class__(back.student.config, back.student.aabb), gauss_teacher, 4)
    assert back.report["psnr_vs_teacher"] > fresh["psnr_vs_teacher"] + 3



@pytest.fixture(scope="module")
def tiny_gaussians(tiny_teacher):
    """The tiny hashgrid teacher as a small Gaussian scene (a conversion teacher of its own)."""
    from radistill.conversion import ConvertConfig, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    cfg = ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 80)), progress=False, report_views=0)
    scene = convert(teacher, "gaussians", cfg, {"initial_gaussians": 1000, "sh_degree": 1}).student
    return FieldTeacher(scene, teacher.cameras, teacher.background)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlp", "tensorf-vm", "tensorf-cp"])
def test_gaussians_convert_to_and_from_every_other_neural_kind(tiny_gaussians, kind):
    """Gaussians -> ``kind`` from the Gaussians' renders, then that field -> Gaussians through
    its point answers: each student ends closer to its teacher than where it started."""
    from radistill.conversion import ConvertConfig, compare_on_views, convert
    from radistill.distill.objectives import DistillConfig
    from radistill.distill.teachers import FieldTeacher
    from radistill.fields import create_field

    grid = {"resolution": 48, "final_resolution": 48, "density_components": 8, "app_components": 24, "samples_per_ray": 64}
    small = {"mlp": {"width": 64, "depth": 3, "samples_per_ray": 64}, "tensorf-vm": grid, "tensorf-cp": grid}[kind]
    torch.manual_seed(0)
    fresh = compare_on_views(create_field(kind, tiny_gaussians.field.aabb, **small), tiny_gaussians, 3)
    field = convert(tiny_gaussians, kind, ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 60)), progress=False,
                                                        report_views=3), small)
    assert field.student.kind == kind
    assert field.report["psnr_vs_teacher"] > fresh["psnr_vs_teacher"] + 5
    neural = FieldTeacher(field.student, tiny_gaussians.cameras, tiny_gaussians.background)
    options = GaussiansConfig(initial_gaussians=600, sh_degree=0)
    start = GaussiansField.from_teacher(neural.field, options, neural.views(neural.sample_poses(16, torch.Generator().manual_seed(0))))
    before = compare_on_views(start, neural, 3)["psnr_vs_teacher"]
    back = convert(neural, "gaussians", ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 40)), progress=False,
                                                      report_views=3), {"initial_gaussians": 600, "sh_degree": 0})
    assert back.student.kind == "gaussians" and back.report["psnr_vs_teacher"] > before + 5


def test_a_gaussian_teacher_teaches_by_its_renders_not_its_volumetric_view(monkeypatch):
    from radistill.distill.objectives import DistillConfig, DistillObjective
    from radistill.distill.teachers import FieldTeacher, default_cameras
    from radistill.fields import create_field

    field = random_field(n=200, degree=1)
    teacher = FieldTeacher(field, default_cameras(AABB, resolution=24))
    assert teacher.teaches_by_renders
    student = create_field("hashgrid", AABB, log2_table=12, max_resolution=32, samples_per_ray=32)
    g = torch.Generator().manual_seed(0)
    objective = DistillObjective(teacher, DistillConfig(stage_steps=(10, 10, 10)), g)
    # the colour of every drawn ray is the teacher's rasterised colour of that pixel of that view
    state = g.get_state()
    rays, view, slots, rgb = objective._draw_rays(64, g)
    _, view2, px, py = objective.views.sample_pixels(64, torch.Generator().set_state(state))
    assert slots.numel() == 0 and torch.equal(view, view2)
    with torch.no_grad():
        images = [field.render_image(teacher.views(objective.views.c2w[v:v + 1]), 0, teacher.background)["rgb"]
                  for v in view.tolist()]
    expected = torch.stack([im[y, x] for im, x, y in zip(images, px.tolist(), py.tolist())])
    assert torch.allclose(rgb, expected.clamp(0, 1), atol=1e-6)
    cams = teacher.views(objective.views.c2w)
    centres = cams.rays_for_pixels(view, px.float() + 0.5, py.float() + 0.5)
    assert torch.allclose(rays.directions, centres.directions) and torch.allclose(rays.origins, centres.origins)
    # from the first step on, the student renders against those colours; the volumetric view is never asked
    monkeypatch.setattr(type(field), "query", lambda *a: pytest.fail("the volumetric view was queried"))
    loss = objective.step(student, 64, 0, 0.0, g)
    assert loss.stage == 3 and set(loss.parts) == {"rgb"}
    # hard rays keep their colours: pool rays come back with the colour they were drawn with
    taken, slots, taken_rgb = objective.hard_rays.take(16, g)
    assert slots.numel() == 16 and torch.equal(taken_rgb, objective.hard_rays.rgb[slots])
    assert float(objective.hard_rays.rgb.sum()) > 0


@pytest.mark.slow
def test_cli_converts_a_ply_scene_and_exports_one(tiny_teacher, tmp_path):
    ply = tmp_path / "scene.ply"
    out = run_cli("convert", tiny_teacher, "--to", "gaussians", "--output", ply, "--stage-steps", "0", "0", "20",
                  "--report-views", "1", "--set", "initial_gaussians=400", "sh_degree=0")
    assert out.returncode == 0, out.stderr
    assert len(read_gaussian_ply(ply)) > 0 and (tmp_path / "scene_convert" / "report.json").exists()
    out = run_cli("convert", ply, "--to", "hashgrid", "--output", tmp_path / "back", "--stage-steps", "5", "5", "10",
                  "--report-views", "0", "--set", "log2_table=12", "max_resolution=64")
    assert out.returncode == 0, out.stderr
    assert isinstance(load_field(tmp_path / "back" / "hashgrid.safetensors"), torch.nn.Module)


def test_cli_rejects_a_ply_output_for_a_field_a_broken_ply_and_training_gaussians(tiny_teacher, tmp_path, capsys):
    from conftest import run_cli_here

    def run_cli(*args):
        return run_cli_here(capsys, *args)

    out = run_cli("train", "--kind", "gaussians", "--output", tmp_path / "t")
    assert out.returncode == 2 and "radistill convert FIELD --to gaussians" in out.stderr
    out = run_cli("convert", tiny_teacher, "--to", "mlp", "--output", tmp_path / "x.ply")
    assert out.returncode == 2 and "x.ply: a .ply file holds a gaussians scene" in out.stderr
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n")
    out = run_cli("convert", bad, "--to", "hashgrid", "--output", tmp_path / "o")
    assert out.returncode == 2 and "bad.ply" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_densification_runs_in_a_conversion_and_resume_across_it_is_exact(tiny_teacher, tmp_path, monkeypatch):
    from radistill.conversion import ConvertConfig, convert
    from radistill.distill.active import ActiveConfig
    from radistill.distill.objectives import DistillConfig

    config = ConvertConfig(distill=DistillConfig(stage_steps=(0, 0, 24), active=ActiveConfig(view_pool=8, refresh_every=7)),
                           checkpoint_every=0, progress=False, report_views=0)
    options = {"initial_gaussians": 300, "sh_degree": 1, "densify_every": 5, "densify_start": 0.0,
               "densify_stop": 1.0, "grow_grad2d": 1e-5}
    whole = convert(tiny_teacher, "gaussians", config, options, output=tmp_path / "whole").student
    assert len(whole) > 300  # screen-space gradients reached the densifier and Gaussians grew

    # Ctrl-C in step 17, after densifications at steps 5, 10 and 15
    resumed = interrupt_and_resume(monkeypatch, GaussiansField, 17, lambda resume: convert(
        tiny_teacher, "gaussians", config, options, output=tmp_path / "split", resume=resume))
    assert resumed.train.steps == 24 and all(h["step"] > 16 for h in resumed.train.history)
    assert_same_state(whole, resumed.student)


def test_scenes_made_elsewhere_keep_3dgs_low_pass_and_fitted_ones_radistills(tmp_path, tiny_teacher):
    """A lone, point-like Gaussian on a pixel centre spreads as the low-pass ``eps2d`` says:
    a neighbouring pixel gets exp(-1 / (2 eps2d)) of the centre's alpha. Scenes read from files
    (made by 3DGS, gsplat, splatfacto) are drawn with their 0.3; scenes radistill fits use 0.1,
    and their checkpoints keep it."""
    from radistill.cameras import look_at, pinhole_cameras
    from radistill.distill.teachers import FieldTeacher

    def neighbour_ratio(field):
        cams = pinhole_cameras(look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])), 9)
        alpha = field.render_image(cams, 0, torch.zeros(3))["opacity"].detach()  # the Gaussian lies on pixel (4, 4)'s centre
        return float(alpha[4, 5] / alpha[4, 4])

    lone = dict(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), log_scales=torch.full((1, 3), -12.0),
                logit_opacities=torch.tensor([3.0]), sh=torch.zeros(1, 1, 3))
    imported = GaussiansField.from_params(**lone)
    assert imported.config.eps2d == 0.3
    assert neighbour_ratio(imported) == pytest.approx(math.exp(-1 / 0.6), rel=1e-3)
    save_gaussians(tmp_path / "lone.ply", imported)
    assert load_gaussians(tmp_path / "lone.ply").config.eps2d == 0.3

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    fitted = GaussiansField.from_teacher(teacher.field, GaussiansConfig(initial_gaussians=50, sh_degree=0))
    assert fitted.config.eps2d == GaussiansConfig().eps2d == 0.1
    save_field(tmp_path / "fitted.safetensors", fitted)
    reloaded = load_field(tmp_path / "fitted.safetensors")
    assert reloaded.config.eps2d == 0.1
    one = GaussiansField.from_params(**lone, aabb=AABB, config=reloaded.config)
    assert neighbour_ratio(one) == pytest.approx(math.exp(-1 / 0.2), rel=1e-3)
