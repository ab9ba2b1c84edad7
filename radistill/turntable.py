"""Camera paths for videos (a turntable around objects, a small spiral for forward-facing
captures) and GIF writing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radistill.cameras import Cameras, orbit_poses, with_poses


def turntable_cameras(train: Cameras, aabb: Tensor, frames: int = 36, elevation_deg: float = 30.0,
                      width: int | None = None) -> Cameras:
    """``frames`` cameras with the training intrinsics, circling the scene.

    Object captures get a horizontal orbit around the aabb centre at the training cameras' mean
    distance; forward-facing (NDC) captures get a circle of the mean camera's position in its
    image plane, keeping its orientation.
    """
    if train.ndc is not None:
        mean = train.c2w.mean(0)
        u, _, vh = torch.linalg.svd(mean[:3, :3])
        rot = u @ vh
        radius = float(train.centers.std(0)[:2].norm())
        angles = torch.arange(frames, dtype=torch.float32) * (2 * math.pi / frames)
        c2w = torch.eye(4).repeat(frames, 1, 1)
        c2w[:, :3, :3] = rot
        c2w[:, :3, 3] = mean[:3, 3] + radius * (torch.cos(angles)[:, None] * rot[:, 0] + torch.sin(angles)[:, None] * rot[:, 1])
    else:
        center = (aabb[0] + aabb[1]) / 2
        radius = float((train.centers - center).norm(dim=-1).mean())
        c2w = orbit_poses(frames, radius, elevation_deg, tuple(center.tolist()))
    cams = with_poses(train, c2w)
    if width is not None and width != train.width:
        cams = cams.scaled(width / train.width)
    return cams


def write_gif(path: str | Path, frames: list[Tensor], fps: int = 12) -> Path:
    """Write [H, W, 3] frames in [0, 1] as a looping GIF."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack([(f.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8) for f in frames])
    iio.imwrite(path, stack, extension=".gif", duration=int(1000 / fps), loop=0)
    return path
