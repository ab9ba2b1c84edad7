"""Scene readers. ``load_scene`` recognises the format from the files present."""

from __future__ import annotations

from pathlib import Path

from radistill.datasets.scene import SceneData, holdout_split
from radistill.errors import DatasetError

__all__ = ["SceneData", "holdout_split", "load_scene", "detect_format"]


def detect_format(path: str | Path) -> str:
    """``builtin``, ``blender``, ``llff`` or ``nerfstudio`` for a scene path."""
    if str(path) == "builtin":
        return "builtin"
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such scene folder (give a NeRF Blender, LLFF or nerfstudio folder, or 'builtin')")
    if p.is_file() and p.name == "transforms.json":
        return "nerfstudio"
    if (p / "transforms_train.json").exists():
        return "blender"
    if (p / "poses_bounds.npy").exists():
        return "llff"
    if (p / "transforms.json").exists():
        return "nerfstudio"
    raise DatasetError(f"{p}: not a known scene format (expected transforms_train.json, poses_bounds.npy "
                       f"or transforms.json)")


def load_scene(path: str | Path, downscale: float = 1.0, background: tuple[float, float, float] | None = None,
               **kwargs) -> SceneData:
    """Load a scene from disk, or the built-in procedural scene for ``"builtin"``.

    Example:
        >>> scene = load_scene("../shared/data/nerf_synthetic/lego", downscale=8)  # 100x100, white bg
    """
    if not downscale > 0:
        raise DatasetError(f"{path}: downscale must be positive, got {downscale}")
    fmt = detect_format(path)
    if fmt == "builtin":
        from radistill.datasets.procedural import make_builtin_scene

        return make_builtin_scene(**kwargs)
    if fmt == "blender":
        from radistill.datasets.blender import load_blender

        return load_blender(path, downscale, background or (1.0, 1.0, 1.0), **kwargs)
    if fmt == "llff":
        from radistill.datasets.llff import load_llff

        return load_llff(path, downscale=downscale, **kwargs)
    from radistill.datasets.nerfstudio import load_nerfstudio

    return load_nerfstudio(path, downscale, background or (0.0, 0.0, 0.0), **kwargs)
