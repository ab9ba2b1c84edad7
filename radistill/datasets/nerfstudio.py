"""nerfstudio's ``transforms.json`` (shared or per-frame intrinsics, OpenGL camera-to-world)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from radistill.cameras import Cameras
from radistill.datasets.blender import frame_image_path, frame_matrix, read_transforms
from radistill.datasets.scene import SceneData, check_poses, composite, holdout_split, load_images
from radistill.errors import DatasetError

INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def _number(value: object, what: str, source: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{source}: {what} must be a number, got {value!r}")
    return float(value)


def frame_intrinsic(frame: dict, meta: dict, key: str, source: Path, index: int) -> float:
    if key in frame:
        return _number(frame[key], f"frame {index} '{key}'", source)
    if key in meta:
        return _number(meta[key], f"'{key}'", source)
    if key == "fl_y":
        return frame_intrinsic(frame, meta, "fl_x", source, index)
    raise DatasetError(f"{source}: frame {index} has no '{key}' and the file has no shared '{key}'")


def load_nerfstudio(root: str | Path, downscale: float = 1.0, background: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    aabb_scale: float = 1.0) -> SceneData:
    """Read a nerfstudio capture.

    Poses are recentred on the mean camera position and scaled so that the farthest camera is
    at distance 1; the scene box is the cube ``[-aabb_scale, aabb_scale]^3`` in those units.
    Lens distortion is not modelled: a warning says so when the file has non-zero coefficients.
    """
    root = Path(root)
    source = root / "transforms.json" if root.is_dir() else root
    root = source.parent
    if not source.exists():
        raise DatasetError(f"{root}: no transforms.json (nerfstudio format expected)")
    meta = read_transforms(source)
    frames = meta["frames"]
    if not frames:
        raise DatasetError(f"{source}: 'frames' is empty")
    if any(_number(meta.get(k, 0.0), f"'{k}'", source) != 0.0 for k in DISTORTION):
        warnings.warn(f"{source}: lens distortion coefficients are ignored", stacklevel=2)
    paths = [frame_image_path(root, f, source, i) for i, f in enumerate(frames)]
    c2w = np.stack([frame_matrix(f, source, i) for i, f in enumerate(frames)])
    check_poses(c2w, source)
    intr = np.array([[frame_intrinsic(f, meta, k, source, i) for k in INTRINSICS] for i, f in enumerate(frames)])
    if len(np.unique(intr[:, 4:6], axis=0)) > 1:
        raise DatasetError(f"{source}: frames declare different image sizes (w, h); radistill needs one size")

    center = c2w[:, :3, 3].mean(0)
    scale = 1.0 / max(np.abs(c2w[:, :3, 3] - center).max(), 1e-8)
    c2w[:, :3, 3] = (c2w[:, :3, 3] - center) * scale

    rgba = load_images(paths, source, downscale)
    n, h, w = rgba.shape[:3]
    sx, sy = w / intr[0, 4], h / intr[0, 5]
    bg = np.asarray(background, dtype=np.float32)
    cams = Cameras(torch.from_numpy(c2w).float(), torch.tensor(intr[:, 0] * sx).float(), torch.tensor(intr[:, 1] * sy).float(),
                   torch.tensor(intr[:, 2] * sx).float(), torch.tensor(intr[:, 3] * sy).float(), w, h, near=0.02)
    train_idx, test_idx = holdout_split(n)
    aabb = torch.tensor([[-aabb_scale] * 3, [aabb_scale] * 3], dtype=torch.float32)
    return SceneData(root.name, torch.from_numpy(composite(rgba, bg)), cams, train_idx, test_idx, aabb,
                     torch.from_numpy(bg), torch.from_numpy(rgba[..., 3].copy()), {}, "i%8==0")
