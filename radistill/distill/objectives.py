"""What one training step optimises: photos (``PhotoObjective``) or a teacher field (``DistillObjective``).

Progressive volume distillation (PVD) runs in three stages, each adding losses to the last:

1. the junction: the student's 16-d junction (clamped raw log-density + 15 features) against
   the teacher's, at the same points (neural teacher and student only);
2. + density in log space (both clamped to the shared range) and point colour;
3. + the student's rendering against the teacher's rendering of the same rays.

Teacher and student are evaluated on the *same* packed samples, marched through the student's
occupancy grid (which ``from_teacher`` filled from the teacher's visible density). In stages 1
and 2 the student is queried only at the points that get point losses, so with point-level
active learning those stages cost little more than the teacher's own rendering.

Gaussians are different: their point answers are a volumetric view that only approximates the
images they draw, so their students skip to stage 3 and learn the colours of their own renders
(``ViewRenders``) through pixel-centre rays (``volumetric_view_teaches = False``). Measured on
lego (a hashgrid student of the benchmark's Gaussians, 2 CPU minutes): 23.5 dB held-out through
the volumetric view, 27.1 dB with the renders in stage 3 after stages 1-2, 28.3 dB with the
renders alone. A mesh teaches through its volumetric view (a soft shell at its surface), with
its renders mixed into stage 3 (``conversion.rendered_views``): taught by its renders alone, a
hash grid learning the demo's mesh for 40 s stayed grey, although on lego it did better
(27.7 against 25.1 dB held-out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from radistill.cameras import Rays
from radistill.distill.active import ActiveConfig, HardRayPool, ViewPool, select_points
from radistill.distill.teachers import FieldTeacher, ImageTeacher, ViewRenders
from radistill.errors import ConfigError
from radistill.fields.neural import RAW_MAX, RAW_MIN
from radistill.render.volume import composite, march

LOG_DENSITY_MIN, LOG_DENSITY_MAX = RAW_MIN, RAW_MAX


@dataclass
class StepLoss:
    """One step's loss and what the progress bar and history show."""

    loss: Tensor
    n_samples: int
    psnr: float  # of the rendered colour when the step rendered, else NaN
    stage: int = 3
    parts: dict[str, float] = field(default_factory=dict)


class PhotoObjective:
    """Training from posed photos: the rendered colour of random pixels against the photo."""

    updates_occupancy = True

    def __init__(self, teacher: ImageTeacher) -> None:
        self.teacher = teacher
        self.background = teacher.background

    def step(self, student, n_rays: int, step: int, progress: float, generator: torch.Generator) -> StepLoss:
        batch = self.teacher.sample(n_rays, generator)
        device = student.aabb.device
        out = student.render(batch.rays.to(device), self.background.to(device), perturb=True, generator=generator)
        loss = torch.mean((out.rgb - batch.rgb.to(device)) ** 2)
        return StepLoss(loss, out.n_samples, _psnr(float(loss.detach())))

    def state(self) -> dict[str, Tensor]:
        return {}

    def load(self, state: dict[str, Tensor]) -> None:
        pass


@dataclass
class DistillConfig:
    """Stages, loss weights and active learning of a distillation (PVD-AL)."""

    stage_steps: tuple[int, int, int] | None = None
    """Steps of stage 1 (junction), 2 (+ log density and point colour) and 3 (+ rendered colour).
    Under a time budget the stages keep these shares of the time. None: the student kind's own
    (``Representation.student_stage_steps``: 400, 600, 2000; an mlp spends more of them in stage
    2), settled by ``for_student`` before the config is used."""
    junction_weight: float = 1.0
    density_weight: float = 0.1
    """Weight of the log-density loss, times the teacher's ``density_loss_scale`` (a mesh's 0.1)."""
    color_weight: float = 1.0
    rgb_weight: float = 1.0
    active: ActiveConfig = field(default_factory=ActiveConfig)
    image_fraction: float = 0.25
    """Share of each stage-3 batch taken from the original photos, when they are given."""

    def __post_init__(self) -> None:
        if self.stage_steps is not None and (len(self.stage_steps) != 3 or any(s < 0 for s in self.stage_steps)
                                             or sum(self.stage_steps) == 0):
            raise ConfigError(f"stage_steps must be three non-negative step counts with a positive sum, "
                              f"got {self.stage_steps}")
        if not 0 <= self.image_fraction < 1:
            raise ConfigError(f"image_fraction must be in [0, 1), got {self.image_fraction}")

    def for_student(self, student: Any, max_seconds: float | None = None) -> "DistillConfig":
        """This config with its stage steps settled for ``student`` (a field or its class): the
        kind's own when none were given. Under a time budget (``max_seconds``) they are scaled
        far beyond what the budget reaches, so that the time, not the steps, ends the run."""
        if self.stage_steps is not None:
            return self
        steps = tuple(student.student_stage_steps)
        if max_seconds is not None:
            steps = tuple(s * 1000 for s in steps)
        return replace(self, stage_steps=steps)

    @property
    def settled_stage_steps(self) -> tuple[int, int, int]:
        if self.stage_steps is None:  # a code path that forgot for_student: the kind's shares would be lost
            raise RuntimeError("DistillConfig.stage_steps is unset: settle it with for_student(student) first")
        return tuple(self.stage_steps)

    @property
    def steps(self) -> int:
        return sum(self.settled_stage_steps)

    def stage_at(self, progress: float) -> int:
        """The stage (1, 2 or 3) in force at ``progress`` in [0, 1] of the run."""
        s1, s2, _ = self.settled_stage_steps
        total = self.steps
        if progress < s1 / total:
            return 1
        if progress < (s1 + s2) / total:
            return 2
        return 3


def log_density(sigma: Tensor) -> Tensor:
    """Log-density clamped to the range every neural kind shares.  # [N]"""
    return torch.log(sigma.clamp(math.exp(LOG_DENSITY_MIN), math.exp(LOG_DENSITY_MAX)))


def clamped_junction(junction: Tensor) -> Tensor:
    """The junction with its raw log-density clamped to the shared range.  # [N, 16]"""
    return torch.cat([junction[:, :1].clamp(LOG_DENSITY_MIN, LOG_DENSITY_MAX), junction[:, 1:]], -1)


class DistillObjective:
    """A student learning from a ``FieldTeacher`` through the three PVD stages with active learning."""

    updates_occupancy = False  # the student's grid already holds the teacher's scene

    def __init__(self, teacher: FieldTeacher, config: DistillConfig, generator: torch.Generator,
                 images: ImageTeacher | None = None) -> None:
        self.teacher = teacher
        config.settled_stage_steps  # fails now, not mid-run, on a config nobody settled
        self.config = config
        self.images = images
        self.background = teacher.background
        self.views = ViewPool(teacher, config.active.view_pool, generator)
        self.hard_rays = HardRayPool(config.active.ray_pool)
        self.renders = ViewRenders(teacher, self.views) if teacher.teaches_by_renders else None
        self.junction_scale = torch.zeros(0)  # set on the first junction loss
        self.stage = 0  # the stage of the last step: ray errors of different stages are not comparable

    def step(self, student, n_rays: int, step: int, progress: float, generator: torch.Generator) -> StepLoss:
        cfg, al = self.config, self.config.active
        stage = 3 if self.renders is not None else cfg.stage_at(progress)
        if stage != self.stage:
            self.hard_rays = HardRayPool(al.ray_pool)
            self.stage = stage
        if step > 0 and step % al.refresh_every == 0:
            self._refresh_views(generator)
        n_photo = int(n_rays * cfg.image_fraction) if (self.images is not None and stage == 3) else 0
        rays, view, pool_slots, ray_rgb = self._draw_rays(n_rays - n_photo, generator)
        device = student.aabb.device
        rays = rays.to(device)
        backend = student.config.backend
        samples = march(rays, student.aabb, student.step_size, student.occupancy, True, generator, backend=backend)
        early_stop = student.config.early_stop
        viewdirs = rays.viewdirs[samples.ray_ids]
        bg = self.background.to(device)
        point_losses = self.renders is None  # Gaussians teach by their renders only
        if point_losses:
            t = self.teacher.query(samples.positions, viewdirs)
            t_comp = composite(t.sigma, t.rgb, samples, early_stop, backend=backend)
            target = t_comp.rgb + (1 - t_comp.opacity)[:, None] * bg
            if al.points:
                points = select_points(t_comp.weights, samples.ray_ids, t_comp.opacity, al.top_k, al.opaque_threshold,
                                       al.random_point_fraction, generator)
            else:
                points = torch.arange(samples.ray_ids.numel(), device=device)
        else:
            target = ray_rgb.to(device)
            points = torch.zeros(0, dtype=torch.long, device=device)

        parts: dict[str, Tensor] = {}
        rendered = None
        if stage == 3:
            s_all = student.query(samples.positions, viewdirs)
            s_comp = composite(s_all.sigma, s_all.rgb, samples, early_stop, backend=backend)
            rendered = s_comp.rgb + (1 - s_comp.opacity)[:, None] * bg
            s_sigma, s_rgb = s_all.sigma[points], s_all.rgb[points]
            s_junction = None if s_all.junction is None else s_all.junction[points]
            n_samples = samples.ray_ids.numel()
        else:
            s = student.query(samples.positions[points], viewdirs[points])
            s_sigma, s_rgb, s_junction = s.sigma, s.rgb, s.junction
            n_samples = points.numel()

        point_error = torch.zeros(points.numel(), device=device)
        if point_losses and s_junction is not None and t.junction is not None:
            scale = self._junction_scale(t.junction[points])
            err = (((clamped_junction(s_junction) - clamped_junction(t.junction[points])) / scale) ** 2).mean(-1)
            parts["junction"] = cfg.junction_weight * _mean(err)
            point_error = point_error + err.detach()
        if point_losses and (stage >= 2 or parts.get("junction") is None):
            d_err = (log_density(s_sigma) - log_density(t.sigma[points])) ** 2
            c_err = ((s_rgb - t.rgb[points]) ** 2).mean(-1)
            parts["density"] = cfg.density_weight * self.teacher.field.density_loss_scale * _mean(d_err)
            parts["color"] = cfg.color_weight * _mean(c_err)
            point_error = point_error + c_err.detach()
        if rendered is not None:
            ray_error = ((rendered - target) ** 2).mean(-1)
            parts["rgb"] = cfg.rgb_weight * ray_error.mean()
            ray_error = ray_error.detach()
        else:  # rank rays by their mean point error until the student renders
            ids = samples.ray_ids[points]
            ray_error = torch.zeros(len(rays), device=device).index_add(0, ids, point_error)
            ray_error = ray_error / torch.bincount(ids, minlength=len(rays)).clamp(min=1)
        if n_photo:
            batch = self.images.sample(n_photo, generator)
            out = student.render(batch.rays.to(device), bg, perturb=True, generator=generator)
            parts["photo"] = torch.mean((out.rgb - batch.rgb.to(device)) ** 2)
            n_samples += out.n_samples

        self.views.record(view, ray_error.cpu())
        if al.rays:
            ray_samples = torch.bincount(samples.ray_ids, minlength=len(rays)).cpu()
            self.hard_rays.update(rays, ray_error.cpu(), pool_slots, ray_rgb, ray_samples)
        loss = sum(parts.values())
        psnr = _psnr(float(parts["rgb"].detach()) / cfg.rgb_weight) if "rgb" in parts and cfg.rgb_weight else math.nan
        return StepLoss(loss, n_samples, psnr, stage, {k: float(v.detach()) for k, v in parts.items()})

    def _junction_scale(self, teacher_junction: Tensor) -> Tensor:
        """What the junction's squared errors are divided by, channel by channel: 1 for the raw
        log-density, and the spread of each teacher feature where it is at least 1. Features
        of some kinds are far larger than others' (standard deviations on lego: hashgrid 0.5,
        mlp 1.8, tensorf-vm 2.9, tensorf-cp 7.0), and unscaled, a large teacher's junction
        drowns the colour losses. Measured once, on the first points, and kept (and saved)
        so that the loss stays one function for the whole run.  # [16]"""
        if self.junction_scale.numel() == 0:
            spread = teacher_junction.detach().float().std(0) if teacher_junction.shape[0] > 1 else \
                torch.ones(teacher_junction.shape[1], device=teacher_junction.device)
            scale = spread.clamp_min(1.0)
            scale[0] = 1.0
            self.junction_scale = scale.cpu()
        return self.junction_scale.to(teacher_junction.device)

    def _refresh_views(self, generator: torch.Generator) -> None:
        """New views in play: the whole pool, or, for a teacher that teaches by its renders (each
        view costs one), a sixteenth of it (``ViewRenders.renew``)."""
        al = self.config.active
        if self.renders is None:
            self.views.refresh(generator, al.hard_view_fraction if al.poses else 0.0)
        else:
            self.renders.renew(generator, al.hard_view_fraction if al.poses else 0.0)

    def _draw_rays(self, n: int, generator: torch.Generator) -> tuple[Rays, Tensor, Tensor, Tensor | None]:
        """Pool rays first (hard-ray level), then fresh rays of the views in play: the rays, the
        view of each (-1 for pool rays), the pool slots taken, and, for a teacher that teaches by
        its renders, the colour of each ray in those renders (pixel-centre rays). At most ``n``
        rays: pool rays that take more samples than fresh ones stand in for more than one."""
        al = self.config.active
        share = int(n * al.hard_ray_fraction) if al.rays and len(self.hard_rays) else 0
        # hard rays are paid for in samples: as many as fit in what ``share`` fresh rays would take
        hard, slots, hard_rgb = self.hard_rays.take(share, generator, self.hard_rays.budget(share))
        n_hard = slots.numel()
        if self.renders is None:
            fresh, view = self.views.sample_rays(n - share, generator)
            rgb = None
        else:
            fresh, view, px, py = self.views.sample_pixels(n - share, generator)
            rgb = torch.cat([hard_rgb, self.renders.colors(view, px, py)])
        view = torch.cat([torch.full((n_hard,), -1, dtype=torch.long), view])
        return Rays.cat([hard, fresh]), view, slots, rgb

    def state(self) -> dict[str, Tensor]:
        out = {f"views.{k}": v for k, v in self.views.state().items()}
        out.update({f"rays.{k}": v for k, v in self.hard_rays.state().items()})
        out["stage"] = torch.tensor(self.stage)
        out["junction_scale"] = self.junction_scale
        return out

    def load(self, state: dict[str, Tensor]) -> None:
        self.views.load({k[6:]: v for k, v in state.items() if k.startswith("views.")})
        self.hard_rays.load({k[5:]: v for k, v in state.items() if k.startswith("rays.")})
        if self.renders is not None:
            self.renders.forget()
        self.stage = int(state["stage"])
        self.junction_scale = state.get("junction_scale", torch.zeros(0)).clone()


def _mean(x: Tensor) -> Tensor:
    return x.mean() if x.numel() else x.sum()


def _psnr(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-10))


def objective_for(teacher: Any, generator: torch.Generator, config: DistillConfig | None = None,
                  images: ImageTeacher | None = None, student: Any = None):
    """The objective with which ``student`` learns from ``teacher`` (photos or a field): PVD for
    volumetric students, whole rendered views for rasterising ones."""
    if isinstance(teacher, (PhotoObjective, DistillObjective)):
        return teacher
    rasterising = getattr(student, "learns_from_images", False)
    if isinstance(teacher, ImageTeacher):
        if rasterising:
            raise ConfigError(f"a {student.kind} field is not trained from photos here: convert a trained field to it "
                              f"(radistill convert FIELD --to {student.kind}) or import one")
        return PhotoObjective(teacher)
    if isinstance(teacher, FieldTeacher):
        if rasterising:
            from radistill.distill.image_objective import ImageDistillObjective

            return ImageDistillObjective(teacher, (config or DistillConfig()).for_student(student), generator, images)
        return DistillObjective(teacher, (config or DistillConfig()).for_student(student), generator, images)
    raise ConfigError(f"cannot learn from a {type(teacher).__name__}; expected an ImageTeacher or a FieldTeacher")
