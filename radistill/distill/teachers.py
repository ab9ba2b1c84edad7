"""Teachers: what the engine learns from.

A teacher answers questions about rays; an ``ImageTeacher`` (posed photos) can answer only
ray-level colour, and only for rays of its own cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from radistill.cameras import Cameras, Rays


@dataclass
class RayBatch:
    rays: Rays
    rgb: Tensor  # [R, 3] target colour


class ImageTeacher:
    """Posed photos as a teacher: random pixels of random training images.

    Example:
        >>> teacher = ImageTeacher.from_scene(scene)
        >>> batch = teacher.sample(4096, torch.Generator().manual_seed(0))
    """

    def __init__(self, images: Tensor, cameras: Cameras, background: Tensor) -> None:
        if images.shape[0] != len(cameras) or images.shape[1:3] != (cameras.height, cameras.width):
            raise ValueError(f"images {list(images.shape)} do not match {len(cameras)} cameras of "
                             f"{cameras.width}x{cameras.height}")
        self.images = images  # [N, H, W, 3]
        self.cameras = cameras
        self.background = background  # [3]

    @classmethod
    def from_scene(cls, scene, split: str = "train") -> "ImageTeacher":
        images, cameras = scene.split(split)
        return cls(images, cameras, scene.background)

    def sample(self, n: int, generator: torch.Generator | None = None) -> RayBatch:
        """``n`` rays through random pixel centres of random images, with their colours."""
        cam = torch.randint(len(self.cameras), (n,), generator=generator)
        py = torch.randint(self.cameras.height, (n,), generator=generator)
        px = torch.randint(self.cameras.width, (n,), generator=generator)
        rays = self.cameras.rays_for_pixels(cam, px.float() + 0.5, py.float() + 0.5)
        return RayBatch(rays, self.images[cam, py, px])
