"""nerfstudio's trainer (viewer, logging, evaluation, checkpoints) driving radistill's training step."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Optional

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
        resumed = self._resumed_checkpoint()
        if resumed is not None:  # --load-dir / --load-checkpoint: radistill's own state too
            state = radistill_state_path(resumed.parent, self._start_step - 1)
            if state.exists():
                self.pipeline.load_radistill_state(state)
            else:
                warnings.warn(f"{state} is missing: the field is restored, radistill's optimiser starts afresh",
                              stacklevel=2)

    def _resumed_checkpoint(self) -> Optional[Path]:
        """The nerfstudio checkpoint this run resumed from (None for a fresh run)."""
        if self.config.load_checkpoint is not None:
            return Path(self.config.load_checkpoint)
        if self.config.load_dir is not None:
            return Path(self.config.load_dir) / f"step-{self._start_step - 1:09d}.ckpt"
        return None

    def train_iteration(self, step: int):
        progress = min(step / max(self.config.max_num_iterations, 1), 1.0)
        return self.pipeline.radistill_step(step, progress)

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        super().save_checkpoint(step)
        state = radistill_state_path(self.checkpoint_dir, step)
        self.pipeline.save_radistill_state(state, step)
        if self.config.save_only_latest_checkpoint:
            for old in state.parent.glob("step-*.safetensors"):
                if old != state:
                    old.unlink()
        from radistill.nerfstudio.outputs import write_outputs

        write_outputs(self.pipeline.model, self.config, step, self.pipeline.datamanager)


def radistill_state_path(checkpoint_dir: Path, step: int) -> Path:
    """Where radistill's training state of checkpoint ``step`` lives: beside nerfstudio's
    ``nerfstudio_models/`` (whose every file nerfstudio reads as a checkpoint step)."""
    return Path(checkpoint_dir).parent / "radistill_state" / f"step-{step:09d}.safetensors"
