"""What a run of radistill's nerfstudio methods leaves besides nerfstudio's own checkpoints.

- ``<kind>.safetensors`` in the run folder: the field for every radistill command (``render``,
  ``eval``, ``convert``, ``export``), with the cameras it was trained from.
- For a distillation into Gaussians, a splatfacto run beside it
  (``<output_dir>/<experiment>/splatfacto/<timestamp>/``): ``config.yml``,
  ``dataparser_transforms.json`` and ``nerfstudio_models/step-*.ckpt`` holding
  ``_model.gauss_params.*`` in nerfstudio's frame, so that nerfstudio's ``SplatfactoModel``
  loads it and ``ns-export gaussian-splat`` exports it.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch

from radistill.cameras import Cameras
from radistill.io.checkpoint import save_field


def run_cameras(datamanager: Any) -> Cameras | None:
    """The training cameras of a nerfstudio data manager as radistill cameras (nerfstudio's frame)."""
    dataset = getattr(datamanager, "train_dataset", None)
    if dataset is None:
        return None
    cams = dataset.cameras
    return Cameras(cams.camera_to_worlds.float().cpu(), cams.fx.reshape(-1).float().cpu(), cams.fy.reshape(-1).float().cpu(),
                   cams.cx.reshape(-1).float().cpu(), cams.cy.reshape(-1).float().cpu(),
                   int(cams.width.reshape(-1)[0]), int(cams.height.reshape(-1)[0]))


def write_outputs(model: Any, config: Any, step: int, datamanager: Any = None) -> list[Path]:
    """Write the field (and, for Gaussians distilled from a run, the splatfacto run); returns the paths."""
    base = Path(config.get_base_dir())
    field = model.field
    job = model.distillation
    if job is not None:
        meta = {**job.metadata, "teacher": str(model.config.teacher), "nerfstudio_run": str(base)}
    else:
        meta = {"background": model.background.tolist(), "nerfstudio_run": str(base), "frame": "nerfstudio"}
        cameras = run_cameras(datamanager)
        if cameras is not None:
            meta["cameras"] = cameras.to_dict()
    written = [save_field(base / f"{field.kind}.safetensors", field, extra_metadata=meta)]
    if field.kind == "gaussians" and job is not None:
        written.append(write_splatfacto_run(field, model.frame, config, step, Path(model.config.teacher)))
    return written


def write_splatfacto_run(field: Any, frame: Any, config: Any, step: int, teacher: Path) -> Path:
    """A splatfacto run of ``field``'s Gaussians on the teacher's scene; returns its ``config.yml``.
    ``frame`` is the teacher's move from the world into nerfstudio's frame (a ``Similarity``)."""
    from nerfstudio.configs.method_configs import method_configs

    from radistill.io.nerfstudio import splatfacto_state, transform_gaussians

    splat = copy.deepcopy(method_configs["splatfacto"])
    splat.output_dir, splat.experiment_name, splat.timestamp = config.output_dir, config.experiment_name, config.timestamp
    splat.machine = copy.deepcopy(config.machine)
    splat.pipeline.datamanager.dataparser = copy.deepcopy(config.pipeline.datamanager.dataparser)
    splat.pipeline.datamanager.data = config.pipeline.datamanager.data
    splat.pipeline.model.sh_degree = field.config.sh_degree
    with torch.no_grad():
        params = {"means": field.means.detach().cpu(), "quats": torch.nn.functional.normalize(field.quats.detach().cpu(), dim=-1),
                  "log_scales": field.log_scales.detach().cpu(), "logit_opacities": field.logit_opacities.detach().cpu(),
                  "sh": field.sh.detach().cpu()}
    params = transform_gaussians(params, frame)
    checkpoints = Path(splat.get_checkpoint_dir())
    checkpoints.mkdir(parents=True, exist_ok=True)
    for old in checkpoints.glob("step-*.ckpt"):
        old.unlink()
    torch.save({"step": step, "pipeline": splatfacto_state(params), "optimizers": {}, "schedulers": {}, "scalers": {}},
               checkpoints / f"step-{step:09d}.ckpt")
    shutil.copyfile(teacher / "dataparser_transforms.json", Path(splat.get_base_dir()) / "dataparser_transforms.json")
    splat.save_config()
    return Path(splat.get_base_dir()) / "config.yml"
