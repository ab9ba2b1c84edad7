"""nerfstudio method specifications (entry points of ``nerfstudio.method_configs``).

Every ``ns-*`` command imports this module, so it stays light: configuration dataclasses
only. The classes that run (``model.py``, ``pipeline.py``, ``trainer.py``) are imported by the
factories below when a run is set up, and an error there cannot break ``ns-train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple, Type

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

PHOTO_KINDS = {"mlp": "radistill-mlp", "hashgrid": "radistill-hashgrid", "tensorf-vm": "radistill-tensorf",
               "tensorf-cp": "radistill-tensorf-cp"}
"""radistill's kinds that train from photos, and their nerfstudio method names."""


class _Model:
    """Builds ``RadistillModel`` (imported only when a run is set up)."""

    def __new__(cls, config, **kwargs):
        from radistill.nerfstudio.model import RadistillModel

        return RadistillModel(config, **kwargs)


class _Pipeline:
    """Builds ``RadistillPipeline``."""

    def __new__(cls, config, **kwargs):
        from radistill.nerfstudio.pipeline import RadistillPipeline

        return RadistillPipeline(config, **kwargs)


class _Trainer:
    """Builds ``RadistillTrainer``."""

    def __new__(cls, config, **kwargs):
        from radistill.nerfstudio.trainer import RadistillTrainer

        return RadistillTrainer(config, **kwargs)


@dataclass
class RadistillModelConfig(ModelConfig):
    """A radistill field as a nerfstudio model."""

    _target: Type = field(default_factory=lambda: _Model)
    enable_collider: bool = False
    """radistill's renderer bounds rays by the field's box itself."""
    kind: str = "hashgrid"
    """radistill kind of the field: mlp, hashgrid, tensorf-vm, tensorf-cp (and, distilled, gaussians)."""
    teacher: Optional[Path] = None
    """A nerfstudio run to distill the field from (None: train from the photos)."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour behind the scene (images with alpha are composited on it)."""
    options: Tuple[str, ...] = ()
    """Options of the kind as key=value, as ``radistill convert --set`` takes them, e.g.
    ``--pipeline.model.options initial_gaussians=20000 sh_degree=1``."""
    view_size: Optional[int] = None
    """With a teacher: longest side in pixels of the views it renders for the distillation (its
    cameras scaled down to it, as ``radistill convert --view-size``; None: their own size)."""


@dataclass
class RadistillPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: _Pipeline)
    model: ModelConfig = field(default_factory=RadistillModelConfig)
    batch_rays: int = 4096
    """Most rays per step (radistill adapts the batch to about 2^17 samples, as Instant-NGP does)."""
    seed: int = 0


@dataclass
class RadistillTrainerConfig(TrainerConfig):
    """A run of one of radistill's kinds inside nerfstudio's trainer and viewer."""

    _target: Type = field(default_factory=lambda: _Trainer)


@dataclass
class RadistillDistillConfig(RadistillTrainerConfig):
    """Distil a nerfstudio run into a radistill kind inside nerfstudio's trainer and viewer."""

    teacher: Optional[Path] = None
    """The nerfstudio run to distill (outputs/<exp>/<method>/<time>/, e.g. a nerfacto or splatfacto run)."""
    to: str = "gaussians"
    """Kind to distill into: gaussians, hashgrid, mlp, tensorf-vm or tensorf-cp. With gaussians the run also
    writes a splatfacto run beside it (outputs/<exp>/splatfacto/<time>/) that nerfstudio's splatfacto
    model loads and ns-export gaussian-splat exports."""

    def __post_init__(self) -> None:
        model = self.pipeline.model
        if isinstance(model, RadistillModelConfig):
            model.kind = self.to
            model.teacher = self.teacher
        if self.teacher is not None:
            from radistill.nerfstudio.teacher_run import adopt_teacher_data

            adopt_teacher_data(self, Path(self.teacher))


def _trainer_config(cls: type, method: str, kind: str, iterations: int) -> TrainerConfig:
    """nerfstudio's usual run settings around radistill's pipeline for ``kind``."""
    return cls(
        method_name=method,
        steps_per_eval_batch=500,
        steps_per_save=1000,
        max_num_iterations=iterations,
        mixed_precision=False,
        pipeline=RadistillPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=NerfstudioDataParserConfig(),
                                                 train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096),
            model=RadistillModelConfig(kind=kind, eval_num_rays_per_chunk=1 << 13),
        ),
        optimizers={},
        viewer=ViewerConfig(num_rays_per_chunk=1 << 13),
        vis="viewer",
    )


def _photo_method(kind: str) -> MethodSpecification:
    return MethodSpecification(config=_trainer_config(RadistillTrainerConfig, PHOTO_KINDS[kind], kind, 20000),
                               description=f"radistill's {kind} field trained from the photos (radistill's own "
                                           f"optimiser, occupancy grid and renderer)")


mlp = _photo_method("mlp")
hashgrid = _photo_method("hashgrid")
tensorf = _photo_method("tensorf-vm")
tensorf_cp = _photo_method("tensorf-cp")

distill = MethodSpecification(
    config=_trainer_config(RadistillDistillConfig, "radistill-distill", "gaussians", 3000),
    description="Distil a nerfstudio run (--teacher outputs/<exp>/<method>/<time>) into a radistill kind "
                "(--to gaussians|hashgrid|mlp|tensorf-vm|tensorf-cp); --to gaussians also writes a splatfacto run",
)
