import pytest
import torch

from radistill.distill.engine import TrainConfig, train
from radistill.distill.teachers import ImageTeacher
from radistill.errors import CheckpointError
from radistill.evaluate import evaluate_split
from radistill.fields import create_field
from radistill.io.checkpoint import load_field
from radistill.metrics import psnr

SMALL = {"hashgrid": {"log2_table": 14, "max_resolution": 128, "samples_per_ray": 96},
         "mlp": {"width": 64, "depth": 3, "samples_per_ray": 96},
         "tensorf-vm": {"samples_per_ray": 96, "resolution": 24, "final_resolution": 48, "upsample_steps": (30,)},
         "tensorf-cp": {"samples_per_ray": 96, "resolution": 24, "final_resolution": 48, "upsample_steps": (30,),
                        "density_components": 96, "app_components": 288}}


def constant_colour_psnr(scene) -> float:
    """The best a field that paints every pixel one colour could do on the test views."""
    train_imgs, _ = scene.split("train")
    test_imgs, _ = scene.split("test")
    return psnr(train_imgs.reshape(-1, 3).mean(0).expand_as(test_imgs), test_imgs)


def test_hashgrid_learns_the_builtin_scene(tiny_scene):
    field = create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"])
    before = evaluate_split(field, tiny_scene)["psnr"]
    result = train(field, ImageTeacher.from_scene(tiny_scene),
                   TrainConfig(steps=150, batch_rays=1024, target_samples=1 << 15, progress=False))
    after = evaluate_split(field, tiny_scene)
    assert result.steps == 150 and result.samples > 0
    assert after["psnr"] > before + 5
    assert after["psnr"] > constant_colour_psnr(tiny_scene) + 5
    assert len(after["images"]) == 2 and all(0 < im["ssim"] <= 1 for im in after["images"])
    # the occupancy grid learned where the scene is empty
    assert field.occupancy.fraction_occupied < 0.6


@pytest.mark.parametrize("kind", ["mlp", "tensorf-vm", "tensorf-cp"])
def test_every_kind_trains(kind, tiny_scene):
    field = create_field(kind, tiny_scene.aabb, **SMALL[kind])
    teacher = ImageTeacher.from_scene(tiny_scene)
    before = evaluate_split(field, tiny_scene)["psnr"]
    steps = 150 if kind == "mlp" else 60  # an MLP needs more steps to leave its grey start
    train(field, teacher, TrainConfig(steps=steps, batch_rays=512, target_samples=1 << 14, progress=False))
    after = evaluate_split(field, tiny_scene)["psnr"]
    assert after > before + 3
    if kind.startswith("tensorf"):
        assert field.encoder.resolution == 48


def test_resume_gives_the_same_field_as_an_uninterrupted_run(tiny_scene, tmp_path):
    teacher = ImageTeacher.from_scene(tiny_scene)
    kw = SMALL["tensorf-vm"]  # includes an upsampling step between the halves

    def fresh():
        torch.manual_seed(0)
        return create_field("tensorf-vm", tiny_scene.aabb, **kw)

    cfg = TrainConfig(steps=40, batch_rays=256, target_samples=1 << 13, progress=False, checkpoint_every=0)
    whole = fresh()
    train(whole, teacher, cfg, tmp_path / "whole")

    class Interrupting(ImageTeacher):
        calls = 0

        def sample(self, n, generator=None):
            Interrupting.calls += 1
            if Interrupting.calls > 25:
                raise KeyboardInterrupt  # Ctrl-C during step 26
            return super().sample(n, generator)

    half = fresh()
    with pytest.raises(KeyboardInterrupt):
        train(half, Interrupting(teacher.images, teacher.cameras, teacher.background), cfg, tmp_path / "split")
    # a new process rebuilds the field from its config and resumes
    resumed = fresh()
    result = train(resumed, teacher, cfg, tmp_path / "split", resume=True)
    assert result.steps == 40
    assert all(h["step"] > 25 for h in result.history), "the resumed run starts after the last finished step"
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_checkpoint_of_another_kind(tiny_scene, tmp_path):
    teacher = ImageTeacher.from_scene(tiny_scene)
    cfg = TrainConfig(steps=2, batch_rays=128, progress=False)
    train(create_field("mlp", tiny_scene.aabb, **SMALL["mlp"]), teacher, cfg, tmp_path)
    with pytest.raises(CheckpointError, match="holds a 'mlp' field, cannot resume a 'hashgrid' run"):
        train(create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"]), teacher, cfg, tmp_path, resume=True)


def test_training_checkpoint_is_a_loadable_field(tiny_scene, tmp_path):
    field = create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"])
    train(field, ImageTeacher.from_scene(tiny_scene), TrainConfig(steps=5, batch_rays=128, progress=False), tmp_path)
    back = load_field(tmp_path / "checkpoint.safetensors")
    for k, v in field.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_resume_with_other_options_is_a_clear_error(tiny_scene, tmp_path):
    teacher = ImageTeacher.from_scene(tiny_scene)
    cfg = TrainConfig(steps=2, batch_rays=128, progress=False)
    train(create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"]), teacher, cfg, tmp_path)
    other = create_field("hashgrid", tiny_scene.aabb, **{**SMALL["hashgrid"], "log2_table": 13})
    with pytest.raises(CheckpointError, match="log2_table: run 13 vs checkpoint 14"):
        train(other, teacher, TrainConfig(steps=4, batch_rays=128, progress=False), tmp_path, resume=True)


def test_resume_with_another_kernel_backend_continues(tiny_scene, tmp_path):
    """The backend chooses kernels, not the field: a run may resume with another one."""
    teacher = ImageTeacher.from_scene(tiny_scene)
    train(create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"], backend="torch"), teacher,
          TrainConfig(steps=2, batch_rays=128, progress=False), tmp_path)
    resumed = train(create_field("hashgrid", tiny_scene.aabb, **SMALL["hashgrid"], backend="auto"), teacher,
                    TrainConfig(steps=4, batch_rays=128, progress=False), tmp_path, resume=True)
    assert resumed.steps == 4


def gather_gradients(x: torch.Tensor, idx: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """The gradient of ``x[idx]`` (repeated indices) for the given upstream gradient."""
    x = x.detach().requires_grad_(True)
    (x[idx] * upstream).sum().backward()
    return x.grad


def test_training_on_a_cpu_makes_gathers_with_repeated_indices_reproducible(tiny_scene, monkeypatch):
    """The backward pass of ``x[idx]`` adds with parallel atomics on a multi-threaded CPU, in an
    order that changes between runs (a mesh's vertices differed in the last bit between two
    identical bakes): ``train`` runs with deterministic algorithms there, and restores the
    setting after."""
    from radistill.distill import engine
    from radistill.rng import deterministic_on_cpu

    g = torch.Generator().manual_seed(0)
    x, idx = torch.randn(2000, 2, generator=g), torch.randint(0, 2000, (100_000, 3), generator=g)
    upstream = torch.randn(100_000, 3, 2, generator=g)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on_cpu("cpu"):
        first = gather_gradients(x, idx, upstream)
        assert all(torch.equal(first, gather_gradients(x, idx, upstream)) for _ in range(10))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.allclose(first, gather_gradients(x, idx, upstream), rtol=1e-4, atol=1e-4)  # the same sums
    # train() itself runs under it
    seen = []
    step = engine.StepRunner.step
    monkeypatch.setattr(engine.StepRunner, "step", lambda self, *a: (seen.append(
        torch.are_deterministic_algorithms_enabled()), step(self, *a))[1])
    field = create_field("hashgrid", tiny_scene.aabb, log2_table=12, max_resolution=64)
    train(field, ImageTeacher.from_scene(tiny_scene), TrainConfig(steps=3, batch_rays=256, progress=False))
    assert seen == [True] * 3 and not torch.are_deterministic_algorithms_enabled()


def test_optimiser_state_of_an_unfused_run_resumes_into_the_fused_step():
    """Checkpoints written before the fused step (torch's default Adam) carry ``fused: null`` and
    their own ``step`` tensors: restored, the optimiser keeps its fused step and continues the
    run's update (moments and step count carried over)."""
    import json

    from radistill.distill.engine import load_optimizer_state, make_optimizer, optimizer_state

    def stepped(field, opt, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            for p in field.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()

    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    torch.manual_seed(0)
    field = create_field("hashgrid", aabb, **SMALL["hashgrid"])
    old = torch.optim.Adam(field.param_groups(), betas=(0.9, 0.99), eps=1e-15, foreach=False)
    stepped(field, old, 3, seed=1)
    tensors, groups = optimizer_state(old)
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from a file
    assert all(g["fused"] is None for g in json.loads(groups))
    start = {k: v.clone() for k, v in field.state_dict().items()}

    resumed = make_optimizer(field)
    load_optimizer_state(resumed, tensors, groups)
    assert all(g["fused"] for g in resumed.param_groups)
    stepped(field, resumed, 2, seed=2)
    after_fused = {k: v.clone() for k, v in field.state_dict().items()}

    field.load_state_dict(start)
    stepped(field, old, 2, seed=2)  # the unfused run going on
    for name, value in field.state_dict().items():
        assert torch.allclose(after_fused[name], value, rtol=1e-5, atol=1e-6), name
        if name.startswith("encoder"):
            assert not torch.equal(after_fused[name], start[name]), name  # it did step
