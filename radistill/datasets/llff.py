"""LLFF forward-facing captures: ``poses_bounds.npy`` plus ``images_N/``.

The poses are turned from LLFF's [down, right, back] axes into OpenGL's [right, up, back],
scaled so that the nearest bound sits at 1/0.75, recentred on the mean pose, and the rays are
rendered in NDC (near plane 1), as in the original NeRF code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from radistill.cameras import NDC, Cameras
from radistill.datasets.scene import SceneData, check_poses, composite, holdout_split, load_images
from radistill.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"}


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """The mean camera: mean centre, mean viewing axis, mean up.  # [4, 4]"""
    center = c2w[:, :3, 3].mean(0)
    back = _normalize(c2w[:, :3, 2].sum(0))
    up = c2w[:, :3, 1].sum(0)
    right = _normalize(np.cross(up, back))
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, center
    return m


def find_image_dir(root: Path, factor: int) -> Path:
    wanted = root / (f"images_{factor}" if factor > 1 else "images")
    if wanted.is_dir():
        return wanted
    present = sorted(p.name for p in root.glob("images*") if p.is_dir())
    raise DatasetError(f"{root}: no folder {wanted.name}/ (found: {', '.join(present) or 'none'}); "
                       f"pass the matching factor")


def load_llff(root: str | Path, factor: int = 8, downscale: float = 1.0, holdout_every: int = 8) -> SceneData:
    """Read an LLFF scene and prepare it for NDC rendering.

    Args:
        root: folder with ``poses_bounds.npy``.
        factor: which ``images_<factor>/`` folder to read (the poses describe full-size images).
        downscale: further area downscale of those images.
        holdout_every: every n-th image (``i % n == 0``) is the test split.
    """
    root = Path(root)
    pb_path = root / "poses_bounds.npy"
    if not pb_path.exists():
        raise DatasetError(f"{root}: no poses_bounds.npy (LLFF format expected)")
    try:
        arr = np.load(pb_path, allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"{pb_path}: cannot read ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 17:
        raise DatasetError(f"{pb_path}: expected an [N, 17] array (3x5 pose-hwf + near/far), got {list(arr.shape)}")
    poses = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = arr[:, 15:17].astype(np.float64)
    if not np.all(np.isfinite(bounds)) or bounds.min() <= 0:
        raise DatasetError(f"{pb_path}: near/far bounds must be finite and positive (min {bounds.min()!r})")
    hwf = poses[0, :, 4]
    if not np.all(np.isfinite(hwf)) or hwf.min() <= 0:
        raise DatasetError(f"{pb_path}: height/width/focal column must be positive, got {hwf.tolist()}")
    # [down, right, back] -> [right, up, back]
    c2w = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)
    check_poses(c2w, pb_path)
    scale = 1.0 / (bounds.min() * 0.75)
    c2w[:, :3, 3] *= scale
    full = np.concatenate([c2w, np.tile(np.array([[[0, 0, 0, 1.0]]]), (len(c2w), 1, 1))], axis=1)
    full = np.linalg.inv(average_pose(full)) @ full

    image_dir = find_image_dir(root, factor)
    paths = sorted(p for p in image_dir.iterdir() if p.suffix in IMAGE_SUFFIXES)
    if len(paths) != len(full):
        raise DatasetError(f"{image_dir}: {len(paths)} images but poses_bounds.npy has {len(full)} poses")
    rgba = load_images(paths, image_dir, downscale)
    n, h, w = rgba.shape[:3]
    focal = float(hwf[2]) * w / float(hwf[1])
    bg = np.zeros(3, dtype=np.float32)
    cams = Cameras(torch.from_numpy(full).float(), torch.tensor(focal), torch.tensor(focal),
                   torch.tensor(w / 2.0), torch.tensor(h / 2.0), w, h, ndc=NDC(focal=focal, width=w, height=h))
    train_idx, test_idx = holdout_split(n, holdout_every)
    aabb = torch.tensor([[-1.5, -1.5, -1.0], [1.5, 1.5, 1.0]])
    return SceneData(root.name, torch.from_numpy(composite(rgba, bg)), cams, train_idx, test_idx, aabb,
                     torch.from_numpy(bg), None, {}, f"i%{holdout_every}==0")
