"""A nerfstudio run as the teacher of ``ns-train radistill-distill``: its data and its frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radistill.errors import CheckpointError


def load_run_config(run: Path) -> Any:
    """The run's ``TrainerConfig``, read as nerfstudio's own tools read it (``ns-viewer``, ``ns-export``).

    It is the user's own run, written by ``ns-train``; radistill's converter, which may be handed
    files from anywhere, reads the same file with a safe loader instead (``radistill.io.nerfstudio``).
    """
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    from radistill.io.nerfstudio import is_nerfstudio_run

    if not is_nerfstudio_run(run):
        raise CheckpointError(f"--teacher {run}: not a nerfstudio run (a folder with config.yml and nerfstudio_models/)")
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    if not isinstance(config, TrainerConfig):
        raise CheckpointError(f"--teacher {run}: config.yml holds a {type(config).__name__}, not a nerfstudio TrainerConfig")
    return config


def adopt_teacher_data(config: Any, run: Path) -> None:
    """Train on the teacher's scene: its data parser (so the viewer shows its cameras and the
    evaluation uses its held-out photos), and its experiment name."""
    teacher = load_run_config(run)
    dataparser = teacher.pipeline.datamanager.dataparser
    data = getattr(teacher.pipeline.datamanager, "data", None) or getattr(dataparser, "data", None)
    if data is not None and not Path(data).exists():
        raise CheckpointError(f"--teacher {run}: its data {data} is no longer on disk; ns-train radistill-distill "
                              f"trains and evaluates on the teacher's scene. Without the data, use "
                              f"`radistill convert {run} --to KIND`, which needs no photos")
    config.pipeline.datamanager.dataparser = dataparser
    config.pipeline.datamanager.data = data
    if config.experiment_name is None:
        config.experiment_name = teacher.experiment_name
