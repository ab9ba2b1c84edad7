"""A radistill field as a nerfstudio ``Model``: the viewer, evaluation and checkpoints of nerfstudio,
radistill's renderer underneath.

Training does not go through nerfstudio's optimisers: ``RadistillTrainer`` runs radistill's own
step (``radistill.distill.engine.StepRunner``) once per iteration, so a hashgrid trains here
exactly as ``radistill train`` trains it, and a distillation runs the PVD stages of
``radistill convert``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras as NsCameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model
from torch import Tensor

from radistill.cameras import Cameras, Rays, Similarity
from radistill.errors import ConfigError
from radistill.io.nerfstudio import dataparser_transform


def composite(image: Tensor, background: Tensor) -> Tensor:
    """Colours [..., 3 or 4] in [0, 1] on ``background`` (alpha, when present, blends).  # [..., 3]"""
    image = image.float()
    if image.shape[-1] == 4:
        return image[..., :3] * image[..., 3:] + background.to(image) * (1.0 - image[..., 3:])
    return image[..., :3]


def psnr(a: Tensor, b: Tensor) -> Tensor:
    return -10.0 * torch.log10(torch.mean((a - b) ** 2).clamp_min(1e-10))


class RadistillModel(Model):
    """``config.kind`` trained from photos, or distilled from ``config.teacher`` (a nerfstudio run)."""

    def populate_modules(self) -> None:
        from radistill.conversion import ConvertConfig, prepare_distillation
        from radistill.fields import create_field
        from radistill.fields.base import parse_key_values

        super().populate_modules()
        config = self.config
        self.register_buffer("background", torch.tensor(config.background, dtype=torch.float32))
        self.distillation = None
        options = parse_key_values(config.options, "--pipeline.model.options")
        if config.teacher is not None:
            convert_config = ConvertConfig(progress=False, view_size=config.view_size)
            self.distillation = prepare_distillation(str(config.teacher), config.kind, convert_config, options)
            self.field = self.distillation.student
            # the student lives in the teacher's world frame (the run is imported there); self.frame
            # moves it into nerfstudio's normalised frame, where the rays of this pipeline come from
            self.frame = dataparser_transform(Path(config.teacher))
        else:
            from radistill.fields import kind_class

            if getattr(kind_class(config.kind), "learns_from_images", False):
                raise ConfigError(f"{config.kind} are not trained from photos by radistill: distil them from a run "
                                  f"(ns-train radistill-distill --teacher RUN --to {config.kind})")
            self.field = create_field(config.kind, self.scene_box.aabb.float(), **options)
            self.frame = Similarity.identity()  # trained from nerfstudio's photos: in its frame already

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return {}  # radistill's optimiser owns the field's parameters (see RadistillTrainer)

    def rays(self, ray_bundle: RayBundle) -> Rays:
        """nerfstudio rays (its frame) as radistill rays in the field's frame."""
        to_field = self.frame.inverse()
        origins = to_field.points(ray_bundle.origins.reshape(-1, 3))
        dirs = torch.nn.functional.normalize(to_field.directions(ray_bundle.directions.reshape(-1, 3)), dim=-1)
        zeros = torch.zeros(origins.shape[0], device=origins.device)
        return Rays(origins, dirs, dirs, zeros, zeros + 1e3)

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        out = self.field.render(self.rays(ray_bundle), self.background, perturb=self.training)
        return {"rgb": out.rgb, "accumulation": out.opacity[:, None], "depth": out.depth[:, None] * self.frame.scale}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: NsCameras, obb_box: Optional[Any] = None) -> Dict[str, Tensor]:
        """A whole image the way the kind draws one (Gaussians are rasterised, fields ray-marched)."""
        cam = camera[0:1] if camera.shape else camera.reshape((1,))
        c2w = self.frame.inverse().c2w(cam.camera_to_worlds.reshape(1, 3, 4).float().to(self.device))
        ours = Cameras(c2w.cpu(), cam.fx.reshape(1).float().cpu(), cam.fy.reshape(1).float().cpu(),
                       cam.cx.reshape(1).float().cpu(), cam.cy.reshape(1).float().cpu(),
                       int(cam.width.reshape(-1)[0]), int(cam.height.reshape(-1)[0]))
        out = self.field.render_image(ours, 0, self.background, chunk=self.config.eval_num_rays_per_chunk)
        return {"rgb": out["rgb"], "accumulation": out["opacity"][..., None],
                "depth": out["depth"][..., None] * self.frame.scale}

    def get_metrics_dict(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        gt = composite(batch["image"].to(self.device), self.background)
        return {"psnr": psnr(outputs["rgb"], gt)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        gt = composite(batch["image"].to(self.device), self.background)
        return {"rgb_loss": torch.mean((outputs["rgb"] - gt) ** 2)}

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt = composite(batch["image"].to(outputs["rgb"].device), self.background)
        rgb = outputs["rgb"].clamp(0, 1)
        return {"psnr": float(psnr(rgb, gt))}, {"img": torch.cat([gt, rgb], dim=1),
                                                "accumulation": outputs["accumulation"]}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Gaussians change in number while they train: size the field to the checkpoint first
        self.field.prepare_state({k[len("field."):]: v for k, v in state_dict.items() if k.startswith("field.")})
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
