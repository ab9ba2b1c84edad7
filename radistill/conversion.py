"""Any-to-any conversion: a trained field in, a field of another kind out.

``convert`` is the whole job in one call: load the teacher, build the student with
``from_teacher``, distill it (PVD stages with active learning), save it, and report how close
it came to the teacher (and to held-out photos when they are given).

Example:
    >>> import radistill
    >>> result = radistill.convert("outputs/demo/hashgrid.safetensors", to="mlp",
    ...                            config=radistill.ConvertConfig(max_seconds=60))
    >>> result.report["psnr_vs_teacher"]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from radistill.devices import resolve_device
from radistill.distill.engine import TrainConfig, TrainResult, train
from radistill.distill.objectives import DistillConfig
from radistill.distill.teachers import FieldTeacher, ImageTeacher
from radistill.errors import ConfigError
from radistill.fields.base import Representation, config_from_dict, kind_class
from radistill.io.checkpoint import save_field
from radistill.metrics import psnr
from radistill.rng import deterministic_on_cpu


MIN_VIEW_SIZE = 8
SEEDING_VIEW_SIZE = 128
"""Longest side of the views ``from_teacher`` seeds a student from."""


@dataclass
class ConvertConfig:
    """A conversion: the distillation and the loop that runs it."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    """Stages, loss weights, active learning."""
    max_seconds: float | None = None
    """Wall-clock budget (the stages keep their shares of it); None: run all stage steps."""
    batch_rays: int | None = None
    """Most rays per step (default: the student kind's own, 256 for mlp, else 1024)."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints (0: only at the end)."""
    seed: int = 0
    progress: bool = True
    report_views: int = 8
    """Random teacher poses on which the final report compares student and teacher."""
    device: str = "cpu"
    """Where teacher and student run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when there
    is one). The student is built from the teacher on the CPU, then both move there: a teacher
    field passed in as an object moves too (``nn.Module.to``, in place; it is not copied, so a
    large teacher is never held twice)."""
    view_size: int | None = None
    """Longest side, in pixels, of the views the teacher renders and the student learns from:
    the teacher's cameras scaled down to it (never up). None: the cameras' own size. The
    student's checkpoint keeps the cameras at their own size."""

    def __post_init__(self) -> None:
        if self.view_size is not None and self.view_size < MIN_VIEW_SIZE:
            raise ConfigError(f"view_size must be at least {MIN_VIEW_SIZE} pixels, got {self.view_size}")
        if self.report_views < 0:
            raise ConfigError(f"report_views must be 0 (no report) or more, got {self.report_views}")

    def train_config(self, default_batch_rays: int = 4096) -> TrainConfig:
        return TrainConfig(steps=self.distill.steps, max_seconds=self.max_seconds,
                           batch_rays=self.batch_rays or default_batch_rays,
                           checkpoint_every=self.checkpoint_every, seed=self.seed, progress=self.progress)


@dataclass
class ConvertResult:
    student: Representation
    train: TrainResult
    report: dict[str, Any]
    path: Path | None = None


def convert(teacher: str | Path | Representation | FieldTeacher, to: str, config: ConvertConfig | None = None,
            student_options: dict[str, Any] | None = None, images: Any = None, output: str | Path | None = None,
            resume: bool = False) -> ConvertResult:
    """Convert a trained field to another kind.

    Args:
        teacher: a radistill checkpoint path, a field, or a ``FieldTeacher``.
        to: the student's kind (``mlp``, ``hashgrid``, ``tensorf-vm``, ``tensorf-cp``, ``gaussians``, ``mesh``).
        config: distillation options (defaults: the student kind's stage steps, 3000 in all, or the
            whole of ``max_seconds``; all active learning on).
        student_options: options of the student's kind, e.g. ``{"log2_table": 17}``.
        images: a ``SceneData`` of the original photos: mixed into stage 3, and the report
            adds the held-out PSNR.
        output: folder for ``checkpoint.safetensors`` (resumable), ``<kind>.safetensors`` and
            ``report.json``; None keeps everything in memory. For ``gaussians`` it may be a
            ``.ply`` or ``.splat`` file, for ``mesh`` a ``.glb`` or ``.obj``: the result is
            exported there, and the folder beside it named ``<stem>_convert`` holds the rest.
        resume: continue an interrupted conversion in ``output``.
    """
    config = config or ConvertConfig()
    source = str(teacher) if isinstance(teacher, (str, Path)) else None
    out_dir, export = _output_paths(output, to)
    device = resolve_device(config.device)  # a bad name fails before any work
    with deterministic_on_cpu("cpu"):  # seeding and fitting a student run on the CPU
        job = prepare_distillation(teacher, to, config, student_options, images)
    teacher, student, metadata = job.teacher, job.student.to(device), job.metadata
    teacher.field.to(device)
    if source is not None:
        metadata["teacher"] = source
    result = train(student, teacher, job.train_config, out_dir, resume, metadata, config.distill, job.image_teacher)
    t0 = time.perf_counter()
    report = {"from": teacher.kind, "to": to, "steps": result.steps, "seconds": round(result.seconds, 1),
              "samples_per_s": round(result.samples_per_s)}
    report.update(compare_on_views(student, teacher, config.report_views))
    if images is not None and images.test_indices:
        from radistill.evaluate import evaluate_split

        report["psnr_heldout"] = round(evaluate_split(student, images, "test")["psnr"], 3)
    report["report_seconds"] = round(time.perf_counter() - t0, 1)
    path = None
    if out_dir is not None:
        path = save_field(out_dir / f"{to}.safetensors", student, extra_metadata=metadata)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if export is not None:
        path = export_field(export, student)
    return ConvertResult(student, result, report, path)


@dataclass
class Distillation:
    """A conversion ready to run: the teacher, the student ``from_teacher`` built, and how to train it."""

    teacher: FieldTeacher
    student: Representation
    train_config: TrainConfig
    image_teacher: ImageTeacher | None
    metadata: dict[str, Any]


def prepare_distillation(teacher: str | Path | Representation | FieldTeacher, to: str, config: ConvertConfig,
                         student_options: dict[str, Any] | None = None, images: Any = None) -> Distillation:
    """Everything ``convert`` does before its loop (shared with the nerfstudio plugin, whose
    trainer runs the loop): check the pair, build the student from the teacher, pick the
    photos or mesh renders that stage 3 mixes in."""
    teacher = _as_teacher(teacher)
    cameras = teacher.cameras  # the student keeps them at their own size
    teacher = teacher.at_view_size(config.view_size)
    cls = kind_class(to)
    if to == teacher.kind:
        raise ConfigError(f"the teacher is already a {to!r} field; pick another --to kind")
    if not hasattr(cls, "from_teacher"):
        raise ConfigError(f"{to!r} cannot be distilled from a teacher")
    config = replace(config, distill=config.distill.for_student(cls, config.max_seconds))
    image_teacher = None
    if images is not None:
        _check_same_scene(teacher, images)
        image_teacher = ImageTeacher.from_scene(images)
    elif (getattr(teacher.field, "learns_from_images", False) and not teacher.teaches_by_renders
          and not getattr(cls, "learns_from_images", False)):
        image_teacher = rendered_views(teacher, rendered_view_count(teacher, config, cls.student_batch_rays), config.seed)
    options = config_from_dict(cls.Config, dict(student_options or {}), source=f"{to} options")
    torch.manual_seed(config.seed)
    seeding = teacher.at_view_size(SEEDING_VIEW_SIZE)  # seeding needs surfaces, not detail
    views = seeding.views(seeding.sample_poses(32, torch.Generator().manual_seed(config.seed)))
    student = cls.from_teacher(teacher.field, options, views)
    metadata = {"cameras": cameras.to_dict(), "background": teacher.background.tolist(),
                "converted_from": teacher.kind, "distill_config": asdict(config.distill)}
    return Distillation(teacher, student, config.train_config(cls.student_batch_rays), image_teacher, metadata)


EXPORT_SUFFIXES = {".ply": "gaussians", ".splat": "gaussians", ".glb": "mesh", ".obj": "mesh"}
"""File outputs of a conversion and the kind each holds."""


def _output_paths(output: str | Path | None, to: str) -> tuple[Path | None, Path | None]:
    """The working folder and, for a file output (``.ply``/``.splat``/``.glb``/``.obj``), the file to export."""
    if output is None:
        return None, None
    output = Path(output)
    holds = EXPORT_SUFFIXES.get(output.suffix.lower())
    if holds is None:
        return output, None
    if to != holds:
        raise ConfigError(f"--output {output}: a {output.suffix} file holds a {holds} scene; converting to {to!r} "
                          f"needs a folder")
    return output.with_name(output.stem + "_convert"), output


def export_field(path: Path, field: Representation) -> Path:
    """Write ``field`` to an exchange file by its suffix (3DGS ``.ply``/``.splat``, mesh ``.glb``/``.obj``)."""
    if field.kind == "mesh":
        from radistill.io.mesh import save_mesh

        return save_mesh(path, field)
    from radistill.io.ply import save_gaussians

    return save_gaussians(path, field)


RENDERED_VIEWS = 64
"""Most of the teacher's own renders mixed into stage 3 (``rendered_views``)."""
MIN_RENDERED_VIEWS = 4


def rendered_view_count(teacher: FieldTeacher, config: ConvertConfig, default_batch_rays: int) -> int:
    """How many renders stage 3 can use: about as many as its photo rays would cover once
    (``RENDERED_VIEWS`` at most, ``MIN_RENDERED_VIEWS`` at least; when the time alone ends the
    run, its settled steps are far more than it reaches, so ``RENDERED_VIEWS``). Each render of
    a mesh costs about a tenth of a second at 100x100: a short run no longer waits for 64."""
    s3 = config.distill.settled_stage_steps[2]
    batch = config.batch_rays or default_batch_rays
    photo_rays = s3 * int(batch * config.distill.image_fraction)
    pixels = teacher.cameras.width * teacher.cameras.height
    return int(min(RENDERED_VIEWS, max(MIN_RENDERED_VIEWS, math.ceil(photo_rays / pixels))))


def rendered_views(teacher: FieldTeacher, n: int, seed: int = 0) -> ImageTeacher:
    """The teacher's own renders of ``n`` random poses, as photos.

    A mesh teaches neural students its volumetric view at the point level, which only
    approximates its rasterised images; mixing these renders into stage 3
    (``DistillConfig.image_fraction`` of each batch) pulls the student to what the teacher
    really shows. (Gaussians teach by their renders alone: ``DistillObjective``.)
    """
    from radistill.evaluate import render_image

    cams = teacher.views(teacher.sample_poses(n, torch.Generator().manual_seed(seed + 7)))
    images = torch.stack([render_image(teacher.field, cams, k, teacher.background)["rgb"] for k in range(n)])
    return ImageTeacher(images, cams, teacher.background)


def compare_on_views(student: Representation, teacher: FieldTeacher, n_views: int, seed: int = 1234) -> dict[str, float]:
    """PSNR of the student against the teacher's own renders of ``n_views`` random teacher poses."""
    from radistill.evaluate import render_image

    if n_views <= 0:
        return {}
    generator = torch.Generator().manual_seed(seed)
    cams = teacher.views(teacher.sample_poses(n_views, generator))
    scores = []
    student.eval()
    for k in range(n_views):
        ref = render_image(teacher.field, cams, k, teacher.background)["rgb"]
        pred = render_image(student, cams, k, teacher.background)["rgb"]
        scores.append(psnr(pred, ref))
    student.train()
    return {"psnr_vs_teacher": round(sum(scores) / len(scores), 3), "report_views": n_views,
            "report_view_size": [cams.width, cams.height]}


def _as_teacher(teacher: Any) -> FieldTeacher:
    if isinstance(teacher, FieldTeacher):
        return teacher
    if isinstance(teacher, (str, Path)):
        return FieldTeacher.from_checkpoint(teacher)
    if isinstance(teacher, Representation):
        return FieldTeacher(teacher)
    raise ConfigError(f"a teacher must be a checkpoint path, a field or a FieldTeacher, not {type(teacher).__name__}")


def _check_same_scene(teacher: FieldTeacher, scene: Any) -> None:
    """The photos must live in the teacher's frame: same aabb (within 1%)."""
    a, b = teacher.field.aabb.detach().cpu(), scene.aabb.cpu()
    tol = 0.01 * float((a[1] - a[0]).norm())
    if not torch.allclose(a, b, atol=tol):
        raise ConfigError(f"the teacher's aabb {a.tolist()} does not match the aabb of the photos' scene "
                          f"{scene.name!r} {b.tolist()}: were they made from the same capture?")
