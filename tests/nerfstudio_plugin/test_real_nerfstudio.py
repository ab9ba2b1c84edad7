"""radistill with the real nerfstudio: its runs as teachers, and radistill's ns-train methods.

A nerfacto run (PyTorch hash grid) is trained here on the CPU on 100x100 lego (see conftest.py);
the tests then convert it with ``radistill convert``, distil it with ``ns-train
radistill-distill``, and load the splatfacto run that writes with nerfstudio's own code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import CPU, ns

pytestmark = pytest.mark.slow


def radistill(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "radistill.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def flat_background_psnr(teacher, n_views: int, seed: int = 1234) -> float:
    """PSNR against the teacher's renders of an image of nothing but background, on the views the
    conversion report uses: the score of a student that learned nothing."""
    from radistill.evaluate import render_image
    from radistill.metrics import psnr

    cams = teacher.views(teacher.sample_poses(n_views, torch.Generator().manual_seed(seed)))
    scores = []
    for k in range(n_views):
        ref = render_image(teacher.field, cams, k, teacher.background)["rgb"]
        scores.append(psnr(teacher.background.expand_as(ref), ref))
    return sum(scores) / len(scores)


def test_ns_train_lists_radistill_methods(ns_env):
    listing = ns("ns-train", "--help", env=ns_env).stdout
    for method in ("radistill-distill", "radistill-hashgrid", "radistill-mlp", "radistill-tensorf", "radistill-tensorf-cp"):
        assert method in listing
    distill_help = ns("ns-train", "radistill-distill", "--help", env=ns_env).stdout
    assert "--teacher" in distill_help and "--to" in distill_help


def test_entry_point_module_is_light(ns_env):
    """The module every ns-* command imports loads none of radistill's fields, renderers or kernels."""
    code = ("import sys, radistill.nerfstudio.methods as m; "
            "heavy = [k for k in sys.modules if k.startswith(('radistill.fields', 'radistill.render', 'radistill.kernels', "
            "'radistill.distill', 'radistill.nerfstudio.model', 'radistill.nerfstudio.trainer'))]; "
            "print(heavy); assert not heavy and m.distill.config.method_name == 'radistill-distill'")
    proc = subprocess.run([sys.executable, "-c", code], env=ns_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nerfacto_field_is_nerfstudios_own(nerfacto_run, monkeypatch):
    """radistill's reading of the trained nerfacto run gives the numbers nerfstudio's own modules
    give: its hash encoding (every level of the trained table) and its base MLP, at points all
    over the box."""
    from nerfstudio.utils.eval_utils import eval_setup

    from radistill.fields.nerfacto import run_mlp
    from radistill.io.nerfstudio import load_nerfstudio_run

    ours = load_nerfstudio_run(nerfacto_run)
    # nerfstudio's checkpoints hold numpy scalars, which torch.load refuses by default since 2.6;
    # this run was trained by this test session
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    _, pipeline, _, _ = eval_setup(nerfacto_run / "config.yml", test_mode="inference")
    mlp_base = pipeline.model.field.mlp_base.model.cpu()
    q = torch.rand(4096, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs_encoding = mlp_base[0].pytorch_fwd(q)
        ours_encoding = ours.encode(q)
        torch.testing.assert_close(ours_encoding, theirs_encoding, atol=1e-6, rtol=1e-6)
        assert theirs_encoding.abs().amax() > 1e-3  # a trained table, not zeros
        torch.testing.assert_close(run_mlp(ours.base, ours_encoding)[:, :16], mlp_base(q)[:, :16], atol=1e-5, rtol=1e-5)


def test_a_nerfacto_run_renders_as_nerfstudio_renders_it(nerfacto_run, monkeypatch, record_property):
    """The teacher's render is nerfstudio's own (its proposal sampler, evaluation mode) to float
    precision, while dense marching of the same field gives another image: the short run's
    field is only right where nerfacto's few samples fall."""
    from nerfstudio.utils.eval_utils import eval_setup

    from radistill.distill.teachers import FieldTeacher
    from radistill.evaluate import render_image
    from radistill.fields.base import render_volumetric
    from radistill.metrics import psnr

    teacher = FieldTeacher.from_checkpoint(nerfacto_run)
    assert teacher.field.proposals is not None and teacher.teaches_by_renders
    teacher.field.config.render_outside_box = True  # as nerfstudio: the contracted space beyond the box too
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # numpy scalars in the run this session trained
    _, pipeline, _, _ = eval_setup(nerfacto_run / "config.yml", test_mode="inference")
    model = pipeline.model.cpu().eval()
    with torch.no_grad():
        theirs = model.get_outputs_for_camera(pipeline.datamanager.train_dataset.cameras[0:1])
    ours = render_image(teacher.field, teacher.cameras, 0, teacher.background)
    torch.testing.assert_close(ours["rgb"], theirs["rgb"], atol=2e-2, rtol=0)
    torch.testing.assert_close(ours["opacity"], theirs["accumulation"][..., 0], atol=2e-2, rtol=0)
    agreement = psnr(ours["rgb"], theirs["rgb"])
    rays = teacher.cameras.image_rays(0)
    dense = torch.cat([render_volumetric(teacher.field, rays[i:i + 4096], teacher.field.config.volume_step,
                                         teacher.background, occupancy=teacher.field.occupancy()).rgb
                       for i in range(0, len(rays), 4096)]).reshape(theirs["rgb"].shape)
    marched = psnr(dense, theirs["rgb"])
    record_property("PSNR vs nerfstudio's render: proposal sampler / dense marching (dB)", f"{agreement:.1f} / {marched:.1f}")
    assert agreement > 50 and agreement > marched + 10
    # many rays are rendered in passes of bounded size: the same answer, packed samples included
    from radistill.fields import nerfacto

    some = rays[:3000]
    in_passes = teacher.field.render(some, teacher.background)
    monkeypatch.setattr(nerfacto, "PROPOSAL_PASS_SAMPLES", 1 << 30)
    at_once = teacher.field.render(some, teacher.background)
    assert in_passes.n_samples == at_once.n_samples == in_passes.positions.shape[0]
    assert torch.equal(in_passes.ray_ids, at_once.ray_ids)
    for key in ("rgb", "depth", "opacity", "weights", "positions"):
        torch.testing.assert_close(getattr(in_passes, key), getattr(at_once, key), atol=1e-5, rtol=1e-5)


def test_a_nerfacto_run_teaches_from_the_cameras_it_was_trained_with(nerfacto_run, small_lego, record_property):
    """The run's cameras come from the data set its config.yml names, in the frame the field is
    in: the teacher's render from a training camera matches that camera's photo far better than
    any other training photo."""
    import math

    from PIL import Image

    from radistill.cameras import LikeCamerasSampler
    from radistill.distill.teachers import FieldTeacher
    from radistill.evaluate import render_image
    from radistill.metrics import psnr

    meta = json.loads((small_lego / "transforms_train.json").read_text())
    teacher = FieldTeacher.from_checkpoint(nerfacto_run)
    cams = teacher.cameras
    assert type(teacher.sampler) is LikeCamerasSampler and len(cams) == len(meta["frames"]) == 21
    torch.testing.assert_close(cams.c2w, torch.tensor([f["transform_matrix"] for f in meta["frames"]]))
    assert (cams.width, cams.height) == (100, 100)
    torch.testing.assert_close(cams.fx, torch.full((21,), 50 / math.tan(meta["camera_angle_x"] / 2)))

    def photo(frame: dict) -> torch.Tensor:  # on white, as the run was trained
        rgba = torch.from_numpy(np.asarray(Image.open(small_lego / (frame["file_path"] + ".png")).convert("RGBA"),
                                           dtype=np.float32) / 255)
        return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])

    teacher.field.config.render_outside_box = True  # the short run paints much of lego beyond its box
    seen = render_image(teacher.field, cams, 0, teacher.background)["rgb"]
    scores = [psnr(seen, photo(frame)) for frame in meta["frames"]]
    record_property("PSNR of the render from camera 0 vs its photo / best other photo (dB)",
                    f"{scores[0]:.1f} / {max(scores[1:]):.1f}")
    assert scores[0] > max(scores[1:]) + 3


def test_a_nerfacto_run_without_its_data_set_warns_and_still_teaches(nerfacto_run, small_lego):
    from radistill.distill.teachers import FieldTeacher, SphereLikeSampler

    hidden = small_lego.with_name(small_lego.name + "_gone")
    small_lego.rename(hidden)
    try:
        with pytest.warns(UserWarning, match="is not here; poses are drawn all around the scene's box"):
            teacher = FieldTeacher.from_checkpoint(nerfacto_run)
    finally:
        hidden.rename(small_lego)
    assert isinstance(teacher.sampler, SphereLikeSampler)


@pytest.mark.parametrize("kind", ["hashgrid", "gaussians"])
def test_convert_a_nerfacto_run_without_its_images(kind, nerfacto_run, small_lego, ns_env, tmp_path, record_property):
    from radistill.distill.teachers import FieldTeacher

    hidden = small_lego.with_name(small_lego.name + "_hidden")
    small_lego.rename(hidden)  # the photos are gone: the run alone must do
    try:
        # bounded by steps (time only caps a very slow machine), so a busy machine gets the same
        # result. The nerfacto run differs from machine to machine, and so does this score: 40
        # steps from 5000 Gaussians gave 24.1-27.7 dB against the renders on four runs here, once
        # 20.6 on CI (an empty render: 20.0-20.7), before seeded scales were capped (26.3-28.3
        # after); 60 steps: 27.0-29.4 dB on seven runs here, but once 25.5 on CI against a nerfacto
        # run whose empty render scored 23.6 (20.6-22.5 here). 120 steps for a margin: nerfacto
        # runs of seeds 1 and 2 here went from 28.0 and 28.6 dB at 60 steps to 29.3 and 29.6
        # (empty renders 22.4 and 22.5), for 6 s more
        stages = ["12", "18", "90"] if kind == "gaussians" else ["10", "15", "75"]
        options = ["--set", "initial_gaussians=5000"] if kind == "gaussians" else []
        options += ["--view-pool", "16"]  # the teacher renders each pool view once (about 1 s each here)
        if kind == "hashgrid":  # its views at 64x64 (of 100x100): 51 s here instead of 80, 33.8 dB vs 33.7
            options += ["--view-size", "64"]
        proc = radistill("convert", str(nerfacto_run), "--to", kind, "--stage-steps", *stages, *options,
                         "--max-seconds", "300", "--output", str(tmp_path / kind), env=ns_env)
        assert "is not here; poses are drawn all around the scene's box" in proc.stderr
        with pytest.warns(UserWarning, match="is not here"):  # the teacher as the conversion saw it
            teacher = FieldTeacher.from_checkpoint(nerfacto_run)
    finally:
        hidden.rename(small_lego)
    report = json.loads((tmp_path / kind / "report.json").read_text())
    assert report["from"] == "nerfacto" and report["to"] == kind and report["steps"] == sum(map(int, stages))
    assert report["report_view_size"] == ([64, 64] if kind == "hashgrid" else [100, 100])
    baseline = flat_background_psnr(teacher.at_view_size(max(report["report_view_size"])), report["report_views"])
    record_property("PSNR vs the nerfacto renders (dB)", report["psnr_vs_teacher"])
    record_property("steps", report["steps"])
    record_property("PSNR of an empty render (dB)", round(baseline, 2))
    # the squared error of an empty render cut by over a third
    assert report["psnr_vs_teacher"] > baseline + 2.0, f"{report['psnr_vs_teacher']} dB, an empty render {baseline:.2f} dB"


@pytest.fixture(scope="module")
def distilled_to_gaussians(nerfacto_run, ns_env, tmp_path_factory) -> Path:
    """``ns-train radistill-distill --to gaussians`` from the nerfacto run; returns the output folder."""
    out = tmp_path_factory.mktemp("distill_outputs")
    ns("ns-train", "radistill-distill", "--teacher", str(nerfacto_run), "--to", "gaussians", *CPU,
       "--steps-per-eval-image", "10",  # renders a whole held-out view the way the viewer does
       "--max-num-iterations", "20", "--steps-per-save", "10", "--pipeline.batch-rays", "512",
       "--pipeline.model.options", "initial_gaussians=4000", "sh_degree=2",  # the kind's options, as convert --set
       "--pipeline.model.view-size", "64",  # the teacher's 100x100 views rendered at 64x64
       "--pipeline.datamanager.eval-num-rays-per-batch", "256",
       "--output-dir", str(out), "--timestamp", "run", env=ns_env)
    return out


def test_ns_train_radistill_distill_writes_a_splatfacto_run(distilled_to_gaussians):
    from nerfstudio.models.splatfacto import SplatfactoModel
    from nerfstudio.utils.eval_utils import eval_setup

    from radistill.io.checkpoint import field_from_checkpoint, read_checkpoint
    from radistill.io.nerfstudio import load_nerfstudio_run

    run = distilled_to_gaussians / "lego" / "radistill-distill" / "run"
    splat_run = distilled_to_gaussians / "lego" / "splatfacto" / "run"
    tensors, meta = read_checkpoint(run / "gaussians.safetensors")
    ours = field_from_checkpoint(tensors, meta, run / "gaussians.safetensors")
    assert meta["converted_from"] == "nerfacto"
    assert len(ours) <= 4000 and ours.config.sh_degree == 2  # --pipeline.model.options reached the student

    # nerfstudio's own loader builds a SplatfactoModel from the run and loads our Gaussians into it
    _, pipeline, ckpt, step = eval_setup(splat_run / "config.yml", test_mode="inference")
    assert isinstance(pipeline.model, SplatfactoModel) and step == 19
    assert pipeline.model.num_points == len(ours)
    # ... and radistill's splatfacto importer brings them back to the world frame unchanged
    back = load_nerfstudio_run(splat_run)
    assert torch.allclose(back.means, ours.means, atol=1e-5)
    assert torch.allclose(back.log_scales, ours.log_scales, atol=1e-5)
    assert torch.allclose(back.logit_opacities, ours.logit_opacities, atol=1e-6)
    assert torch.allclose(back.sh, ours.sh, atol=1e-5)
    dots = (back.quats * torch.nn.functional.normalize(ours.quats, dim=-1)).sum(-1).abs()
    assert torch.allclose(dots, torch.ones_like(dots), atol=1e-5)


def test_ns_export_gaussian_splat_accepts_the_splatfacto_run(distilled_to_gaussians, ns_env, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from radistill.io.ply import read_gaussian_ply

    splat_run = distilled_to_gaussians / "lego" / "splatfacto" / "run"
    ns("ns-export", "gaussian-splat", "--load-config", str(splat_run / "config.yml"), "--output-dir", str(tmp_path),
       env=ns_env)
    exported = read_gaussian_ply(tmp_path / "splat.ply")
    _, pipeline, _, _ = eval_setup(splat_run / "config.yml", test_mode="inference")
    model = pipeline.model
    assert np.allclose(exported.means.numpy(), model.means.detach().numpy(), atol=1e-6)
    assert np.allclose(exported.log_scales.numpy(), model.scales.detach().numpy(), atol=1e-6)


def test_ns_train_radistill_hashgrid_learns_the_photos(small_lego, ns_env, tmp_path, record_property):
    """radistill's hashgrid trained by ns-train on nerfstudio's blender data parser: the field it
    leaves renders the held-out views far better than an empty render."""
    from radistill.datasets import load_scene
    from radistill.evaluate import evaluate_split
    from radistill.io.checkpoint import field_from_checkpoint, read_checkpoint
    from radistill.metrics import psnr

    ns("ns-train", "radistill-hashgrid", *CPU, "--max-num-iterations", "100", "--steps-per-save", "100",
       "--pipeline.datamanager.train-num-rays-per-batch", "1024", "--output-dir", str(tmp_path),
       "--experiment-name", "lego", "--timestamp", "run", "blender-data", "--data", str(small_lego), env=ns_env)
    path = tmp_path / "lego" / "radistill-hashgrid" / "run" / "hashgrid.safetensors"
    tensors, meta = read_checkpoint(path)
    field = field_from_checkpoint(tensors, meta, path)
    from radistill.io.checkpoint import cameras_from_metadata

    assert meta["frame"] == "nerfstudio" and len(cameras_from_metadata(meta, path)) == 21
    scene = load_scene(small_lego)  # the blender parser leaves lego's frame as it is
    images, _ = scene.split("test")
    empty = sum(psnr(scene.background.expand_as(img), img) for img in images) / len(images)
    score = evaluate_split(field, scene, "test")["psnr"]
    record_property("held-out PSNR after 100 ns-train steps (dB)", round(score, 2))
    record_property("PSNR of an empty render (dB)", round(float(empty), 2))
    assert score > empty + 5.0


def test_ns_train_resumes_radistills_optimiser_with_load_dir(small_lego, ns_env, tmp_path):
    """--load-dir brings back the field from nerfstudio's checkpoint and radistill's optimiser
    (moments, step counts), random state and batch size from its own state file beside it."""
    from radistill.io.checkpoint import read_checkpoint

    def run(name: str, iterations: int, *extra: str) -> Path:
        ns("ns-train", "radistill-hashgrid", *CPU, "--max-num-iterations", str(iterations), "--steps-per-save", "10",
           "--pipeline.datamanager.train-num-rays-per-batch", "512", "--output-dir", str(tmp_path),
           "--experiment-name", "lego", "--timestamp", name, *extra, "blender-data", "--data", str(small_lego),
           env=ns_env)
        return tmp_path / "lego" / "radistill-hashgrid" / name

    first = run("first", 20)
    states = sorted((first / "radistill_state").iterdir())
    assert [p.name for p in states] == ["step-000000019.safetensors"]  # only the latest, like nerfstudio's
    tensors, meta = read_checkpoint(states[0])
    adam_steps = {k: float(v) for k, v in tensors.items() if k.startswith("optim.") and k.endswith(".step")}
    assert adam_steps and set(adam_steps.values()) == {20.0}
    second = run("second", 10, "--load-dir", str(first / "nerfstudio_models"))  # 10 more: steps 20-29
    tensors, _ = read_checkpoint(second / "radistill_state" / "step-000000029.safetensors")
    resumed = {k: float(v) for k, v in tensors.items() if k.startswith("optim.") and k.endswith(".step")}
    assert resumed.keys() == adam_steps.keys() and set(resumed.values()) == {30.0}  # 20 restored + 10, not 10


def test_ns_train_radistill_distill_names_a_folder_that_is_no_run(ns_env, tmp_path):
    from pathlib import Path as _Path

    exe = _Path(sys.executable).parent / "ns-train"
    proc = subprocess.run([str(exe), "radistill-distill", "--teacher", str(tmp_path), *CPU], env=ns_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"--teacher {tmp_path}: not a nerfstudio run" in proc.stdout + proc.stderr


def test_the_plugins_training_step_runs_with_deterministic_algorithms(tiny_scene, monkeypatch):
    """ns-train's iterations are radistill's steps, under the same deterministic algorithms on a
    CPU as ``radistill train`` (the order of atomic adds in a gather's backward otherwise changes
    from run to run); the setting is restored after each step, for nerfstudio's own code."""
    from types import SimpleNamespace

    from radistill.distill import engine
    from radistill.distill.objectives import PhotoObjective
    from radistill.distill.teachers import ImageTeacher
    from radistill.fields import create_field
    from radistill.nerfstudio.pipeline import RadistillPipeline

    seen = []
    step = engine.StepRunner.step
    monkeypatch.setattr(engine.StepRunner, "step", lambda self, *a: (seen.append(
        torch.are_deterministic_algorithms_enabled()), step(self, *a))[1])
    field = create_field("hashgrid", tiny_scene.aabb, log2_table=12, max_resolution=64)
    runner = engine.StepRunner(field, PhotoObjective(ImageTeacher.from_scene(tiny_scene)),
                               engine.TrainConfig(steps=2, batch_rays=256, target_samples=None, progress=False),
                               torch.Generator().manual_seed(0))
    pipeline = SimpleNamespace(photos=None, runner=runner, model=SimpleNamespace(device=torch.device("cpu"), distillation=None))
    for k in range(2):
        loss, losses, metrics = RadistillPipeline.radistill_step(pipeline, k, k / 2)
        assert torch.isfinite(loss) and metrics["rays"] == 256
    assert seen == [True, True] and not torch.are_deterministic_algorithms_enabled()
