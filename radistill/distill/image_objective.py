"""Distillation into a rasterising student (Gaussians, meshes): whole rendered views.

Such a student has no junction and no use for point losses; it learns what PVD's third stage
teaches, from whole images: each step renders one view with the student's rasteriser and
compares it with the teacher's render of the same view, with 3DGS's loss
``(1 - l) L1 + l (1 - SSIM)``, ``l = 0.2``.

Views come from a pool of ``active.view_pool`` teacher poses whose teacher renders are cached
(rendered on first use). Every ``refresh_every`` steps a sixteenth of the pool, chosen at random,
is replaced: with pose-level active learning, ``hard_view_fraction`` of the new views are
perturbed copies of the worst-rendered views (by the PSNR of their own renders), the rest fresh
random poses; without it, all are fresh. The ray and point levels do not apply to whole-image
students. When the original photos
are given, ``image_fraction`` of the steps use a random photo instead of a teacher view.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from radistill.distill.active import ViewPool
from radistill.distill.objectives import DistillConfig, StepLoss
from radistill.distill.teachers import FieldTeacher, ImageTeacher, ViewRenders
from radistill.metrics import ssim_tensor

SSIM_WEIGHT = 0.2


class ImageDistillObjective:
    """A rasterising student learning from a ``FieldTeacher``'s renders of whole views."""

    updates_occupancy = False

    def __init__(self, teacher: FieldTeacher, config: DistillConfig, generator: torch.Generator,
                 images: ImageTeacher | None = None) -> None:
        self.teacher = teacher
        self.config = config
        self.images = images
        self.background = teacher.background
        size = config.active.view_pool
        self.views = ViewPool(teacher, size, generator)  # ranked by the squared errors of the student's renders
        self.renders = ViewRenders(teacher, self.views)

    def target(self, view: int) -> Tensor:
        """The teacher's render of pool view ``view`` (rendered once).  # [H, W, 3]"""
        return self.renders.image(view)

    def step(self, student, n_rays: int, step: int, progress: float, generator: torch.Generator) -> StepLoss:
        al = self.config.active
        if step > 0 and step % al.refresh_every == 0:
            self.refresh(generator)
        device = student.aabb.device
        bg = self.background.to(device)
        use_photo = self.images is not None and float(torch.rand((), generator=generator)) < self.config.image_fraction
        if use_photo:
            k = int(torch.randint(len(self.images.cameras), (), generator=generator))
            cams, index, target, view = self.images.cameras, k, self.images.images[k], -1
        else:
            view = int(torch.randint(self.views.c2w.shape[0], (), generator=generator))
            cams, index, target = self.teacher.views(self.views.c2w[view:view + 1]), 0, self.target(view)
        target = target.to(device)
        rgb = student.render_image(cams, index, bg)["rgb"]
        l1 = (rgb - target).abs().mean()
        dssim = 1 - ssim_tensor(rgb, target)
        loss = (1 - SSIM_WEIGHT) * l1 + SSIM_WEIGHT * dssim
        mse = float(((rgb.detach() - target) ** 2).mean())
        if view >= 0:
            self.views.record(torch.tensor([view]), torch.tensor([mse]))
        psnr = -10 * math.log10(max(mse, 1e-10))
        parts = {"photo_l1" if use_photo else "l1": float(l1.detach()), "dssim": float(dssim.detach())}
        return StepLoss(loss, rgb.shape[0] * rgb.shape[1], psnr, 3, parts)

    def refresh(self, generator: torch.Generator) -> None:
        """Replace a sixteenth of the pool (see the module docstring); their renders are redone on use."""
        al = self.config.active
        self.renders.renew(generator, al.hard_view_fraction if al.poses else 0.0)

    def state(self) -> dict[str, Tensor]:
        """The pool (the cached teacher renders are not saved: they are re-rendered on demand)."""
        return self.views.state()

    def load(self, state: dict[str, Tensor]) -> None:
        self.views.load(state)
        self.renders.forget()
