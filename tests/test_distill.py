"""Mechanics of the distill engine with a field teacher: stages, losses, active learning, resume."""

import math

import pytest
import torch

from radistill.conversion import ConvertConfig, compare_on_views, convert
from radistill.distill.active import ActiveConfig, HardRayPool, ViewPool, select_points
from radistill.distill.engine import TrainConfig, train
from radistill.distill.objectives import DistillConfig, DistillObjective, clamped_junction, log_density
from radistill.distill.teachers import FieldTeacher
from radistill.errors import ConfigError
from radistill.fields import create_field, kind_class
from radistill.fields.neural import density_activation

SMALL = {"mlp": {"width": 64, "depth": 3, "samples_per_ray": 96},
         "hashgrid": {"log2_table": 14, "max_resolution": 128, "samples_per_ray": 96},
         "tensorf-vm": {"samples_per_ray": 96, "final_resolution": 48},
         "tensorf-cp": {"samples_per_ray": 96, "final_resolution": 48}}


def student_for(teacher: FieldTeacher, kind: str):
    cls = kind_class(kind)
    torch.manual_seed(0)
    return cls.from_teacher(teacher.field, cls.Config(**SMALL[kind]))


def test_stage_boundaries_follow_the_step_counts():
    cfg = DistillConfig(stage_steps=(10, 20, 70))
    assert cfg.steps == 100
    assert [cfg.stage_at(p) for p in (0.0, 0.099, 0.1, 0.299, 0.3, 1.0)] == [1, 1, 2, 2, 3, 3]
    assert DistillConfig(stage_steps=(0, 0, 5)).stage_at(0.0) == 3


def test_unset_stage_steps_are_the_student_kinds_own():
    from radistill.fields.hashgrid import HashGridField
    from radistill.fields.mlp import MLPField

    unset = DistillConfig()
    assert unset.for_student(HashGridField).stage_steps == (400, 600, 2000)
    mlp = unset.for_student(MLPField)
    assert mlp.stage_steps == (375, 1875, 750) and mlp.stage_at(0.2) == 2 and mlp.stage_at(0.76) == 3
    timed = unset.for_student(MLPField, max_seconds=60)  # the time ends the run, the shares stay
    assert timed.steps >= 1000 * 3000 and timed.stage_at(0.2) == 2 and timed.stage_at(0.74) == 2
    assert DistillConfig(stage_steps=(1, 2, 3)).for_student(MLPField, 60).stage_steps == (1, 2, 3)
    with pytest.raises(ConfigError, match="stage_steps"):
        DistillConfig(stage_steps=(0, 0, 0))
    with pytest.raises(RuntimeError, match="for_student"):  # unsettled: no silent generic shares
        unset.stage_at(0.5)


def test_each_stage_adds_its_losses(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    student = student_for(teacher, "mlp")
    g = torch.Generator().manual_seed(0)
    objective = DistillObjective(teacher, DistillConfig(stage_steps=(1, 1, 1)), g)
    parts = {}
    for stage, progress in ((1, 0.0), (2, 0.5), (3, 0.9)):
        out = objective.step(student, 256, 1, progress, g)
        assert out.stage == stage
        parts[stage] = set(out.parts)
        out.loss.backward()
        if stage == 1:  # the junction loss never reaches the inherited decoder
            assert all(p.grad is None for p in student.decoder.parameters())
            assert math.isnan(out.psnr)
        student.zero_grad(set_to_none=True)
    assert parts == {1: {"junction"}, 2: {"junction", "density", "color"}, 3: {"junction", "density", "color", "rgb"}}


def test_density_loss_lives_in_the_shared_clamped_range():
    big, top = torch.tensor([math.exp(20.0)]), torch.tensor([math.exp(7.0)])
    assert log_density(big) == pytest.approx(7.0) and log_density(top) == pytest.approx(7.0)
    assert log_density(torch.tensor([0.0])) == pytest.approx(-2.0)
    assert log_density(torch.tensor([1.0])) == pytest.approx(0.0)
    # a student raw of 7 already matches a teacher raw of 20; features are left alone
    j_teacher = torch.tensor([[20.0] + [0.5] * 15])
    j_student = torch.tensor([[7.0] + [0.5] * 15])
    assert torch.equal(clamped_junction(j_teacher), clamped_junction(j_student))
    # and the log of the shared activation is the clamped raw value, with gradients inside the range
    raw = torch.tensor([-5.0, 0.3, 9.0], requires_grad=True)
    logs = log_density(density_activation(raw))
    assert torch.allclose(logs, torch.tensor([-2.0, 0.3, 7.0]))
    logs.sum().backward()
    assert raw.grad.tolist() == pytest.approx([0.0, 1.0, 1.0])  # the upper clamp lets descent move raw down


def test_junction_errors_are_scaled_by_the_spread_of_large_teacher_features(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    objective = DistillObjective(teacher, DistillConfig(stage_steps=(1, 1, 1)), torch.Generator().manual_seed(0))
    spread = torch.tensor([4.0, 10.0, 0.5] + [2.0] * 13)
    junction = torch.randn(20000, 16, generator=torch.Generator().manual_seed(1)) * spread + 3.0
    scale = objective._junction_scale(junction)
    assert scale[0] == 1.0 and scale[2] == 1.0  # the log-density and small features keep their errors
    assert torch.allclose(scale[1], torch.tensor(10.0), rtol=0.05) and torch.allclose(scale[3:], torch.tensor(2.0), rtol=0.05)
    # measured once: later batches do not move it, and a resumed run gets it back
    assert torch.equal(objective._junction_scale(junction * 100), scale)
    other = DistillObjective(teacher, DistillConfig(stage_steps=(1, 1, 1)), torch.Generator().manual_seed(0))
    other.load(objective.state())
    assert torch.equal(other.junction_scale, scale)


def test_from_teacher_inherits_the_decoder_and_the_teacher_scene(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    for kind in ("mlp", "tensorf-vm"):
        student = student_for(teacher, kind)
        for (name, a), b in zip(student.decoder.state_dict().items(), teacher.field.decoder.state_dict().values()):
            assert torch.equal(a, b), name
        occupied, teacher_occupied = student.occupancy.occupied, teacher.field.occupancy.occupied
        assert bool(occupied.any())
        assert not bool((occupied & ~teacher_occupied).any()), "the student sees no space the teacher skips"
        assert occupied.float().mean() > 0.5 * teacher_occupied.float().mean()
    assert student.encoder.resolution == 48 and student.config.upsample_steps == ()  # tensorf starts fine


def test_a_distilled_student_learns_at_its_kinds_distillation_rates(tiny_teacher):
    """Dense point supervision from the first step takes faster rates than photos: the mlp's
    encoder at ``distill_lr``, TensoRF's grids at ``distill_lr_grid`` (the basis keeps ``lr``)."""
    from radistill.distill.engine import make_optimizer

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    for kind, key, rate in (("mlp", "distill_lr", 7e-3), ("tensorf-cp", "distill_lr_grid", 0.05)):
        cls = kind_class(kind)
        photo = cls(cls.Config(**SMALL[kind], **{key: rate}), teacher.field.aabb)
        student = cls.from_teacher(teacher.field, cls.Config(**SMALL[kind], **{key: rate}))
        photo_rates = [g["lr"] for g in make_optimizer(photo).param_groups]  # decoder, then the encoder's groups
        rates = [g["lr"] for g in make_optimizer(student).param_groups]
        assert rate not in photo_rates  # trained from photos: the kind's photo rates
        assert rates[1] == rate, kind
        assert rates[:1] + rates[2:] == photo_rates[:1] + photo_rates[2:], kind  # decoder and TensoRF's basis


def test_point_selection_keeps_top_weights_of_opaque_rays():
    g = torch.Generator().manual_seed(0)
    ray_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
    weights = torch.tensor([0.1, 0.5, 0.3, 0.0, 0.01, 0.02, 0.03, 0.6, 0.3])
    opacity = torch.tensor([0.9, 0.06, 0.9])
    chosen = select_points(weights, ray_ids, opacity, top_k=2, opaque_threshold=0.1, random_fraction=0.0, generator=g)
    assert chosen.tolist() == [1, 2, 7, 8]
    # brute force on random data
    m, r = 400, 30
    ray_ids = torch.sort(torch.randint(r, (m,), generator=g)).values
    weights = torch.rand(m, generator=g)
    opacity = torch.rand(r, generator=g)
    chosen = set(select_points(weights, ray_ids, opacity, 3, 0.5, 0.0, g).tolist())
    expected = set()
    for ray in range(r):
        idx = (ray_ids == ray).nonzero()[:, 0]
        if opacity[ray] > 0.5 and idx.numel():
            expected |= set(idx[torch.argsort(weights[idx], descending=True)[:3]].tolist())
    assert chosen == expected


def test_points_level_changes_which_points_are_supervised(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    counts = {}
    for points in (True, False):
        student = student_for(teacher, "mlp")
        g = torch.Generator().manual_seed(0)
        cfg = DistillConfig(stage_steps=(1, 1, 1), active=ActiveConfig(points=points, rays=False))
        counts[points] = DistillObjective(teacher, cfg, g).step(student, 512, 1, 0.0, g).n_samples
    assert 0 < counts[True] < 0.6 * counts[False]


def test_pose_level_revisits_the_worst_rendered_views(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    g = torch.Generator().manual_seed(0)
    pool = ViewPool(teacher, 8, g)
    rays, view = pool.sample_rays(4000, g)
    assert view.min() >= 0 and view.max() < 8
    # the errors of the rays actually rendered decide: view 5's rays are the worst
    error = torch.where(view == 5, 1.0, 0.01)
    pool.record(view, error)
    assert int(torch.argmin(pool.psnr())) == 5
    worst_eye = pool.c2w[5, :3, 3].clone()
    pool.refresh(g, hard_fraction=0.25)
    distances = (pool.c2w[:, :3, 3] - worst_eye).norm(dim=-1)
    assert distances[0] < 0.5 * distances[1:].median(), "a perturbed copy of the worst view is in the new pool"
    assert distances[0] > 0, "a perturbed copy, not the same pose"
    assert pool.count.sum() == 0
    # without the pose level every view is drawn afresh
    pool.record(view, error)
    worst_eye = pool.c2w[5, :3, 3].clone()
    g2 = torch.Generator().manual_seed(1)
    fresh_only = ViewPool(teacher, 8, torch.Generator().manual_seed(0))
    fresh_only.c2w, fresh_only.error, fresh_only.count = pool.c2w.clone(), pool.error.clone(), pool.count.clone()
    fresh_only.refresh(g2, hard_fraction=0.0)
    expected = teacher.sample_poses(8, torch.Generator().manual_seed(1))
    assert torch.equal(fresh_only.c2w, expected)


def test_ray_level_keeps_the_highest_error_rays_and_mixes_them_in(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    g = torch.Generator().manual_seed(0)
    pool = HardRayPool(capacity=8)
    views = ViewPool(teacher, 4, g)
    rays, _ = views.sample_rays(32, g)
    error = torch.arange(32, dtype=torch.float32)
    pool.update(rays, error, torch.zeros(0, dtype=torch.long))
    assert sorted(pool.error.tolist()) == list(range(24, 32))
    assert torch.allclose(pool.rays[:, :3], rays.origins[24:].flip(0))
    # re-scored pool rays that became easy leave the pool for harder fresh ones
    taken, slots, _ = pool.take(4, g)
    fresh, _ = views.sample_rays(4, g)
    both = type(rays).cat([taken, fresh])
    pool.update(both, torch.tensor([0.0, 0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 100.0]), slots)
    assert (pool.error == 100.0).sum() == 4
    # in the objective, the first quarter of a batch comes from the pool once it is filled
    student = student_for(teacher, "mlp")
    cfg = DistillConfig(stage_steps=(0, 0, 1), active=ActiveConfig(rays=True, hard_ray_fraction=0.25))
    objective = DistillObjective(teacher, cfg, g)
    objective.step(student, 200, 1, 1.0, g)
    assert len(objective.hard_rays) == min(200, cfg.active.ray_pool)
    drawn, view, slots, _ = objective._draw_rays(200, g)
    assert slots.numel() == 50 and bool((view[:50] == -1).all()) and bool((view[50:] >= 0).all())
    pool_rays = objective.hard_rays.rays[slots]
    assert torch.equal(drawn.origins[:50], pool_rays[:, :3])
    # errors of another stage are not comparable: a new stage starts an empty pool
    cfg.stage_steps = (1, 1, 1)
    objective.step(student, 200, 1, 0.0, g)
    assert objective.stage == 1 and len(objective.hard_rays) == 200
    off = DistillObjective(teacher, DistillConfig(stage_steps=(0, 0, 1), active=ActiveConfig(rays=False)), g)
    off.step(student, 200, 1, 1.0, g)
    assert len(off.hard_rays) == 0


def test_hard_rays_are_mixed_in_by_their_samples(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    g = torch.Generator().manual_seed(0)
    rays, _ = ViewPool(teacher, 4, g).sample_rays(40, g)
    pool = HardRayPool(capacity=8)
    assert pool.budget(10) is None  # no fresh ray seen yet: nothing to weigh hard ones against
    samples = torch.cat([torch.full((8,), 16.0), torch.full((32,), 6.0)])
    pool.update(rays, torch.arange(40, 0, -1, dtype=torch.float32), torch.zeros(0, dtype=torch.long), samples=samples)
    assert torch.equal(pool.samples, torch.full((8,), 16.0))  # the hardest eight, with their samples
    assert float(pool.fresh_samples) == 8.0  # all 40 rays were fresh: (8 * 16 + 32 * 6) / 40
    assert pool.budget(4) == 32.0
    _, slots, _ = pool.take(4, g, budget=pool.budget(4))
    assert slots.numel() == 2  # two rays of 16 samples fill the budget of four rays of 8
    _, slots, _ = pool.take(4, g)
    assert slots.numel() == 4  # no budget: by count
    # re-scored pool rays carry their new sample counts; the fresh mean moves by a tenth
    both = type(rays).cat([rays[:2], rays[10:12]])
    pool.update(both, torch.tensor([50.0, 50.0, 0.0, 0.0]), torch.tensor([0, 1]), samples=torch.tensor([3.0, 3.0, 5.0, 5.0]))
    assert pool.samples[:2].tolist() == [3.0, 3.0] and float(pool.fresh_samples) == pytest.approx(0.9 * 8 + 0.1 * 5)
    # in the objective: a batch with hard rays marches about as many samples as the fresh ones
    # it replaces, so the rays level does not make a step dearer
    student = student_for(teacher, "tensorf-vm")
    objective = DistillObjective(teacher, DistillConfig(stage_steps=(0, 0, 1), active=ActiveConfig(hard_ray_fraction=0.5, ray_pool=100)), g)
    objective.step(student, 400, 1, 1.0, g)
    pool = objective.hard_rays
    assert float(pool.samples.mean()) > 1.5 * float(pool.fresh_samples)  # this scene's hard rays take more samples
    drawn, view, slots, _ = objective._draw_rays(400, g)
    assert 0 < slots.numel() < 200 and int((view >= 0).sum()) == 200
    assert float(pool.samples[slots].sum()) <= pool.budget(200)
    # a resumed objective has the same pool, sample counts and cost of a fresh ray
    state = objective.state()
    again = DistillObjective(teacher, DistillConfig(stage_steps=(0, 0, 1), active=ActiveConfig(hard_ray_fraction=0.5, ray_pool=100)), g)
    again.load(state)
    assert torch.equal(again.hard_rays.samples, pool.samples) and float(again.hard_rays.fresh_samples) == float(pool.fresh_samples)
    # a checkpoint from before sample counts: its pool rays cost one sample each, no fresh mean yet
    old = {k: v for k, v in state.items() if k not in ("rays.samples", "rays.fresh_samples")}
    again.load(old)
    assert torch.equal(again.hard_rays.samples, torch.ones(len(pool))) and again.hard_rays.budget(10) is None
    # fresh rays that took no samples (views of empty space) are a cost of 0, not "none seen"
    empty = HardRayPool(capacity=8)
    empty.update(rays, torch.arange(40, dtype=torch.float32), torch.zeros(0, dtype=torch.long), samples=torch.zeros(40))
    assert empty.budget(4) == 0.0


@pytest.mark.parametrize("kind", ["mlp", "tensorf-vm"])
def test_student_converges_toward_its_teacher(tiny_teacher, kind):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    student = student_for(teacher, kind)
    before = compare_on_views(student, teacher, 3)["psnr_vs_teacher"]
    cfg = DistillConfig(stage_steps=(100, 100, 400) if kind == "mlp" else (40, 40, 120))  # an MLP needs more steps
    train(student, teacher, TrainConfig(batch_rays=512, target_samples=1 << 14, progress=False), distill=cfg)
    after = compare_on_views(student, teacher, 3)["psnr_vs_teacher"]
    assert after > before + 6
    assert after > 20


def test_resumed_conversion_equals_an_uninterrupted_one(tiny_teacher, tmp_path):
    config = ConvertConfig(distill=DistillConfig(stage_steps=(6, 6, 12), active=ActiveConfig(refresh_every=5)),
                           batch_rays=256, checkpoint_every=0, progress=False, report_views=0)
    options = SMALL["mlp"]
    whole = convert(tiny_teacher, "mlp", config, options, output=tmp_path / "whole").student

    class Interrupting(FieldTeacher):
        calls = 0

        def query(self, x, d):
            Interrupting.calls += 1
            if Interrupting.calls > 15:
                raise KeyboardInterrupt  # Ctrl-C in step 16 (stage 3)
            return super().query(x, d)

    plain = FieldTeacher.from_checkpoint(tiny_teacher)
    with pytest.raises(KeyboardInterrupt):
        convert(Interrupting(plain.field, plain.cameras, plain.background), "mlp", config, options,
                output=tmp_path / "split")
    resumed = convert(tiny_teacher, "mlp", config, options, output=tmp_path / "split", resume=True)
    assert resumed.train.steps == 24 and all(h["step"] > 15 for h in resumed.train.history)
    a, b = whole.state_dict(), resumed.student.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_convert_refuses_bad_requests(tiny_teacher, tiny_scene):
    with pytest.raises(ConfigError, match="already a 'hashgrid'"):
        convert(tiny_teacher, "hashgrid")
    with pytest.raises(ConfigError, match="unknown kind 'nerfacto'"):
        convert(tiny_teacher, "nerfacto")
    shifted = type(tiny_scene)(**{**vars(tiny_scene), "aabb": tiny_scene.aabb * 3})
    with pytest.raises(ConfigError, match="does not match the aabb"):
        convert(tiny_teacher, "mlp", images=shifted)
    with pytest.raises(ConfigError, match="a teacher must be"):
        convert(42, "mlp")


def test_teacher_without_cameras_draws_poses_around_its_aabb(tiny_teacher):
    field = FieldTeacher.from_checkpoint(tiny_teacher).field
    teacher = FieldTeacher(field)
    poses = teacher.sample_poses(64, torch.Generator().manual_seed(0))
    eyes = poses[:, :3, 3]
    center = field.aabb.mean(0)
    radius = float((field.aabb[1] - field.aabb[0]).norm()) * 1.2
    assert torch.allclose((eyes - center).norm(dim=-1), torch.full((64,), radius), atol=1e-4)
    forward = -poses[:, :3, 2]
    to_center = torch.nn.functional.normalize(center - eyes, dim=-1)
    assert torch.allclose((forward * to_center).sum(-1), torch.ones(64), atol=1e-4)
    assert eyes[:, 2].min() < 0 < eyes[:, 2].max(), "views from below as well as above"


def test_view_size_draws_the_same_poses_as_smaller_views(tiny_teacher, tmp_path, monkeypatch):
    from radistill.io.checkpoint import checkpoint_cameras

    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    full = teacher.cameras
    assert teacher.at_view_size(None) is teacher and teacher.at_view_size(max(full.width, full.height)) is teacher
    half = full.width // 2
    small = teacher.at_view_size(half)
    assert small.field is teacher.field and teacher.cameras is full  # the teacher given is left alone
    c2w = small.sample_poses(4, torch.Generator().manual_seed(3))
    assert torch.equal(c2w, teacher.sample_poses(4, torch.Generator().manual_seed(3)))
    big, little = teacher.views(c2w), small.views(c2w)
    assert little.width == half and little.height * 2 == full.height
    # the same rays, seen through fewer pixels: a small pixel's ray is the ray through the middle
    # of the 2x2 big pixels it covers
    rays_big, rays_small = big.image_rays(1), little.image_rays(1)
    corner = rays_big.directions.view(full.height, full.width, 3)[:2, :2].mean((0, 1))
    assert torch.allclose(torch.nn.functional.normalize(corner, dim=-1),
                          rays_small.directions.view(little.height, little.width, 3)[0, 0], atol=1e-3)

    seen = []
    views = FieldTeacher.views
    monkeypatch.setattr(FieldTeacher, "views", lambda self, c2w: seen.append(self.cameras.width) or views(self, c2w))
    config = ConvertConfig(distill=DistillConfig(stage_steps=(2, 2, 2)), progress=False, checkpoint_every=0,
                           report_views=2, view_size=half)
    result = convert(tiny_teacher, "mlp", config, SMALL["mlp"], output=tmp_path / "out")
    assert seen and set(seen) == {half}  # pool, seeding and report views alike
    assert result.report["report_view_size"] == [little.width, little.height]  # the report says at what size
    saved = checkpoint_cameras(tmp_path / "out" / "mlp.safetensors")
    assert (saved.width, saved.height) == (full.width, full.height)  # the student keeps the scene's cameras
    with pytest.raises(ConfigError, match="view_size must be at least 8 pixels, got 4"):
        ConvertConfig(view_size=4)


def test_view_pool_replace_renews_random_views_with_a_share_of_copies_of_the_worst(tiny_teacher):
    teacher = FieldTeacher.from_checkpoint(tiny_teacher)
    g = torch.Generator().manual_seed(0)
    pool = ViewPool(teacher, 8, g)
    before = pool.c2w.clone()
    pool.record(torch.arange(8), torch.arange(8, dtype=torch.float32) + 1)  # view 7 rendered worst, view 0 best
    slots = pool.replace(g, 2, hard_fraction=1.0)
    moved = (pool.c2w[slots, :3, 3][:, None] - before[[6, 7], :3, 3][None]).norm(dim=-1).amin(-1)
    spread = (before[:, :3, 3][:, None] - before[:, :3, 3][None]).norm(dim=-1).mean()
    assert (moved < 0.25 * spread).all()  # near the worst views, not fresh random poses
    kept = torch.ones(8, dtype=torch.bool)
    kept[slots] = False
    assert torch.equal(pool.c2w[kept], before[kept]) and (pool.count[slots] == 0).all()

    # the share of copies among the new views is hard_fraction on average, however few are renewed
    copies = []
    perturb = teacher.perturb_poses
    teacher.perturb_poses = lambda c2w, generator=None: copies.append(c2w.shape[0]) or perturb(c2w, generator)
    big = ViewPool(teacher, 64, g)
    for fraction, n, expected in ((0.25, 4, 400), (0.1, 4, 160), (0.0, 4, 0)):
        copies.clear()
        for _ in range(400):
            big.record(torch.arange(64), torch.rand(64, generator=g))
            big.replace(g, n, fraction)
        assert abs(sum(copies) - expected) <= 0.15 * expected, (fraction, sum(copies))
