"""The pipeline of radistill's nerfstudio methods: nerfstudio's data, radistill's training step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline
from torch import Tensor

from radistill.distill.engine import StepRunner, TrainConfig, restore_training_checkpoint, save_training_checkpoint
from radistill.distill.objectives import DistillConfig, PhotoObjective, objective_for
from radistill.distill.teachers import RayBatch
from radistill.nerfstudio.model import RadistillModel, composite
from radistill.rng import deterministic_on_cpu


class NerfstudioPhotos:
    """nerfstudio's training rays and pixels as the photos of radistill's ``PhotoObjective``
    (the batch size is the data manager's ``train_num_rays_per_batch``)."""

    def __init__(self, datamanager: Any, model: RadistillModel) -> None:
        self.datamanager, self.model = datamanager, model
        self.background = model.background.detach().cpu()
        self.step = 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> RayBatch:
        ray_bundle, batch = self.datamanager.next_train(self.step)
        return RayBatch(self.model.rays(ray_bundle), composite(batch["image"].to(self.model.device), self.model.background))


class RadistillPipeline(VanillaPipeline):
    """A ``VanillaPipeline`` (data manager, model, evaluation) whose training step is radistill's."""

    model: RadistillModel

    def start(self, total_steps: int) -> None:
        """Set up the step runner for a run of ``total_steps`` iterations."""
        model, config = self.model, self.config
        generator = torch.Generator().manual_seed(config.seed)
        job = model.distillation
        self.photos = None
        if job is not None:
            job.teacher.field.to(model.device)
            objective = objective_for(job.teacher, generator, DistillConfig(), job.image_teacher, model.field)
            train_config = replace(job.train_config, steps=total_steps, batch_rays=config.batch_rays)
        else:
            self.photos = NerfstudioPhotos(self.datamanager, model)
            objective = PhotoObjective(self.photos)
            train_config = TrainConfig(steps=total_steps, batch_rays=config.batch_rays, target_samples=None)
        self.runner = StepRunner(model.field, objective, train_config, generator)

    def save_radistill_state(self, path: Path, step: int) -> None:
        """radistill's training state (optimiser moments, random state, batch size, the objective's
        pools) as a radistill training checkpoint: nerfstudio's own checkpoint holds the field only."""
        runner = self.runner
        save_training_checkpoint(path, self.model.field, runner.opt, step, 0.0, 0, runner.generator, runner.config,
                                 {"train_batch_rays": runner.batch_rays}, runner.objective.state())

    def load_radistill_state(self, path: Path) -> int:
        """Restore what ``save_radistill_state`` wrote; returns its step."""
        runner = self.runner
        step, _, _, runner.batch_rays, runner.opt = restore_training_checkpoint(path, self.model.field, runner.generator,
                                                                                runner.objective)
        return step

    def radistill_step(self, step: int, progress: float) -> Tuple[Tensor, Dict[str, Tensor], Dict[str, Any]]:
        """One optimisation step; returns the loss, the loss parts and the metrics nerfstudio logs."""
        if self.photos is not None:
            self.photos.step = step
        with deterministic_on_cpu(self.model.device):  # as in `radistill train`: the same run twice, the same field
            out = self.runner.step(step, progress)
        loss = out.loss.detach()
        losses = {"loss": loss, **{k: torch.tensor(float(v)) for k, v in out.parts.items()}}
        metrics: Dict[str, Any] = {"samples": out.n_samples, "rays": self.runner.batch_rays}
        if out.psnr == out.psnr:  # not NaN
            metrics["psnr"] = out.psnr
        if self.model.distillation is not None:
            metrics["stage"] = out.stage
        return loss, losses, metrics
