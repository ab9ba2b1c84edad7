"""nerfstudio's trainer (viewer, logging, evaluation, checkpoints) driving radistill's training step."""

from __future__ import annotations

from typing import Literal

from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils.decorators import check_main_thread

from radistill.nerfstudio.pipeline import RadistillPipeline


class RadistillTrainer(Trainer):
    """Each iteration is one step of radistill's engine with radistill's own optimiser; every
    checkpoint also writes the field as ``<kind>.safetensors`` in the run folder, and a
    distillation into Gaussians also writes a splatfacto run beside it."""

    pipeline: RadistillPipeline

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)
        self.pipeline.start(self.config.max_num_iterations)

    def train_iteration(self, step: int):
        progress = min(step / max(self.config.max_num_iterations, 1), 1.0)
        return self.pipeline.radistill_step(step, progress)

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        super().save_checkpoint(step)
        from radistill.nerfstudio.outputs import write_outputs

        write_outputs(self.pipeline.model, self.config, step, self.pipeline.datamanager)
